import Foundation
import XCTest
@testable import Imaging

final class DecodeAndResizeTests: XCTestCase {
    /// Decoded pixels (PIL: exif_transpose + convert("RGB")) and the transformers flattening.
    func testDecodedPixelsMatchPIL() throws {
        let drop = ImageLoader(alpha: .drop)
        let flat = ImageLoader(alpha: .compositeOnWhite)
        var report: [String] = []
        for c in try Fixtures.cases() {
            let url = Fixtures.url(c.file)
            let img = try drop.load(contentsOf: url)
            XCTAssertEqual(img.width, c.width, c.name)
            XCTAssertEqual(img.height, c.height, c.name)
            guard img.width == c.width, img.height == c.height else { continue }
            let n = c.width * c.height * 3
            if c.decoded_ref {
                let ref = try Fixtures.bytes(c.name, "decoded", count: n)
                let d = Diff(img.pixels, ref)
                report.append("\(c.name) decode: \(d)")
                if c.exact_decode {
                    XCTAssertEqual(d.worst, 0, "\(c.name): lossless decode differs from PIL (\(d))")
                } else {
                    // libjpeg-turbo 2.1 vs PIL's bundled 3.x, libwebp 1.2 vs 1.6: allow small drift.
                    XCTAssertLessThanOrEqual(d.worst, 4, "\(c.name): \(d)")
                    XCTAssertGreaterThan(d.fraction, 0.95, "\(c.name): \(d)")
                }
            }
            if c.alpha {
                let f = try flat.load(contentsOf: url)
                let ref = try Fixtures.bytes(c.name, "flat", count: n)
                let d = Diff(f.pixels, ref)
                report.append("\(c.name) flatten: \(d)")
                XCTAssertEqual(d.worst, 0, "\(c.name): alpha-over-white differs from transformers (\(d))")
            }
        }
        print(report.joined(separator: "\n"))
    }

    /// PIL's BICUBIC resize, fed with the decoded image (as the reference processor sees it).
    func testResizeMatchesPIL() throws {
        let loader = ImageLoader(alpha: .compositeOnWhite)  // the references were made from PIL images given to the processor
        var report: [String] = []
        for c in try Fixtures.cases() {
            let img = try loader.load(contentsOf: Fixtures.url(c.file))
            for s in c.resized {
                let ref = try Fixtures.bytes(c.name, "r\(s)", count: s * s * 3)
                let ours = ImagePreprocessor(size: s).resized(img)
                let d = Diff(ours.pixels, ref)
                report.append("\(c.name) r\(s): \(d)")
                // Exact decoders must give bit-identical resizes; JPEG/lossy WebP decoders may
                // differ slightly before resizing, which the resize then carries along.
                if c.exact_decode {
                    XCTAssertEqual(d.worst, 0, "\(c.name) \(s): \(d)")
                } else {
                    XCTAssertGreaterThanOrEqual(d.fraction, 0.99, "\(c.name) \(s): \(d)")
                    XCTAssertLessThanOrEqual(d.worst, 1, "\(c.name) \(s): \(d)")
                }
            }
            if c.alpha {
                let dropped = try ImageLoader(alpha: .drop).load(contentsOf: Fixtures.url(c.file))
                let ref = try Fixtures.bytes(c.name, "d224", count: 224 * 224 * 3)
                let d = Diff(ImagePreprocessor(size: 224).resized(dropped).pixels, ref)
                report.append("\(c.name) d224: \(d)")
                XCTAssertEqual(d.worst, 0, "\(c.name) d224: \(d)")
            }
        }
        print(report.joined(separator: "\n"))
    }

    /// The resampler alone, on exactly PIL's decoded input: must be bit-identical everywhere.
    func testResamplerIsBitIdenticalOnPILInput() throws {
        for c in try Fixtures.cases() where c.decoded_ref && !c.alpha {
            let n = c.width * c.height * 3
            let input = RGBImage(width: c.width, height: c.height,
                                 pixels: try Fixtures.bytes(c.name, "decoded", count: n))
            for s in c.resized {
                let ref = try Fixtures.bytes(c.name, "r\(s)", count: s * s * 3)
                let d = Diff(ImagePreprocessor(size: s).resized(input).pixels, ref)
                XCTAssertEqual(d.worst, 0, "\(c.name) \(s): \(d)")
            }
        }
    }

    /// Final tensors against SiglipImageProcessorPil's pixel_values.
    func testPixelValuesMatchTransformers() throws {
        let loader = ImageLoader(alpha: .compositeOnWhite)  // the references were made from PIL images given to the processor
        var checked = 0
        for c in try Fixtures.cases() {
            let img = try loader.load(contentsOf: Fixtures.url(c.file))
            for s in c.floats {
                let ref = try Fixtures.floats(c.name, "f\(s)", count: 3 * s * s)
                let ours = ImagePreprocessor(size: s).pixelValues(img)
                XCTAssertEqual(ours.count, ref.count)
                var worst: Float = 0, exact = 0
                for i in 0..<min(ours.count, ref.count) {
                    let d = abs(ours[i] - ref[i])
                    worst = max(worst, d)
                    if d == 0 { exact += 1 }
                }
                print("\(c.name) f\(s): \(exact)/\(ref.count) exact, worst \(worst)")
                XCTAssertLessThanOrEqual(worst, 1 / 127.5 + 1e-6, "\(c.name) \(s)")
                if c.exact_decode { XCTAssertEqual(worst, 0, "\(c.name) \(s)") }
                checked += 1
            }
        }
        XCTAssertGreaterThanOrEqual(checked, 4)
    }

    /// big_vision-style antialiased bilinear against torch's antialiased bilinear (same kernel).
    func testBilinearAntialiasOption() throws {
        let loader = ImageLoader(alpha: .compositeOnWhite)  // the references were made from PIL images given to the processor
        for c in try Fixtures.cases() {
            for s in c.aa {
                let img = try loader.load(contentsOf: Fixtures.url(c.file))
                let ref = try Fixtures.floats(c.name, "aa\(s)", count: 3 * s * s)
                let ours = ImagePreprocessor(size: s, filter: .bilinearAntialias).pixelValues(img)
                var worst: Float = 0
                for i in 0..<ref.count { worst = max(worst, abs(ours[i] - ref[i])) }
                print("\(c.name) aa\(s): worst \(worst)")
                // JPEG decoder drift (≤ a few levels, averaged by the filter) dominates.
                XCTAssertLessThanOrEqual(worst, 2 / 127.5, c.name)
            }
        }
    }

    func testValueRangeAndLayout() {
        var img = RGBImage(width: 4, height: 2, fill: (255, 0, 128))
        img.pixels[0] = 0
        let pv = ImagePreprocessor(size: 4).pixelValues(RGBImage(width: 4, height: 4, fill: (255, 0, 128)))
        XCTAssertEqual(pv.count, 48)
        XCTAssertEqual(pv[0], 1)
        XCTAssertEqual(pv[16], -1)
        XCTAssertEqual(pv[32], ImagePreprocessor.byteToValue[128])
        XCTAssertEqual(ImagePreprocessor(size: 3).resized(img).width, 3)
    }
}
