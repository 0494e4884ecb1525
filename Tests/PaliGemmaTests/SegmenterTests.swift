import Foundation
import MaskDecoder
@testable import PaliGemma
import XCTest

final class SegmenterTests: XCTestCase {
    func testSegmentTextBecomesMasksInsideTheirBoxes() throws {
        let segmenter = try Segmenter(vaeFile: fixturesDirectory("segmentation").appendingPathComponent("vae_d16.npz"))
        let codes = (0..<16).map { String(format: "<seg%03d>", ($0 * 37) % 128) }.joined()
        let text = "<loc0256><loc0128><loc0768><loc0512>\(codes) cat ; <loc0000><loc0000><loc0010><loc0010><seg001> junk"
        let (w, h) = (200, 100)
        let masks = segmenter.segment(text: text, imageWidth: w, imageHeight: h)
        XCTAssertEqual(masks.count, 1, "the object without 16 codes is skipped")
        let m = try XCTUnwrap(masks.first)
        XCTAssertEqual(m.object.label, "cat")
        let bits = try m.mask()
        XCTAssertEqual(bits.count, w * h)
        XCTAssertEqual(bits.reduce(0) { $0 + Int($1) }, m.area)
        // Every set pixel lies inside the box, worked by hand (bins / 1023 × size, truncated):
        // x 128/1023·200 = 25.02 → 25, 512/1023·200 = 100.10 → 100; y 256/1023·100 = 25.02 → 25,
        // 768/1023·100 = 75.07 → 75.
        var inside = 0
        for y in 0..<h {
            for x in 0..<w where bits[y * w + x] != 0 {
                XCTAssertTrue(x >= 25 && x < 100 && y >= 25 && y < 75, "pixel (\(x),\(y)) outside the box")
                inside += 1
            }
        }
        XCTAssertGreaterThan(inside, 0, "the mask is not empty")
        XCTAssertEqual(m.object.segmentationCodes, (0..<16).map { ($0 * 37) % 128 })
        // JSON carries COCO RLE and decodes back.
        let data = try JSONEncoder().encode(m)
        let back = try JSONDecoder().decode(SegmentedObject.self, from: data)
        XCTAssertEqual(try back.mask(), bits)
    }
}
