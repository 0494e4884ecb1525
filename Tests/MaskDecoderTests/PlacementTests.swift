import Foundation
import XCTest
@testable import MaskDecoder

final class PlacementTests: XCTestCase {
    struct Case: Decodable {
        var width: Int, height: Int, bins: [Int]?, box: [Int], source: Int, area: Int, rle: [Int]
    }

    func testPlacementMatchesPIL() throws {
        let cases = try JSONDecoder().decode([Case].self, from: Data(contentsOf: fixture("placement.json")))
        let placement = try NpzArchive(url: fixture("placement.npz"))
        let masks = try NpzArchive(url: fixture("expected_d16.npz")).array("masks").floats()
        let ramp = try placement.array("ramp").floats()
        XCTAssertEqual(cases.count, 7)
        for (i, c) in cases.enumerated() {
            let mask64 = c.source < 0 ? ramp : Array(masks[(c.source * 4096)..<(c.source * 4096 + 4096)])
            let box: PixelBox
            if let b = c.bins {
                box = LocationConvention.bigVision.pixelBox(y0: b[0], x0: b[1], y1: b[2], x1: b[3],
                                                            imageWidth: c.width, imageHeight: c.height)
            } else {
                box = PixelBox(x0: c.box[0], y0: c.box[1], x1: c.box[2], y1: c.box[3])
            }
            XCTAssertEqual([box.x0, box.y0, box.x1, box.y1], c.box, "case \(i)")
            let binary = try MaskPlacement.binaryMask(mask64, box: box, imageWidth: c.width, imageHeight: c.height)
            XCTAssertEqual(binary.count, c.width * c.height)
            XCTAssertEqual(binary.reduce(0) { $0 + Int($1) }, c.area, "case \(i) area")
            XCTAssertEqual(try RunLengthEncoding.cocoCounts(binary, width: c.width, height: c.height), c.rle, "case \(i) rle")
            XCTAssertEqual(try RunLengthEncoding.decodeCOCO(c.rle, width: c.width, height: c.height), binary)

            // Soft mask: the visible box region matches PIL; everything else is 0.
            let soft = try MaskPlacement.softMask(mask64, box: box, imageWidth: c.width, imageHeight: c.height)
            let ref = try placement.array("soft_\(i)")
            let refValues = ref.floats()
            let vx0 = max(box.x0, 0), vy0 = max(box.y0, 0)
            let vw = box.isEmpty ? 0 : max(min(box.x1, c.width) - vx0, 0)
            let vh = box.isEmpty ? 0 : max(min(box.y1, c.height) - vy0, 0)
            XCTAssertEqual(ref.count, vw * vh, "case \(i) visible size")
            var worst: Float = 0, outside: Float = 0
            for y in 0..<c.height {
                for x in 0..<c.width {
                    let v = soft[y * c.width + x]
                    if x >= vx0, x < vx0 + vw, y >= vy0, y < vy0 + vh {
                        worst = max(worst, abs(v - refValues[(y - vy0) * vw + (x - vx0)]))
                    } else {
                        outside = max(outside, abs(v))
                    }
                }
            }
            XCTAssertLessThanOrEqual(worst, 1e-6, "case \(i) soft")
            XCTAssertEqual(outside, 0, "case \(i) outside the box")
        }
    }

    func testLocationConventions() {
        let bv = LocationConvention.bigVision.pixelBox(y0: 0, x0: 512, y1: 1023, x1: 1023, imageWidth: 640, imageHeight: 480)
        XCTAssertEqual(bv, PixelBox(x0: 320, y0: 0, x1: 640, y1: 480))  // 512/1023×640 = 320.3
        let demo = LocationConvention.googleDemo.pixelBox(y0: 0, x0: 512, y1: 1023, x1: 1023, imageWidth: 640, imageHeight: 480)
        XCTAssertEqual(demo, PixelBox(x0: 320, y0: 0, x1: 639, y1: 480))  // 1023/1024×640 = 639.4; ×480 = 479.5 → 480
        // Out-of-range bins are clamped rather than trusted.
        let clamped = LocationConvention.bigVision.pixelBox(y0: -5, x0: 99_999, y1: 2000, x1: Int.max, imageWidth: 10, imageHeight: 10)
        XCTAssertEqual(clamped, PixelBox(x0: 10, y0: 0, x1: 10, y1: 10))
        XCTAssertTrue(clamped.isEmpty)
    }

    func testDegenerateBoxesAndInputs() throws {
        let m = [Float](repeating: 1, count: 4096)
        // Inverted, empty, NaN, infinite and enormous boxes: no trap, sensible results.
        XCTAssertEqual(try MaskPlacement.binaryMask(m, box: (x0: 50, y0: 10, x1: 20, y1: 40), imageWidth: 64, imageHeight: 48),
                       [UInt8](repeating: 0, count: 64 * 48))
        XCTAssertEqual(try MaskPlacement.binaryMask(m, box: (x0: .nan, y0: 0, x1: 10, y1: 10), imageWidth: 8, imageHeight: 8),
                       [UInt8](repeating: 0, count: 64))
        XCTAssertEqual(try MaskPlacement.binaryMask(m, box: (x0: -.infinity, y0: -1e300, x1: .infinity, y1: 1e300), imageWidth: 8, imageHeight: 8),
                       [UInt8](repeating: 1, count: 64))
        XCTAssertEqual(try MaskPlacement.binaryMask(m, box: (x0: 100, y0: 100, x1: 200, y1: 200), imageWidth: 8, imageHeight: 8),
                       [UInt8](repeating: 0, count: 64))  // entirely outside
        XCTAssertEqual(try MaskPlacement.softMask(m, box: (x0: 2.7, y0: 2.2, x1: 4.9, y1: 3.99), imageWidth: 6, imageHeight: 5).reduce(0, +), 2)
        XCTAssertEqual(try MaskPlacement.binaryMask(m, box: PixelBox(x0: 0, y0: 0, x1: 3, y1: 3), imageWidth: 0, imageHeight: 0), [])
        assertThrows(try MaskPlacement.binaryMask([1, 2, 3], box: PixelBox(x0: 0, y0: 0, x1: 3, y1: 3), imageWidth: 4, imageHeight: 4)) {
            $0 as? MaskDecoderError == .wrongMaskSize(expected: 4096, actual: 3)
        }
        assertThrows(try MaskPlacement.softMask(m, box: PixelBox(x0: 0, y0: 0, x1: 3, y1: 3), imageWidth: -4, imageHeight: 4)) {
            $0 as? MaskDecoderError == .invalidImageSize(width: -4, height: 4)
        }
        assertThrows(try MaskPlacement.softMask(m, box: PixelBox(x0: 0, y0: 0, x1: 3, y1: 3), imageWidth: Int.max, imageHeight: 4)) {
            $0 as? MaskDecoderError == .invalidImageSize(width: Int.max, height: 4)
        }
    }

    func testThreshold() throws {
        let ramp = (0..<4096).map { Float($0 % 64) / 63 * 2 - 1 }  // −1 … 1 left to right
        let box = PixelBox(x0: 0, y0: 0, x1: 64, y1: 64)
        let at0 = try MaskPlacement.binaryMask(ramp, box: box, imageWidth: 64, imageHeight: 64)
        let atHalf = try MaskPlacement.binaryMask(ramp, box: box, imageWidth: 64, imageHeight: 64, threshold: 0.5)
        XCTAssertEqual(at0.reduce(0) { $0 + Int($1) }, 32 * 64)
        XCTAssertEqual(atHalf.reduce(0) { $0 + Int($1) }, 16 * 64)
        XCTAssertEqual(VQVAEMaskDecoder.probabilities([-3, -1, 0, 0.5, 1, 3]), [0, 0, 0.5, 0.75, 1, 1])
    }
}

final class RunLengthTests: XCTestCase {
    func testSmallKnownMasks() throws {
        // 3 wide × 2 high, row-major:
        //   0 1 1
        //   0 0 1
        let m: [UInt8] = [0, 1, 1, 0, 0, 1]
        XCTAssertEqual(try RunLengthEncoding.cocoCounts(m, width: 3, height: 2), [2, 1, 1, 2])
        XCTAssertEqual(try RunLengthEncoding.rowMajorCounts(m, width: 3, height: 2), [1, 2, 2, 1])
        XCTAssertEqual(try RunLengthEncoding.cocoCounts([1, 1], width: 2, height: 1), [0, 2])
        XCTAssertEqual(try RunLengthEncoding.cocoCounts([], width: 0, height: 0), [0])
        XCTAssertEqual(try RunLengthEncoding.decodeCOCO([0], width: 0, height: 0), [])
    }

    func testRoundTrips() throws {
        var state: UInt64 = 0x9E37_79B9_7F4A_7C15
        func next() -> UInt64 { state = state &* 6364136223846793005 &+ 1442695040888963407; return state >> 33 }
        for (w, h) in [(1, 1), (7, 5), (40, 33), (128, 3)] {
            let m = (0..<(w * h)).map { _ in UInt8(next() % 3 == 0 ? 1 : 0) }
            let coco = try RunLengthEncoding.cocoCounts(m, width: w, height: h)
            XCTAssertEqual(coco.reduce(0, +), w * h)
            XCTAssertEqual(try RunLengthEncoding.decodeCOCO(coco, width: w, height: h), m)
            let rows = try RunLengthEncoding.rowMajorCounts(m, width: w, height: h)
            XCTAssertEqual(try RunLengthEncoding.decodeRowMajor(rows, width: w, height: h), m)
            let s = RunLengthEncoding.cocoString(coco)
            XCTAssertEqual(try RunLengthEncoding.cocoCounts(fromString: s), coco)
        }
    }

    func testCocoStringKnownValue() throws {
        // pycocotools: encode of a 4×4 mask with a 2×2 square at rows 1–2, columns 1–2 → counts [5, 2, 2, 2, 5].
        var m = [UInt8](repeating: 0, count: 16)
        for y in 1...2 { for x in 1...2 { m[y * 4 + x] = 1 } }
        let counts = try RunLengthEncoding.cocoCounts(m, width: 4, height: 4)
        XCTAssertEqual(counts, [5, 2, 2, 2, 5])
        XCTAssertEqual(RunLengthEncoding.cocoString(counts), "52203")
    }

    func testBadRuns() {
        assertThrows(try RunLengthEncoding.decodeCOCO([3, 5], width: 2, height: 2)) {
            if case .invalidRunLengths? = $0 as? MaskDecoderError { return true } else { return false }
        }
        assertThrows(try RunLengthEncoding.decodeCOCO([1, -1, 4], width: 2, height: 2)) {
            if case .invalidRunLengths? = $0 as? MaskDecoderError { return true } else { return false }
        }
        assertThrows(try RunLengthEncoding.decodeRowMajor([1, 1], width: 2, height: 2)) {
            if case .invalidRunLengths? = $0 as? MaskDecoderError { return true } else { return false }
        }
        assertThrows(try RunLengthEncoding.cocoCounts([0, 1, 0], width: 2, height: 2)) {
            if case .wrongMaskSize? = $0 as? MaskDecoderError { return true } else { return false }
        }
        assertThrows(try RunLengthEncoding.cocoCounts(fromString: "\u{01}")) {
            if case .invalidRunLengths? = $0 as? MaskDecoderError { return true } else { return false }
        }
    }
}
