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
        // Every set pixel lies inside the box (bins / 1023 × size, truncated).
        let box = LocationConvention.bigVision.pixelBox(y0: 256, x0: 128, y1: 768, x1: 512, imageWidth: w, imageHeight: h)
        for y in 0..<h {
            for x in 0..<w where bits[y * w + x] != 0 {
                XCTAssertTrue(x >= box.x0 && x < box.x1 && y >= box.y0 && y < box.y1, "pixel (\(x),\(y)) outside \(box)")
            }
        }
        // The mask equals the decoder output placed by MaskPlacement directly.
        let direct = try MaskPlacement.binaryMask(try segmenter.decoder.decode(codes: m.object.segmentationCodes!),
                                                  box: box, imageWidth: w, imageHeight: h)
        XCTAssertEqual(direct, bits)
        // JSON carries COCO RLE and decodes back.
        let data = try JSONEncoder().encode(m)
        let back = try JSONDecoder().decode(SegmentedObject.self, from: data)
        XCTAssertEqual(try back.mask(), bits)
    }
}
