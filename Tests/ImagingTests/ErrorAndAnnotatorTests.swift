import Foundation
import XCTest
@testable import Imaging

final class BadInputTests: XCTestCase {
    func load(_ name: String, loader: ImageLoader = ImageLoader()) -> ImageError? {
        do {
            _ = try loader.load(contentsOf: Fixtures.url("bad/\(name)"))
            return nil
        } catch let e as ImageError {
            XCTAssertTrue(e.description.contains(name), "\(e) should name the file")
            return e
        } catch {
            XCTFail("\(name): unexpected error \(error)")
            return nil
        }
    }

    func testTruncated() {
        for (name, format) in [("truncated.jpg", "JPEG"), ("truncated_header.jpg", "JPEG"),
                               ("truncated.png", "PNG"), ("truncated.webp", "WebP")] {
            let got = load(name); guard case let .truncated(_, f)? = got else { XCTFail("\(name): expected .truncated, got \(String(describing: got))"); continue }
            XCTAssertEqual(f, format)
        }
    }

    func testGarbageEmptyAndUnsupported() {
        guard case .unsupportedFormat? = load("garbage.jpg") else { return XCTFail("garbage: expected unsupportedFormat") }
        guard case .empty? = load("empty.png") else { return XCTFail("empty: expected .empty") }
        guard case let .unsupportedFormat(_, detected)? = load("image.gif") else { return XCTFail("gif") }
        XCTAssertTrue(detected.contains("GIF"))
    }

    func testZeroSize() {
        guard case .zeroSize? = load("zero_size.png") else { return XCTFail("zero_size.png") }
        guard case .zeroSize? = load("zero_size.jpg") else { return XCTFail("zero_size.jpg") }
    }

    func testDecompressionBombsAreRefusedFromTheHeader() {
        guard case let .tooLarge(_, w, h, limit)? = load("bomb.png") else { return XCTFail("bomb.png") }
        XCTAssertEqual([w, h, limit], [100000, 100000, 100_000_000])
        guard case .tooLarge? = load("bomb.jpg") else { return XCTFail("bomb.jpg") }
        // The limit is configurable.
        var small = ImageLoader()
        small.maxPixels = 1000
        do {
            _ = try small.load(contentsOf: Fixtures.url("inputs/png_rgb.png"))
            XCTFail("expected tooLarge")
        } catch let ImageError.tooLarge(_, w, h, limit) {
            XCTAssertEqual([w, h, limit], [300, 200, 1000])
        } catch { XCTFail("\(error)") }
    }

    func testCorruptCRC() {
        guard case .corrupt? = load("bad_crc.png") else { return XCTFail("bad_crc.png") }
    }

    func testMissingFile() {
        do {
            _ = try ImageLoader().load(contentsOf: URL(fileURLWithPath: "/nonexistent/x.png"))
            XCTFail()
        } catch let ImageError.unreadable(file, _) {
            XCTAssertEqual(file, "/nonexistent/x.png")
        } catch { XCTFail("\(error)") }
    }

    /// Every prefix of a small file must fail cleanly (never crash) or decode.
    func testEveryPrefixFailsCleanly() throws {
        for file in ["inputs/jpeg_exif6.jpg", "inputs/png_palette.png", "inputs/webp_lossless.webp"] {
            let data = try Data(contentsOf: Fixtures.url(file))
            for cut in stride(from: 0, to: data.count, by: max(1, data.count / 97)) {
                do { _ = try ImageLoader().decode(data.prefix(cut), name: file) } catch is ImageError {} catch {
                    XCTFail("\(file)[..<\(cut)]: \(error)")
                }
            }
        }
    }
}

final class AnnotatorTests: XCTestCase {
    func testDrawsBoxesLabelsAndMasksIntoARealPNG() throws {
        let base = RGBImage(width: 200, height: 120, fill: (40, 40, 40))
        let mask = AnnotationMask(box: AnnotationBox(label: "cat", x0: 100, y0: 40, x1: 180, y1: 110),
                                  width: 2, height: 2, values: [1, 0, 0, 1])
        let out = Annotator.draw(image: base, boxes: [("cat 0.9", 20, 30, 90, 100), ("dog", 100, 40, 180, 110)],
                                 masks: [mask])
        let png = try PNGEncoder.encode(out)
        XCTAssertEqual(Array(png.prefix(8)), [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A])
        let back = try ImageLoader().decode(png, name: "annotated.png")
        XCTAssertEqual(back, out)
        let c0 = Annotator.color(0)
        // Box outline at its edges, untouched background inside and outside.
        XCTAssertTrue(back.pixel(x: 20, y: 60) == (c0.0, c0.1, c0.2))
        XCTAssertTrue(back.pixel(x: 90, y: 60) == (c0.0, c0.1, c0.2))
        XCTAssertTrue(back.pixel(x: 55, y: 100) == (c0.0, c0.1, c0.2))
        XCTAssertTrue(back.pixel(x: 55, y: 60) == (40, 40, 40))
        XCTAssertTrue(back.pixel(x: 5, y: 115) == (40, 40, 40))
        // Label band above the first box, with ink of a different colour in it.
        var inkFound = false
        for x in 20..<60 { for y in 21..<30 where back.pixel(x: x, y: y) != (c0.0, c0.1, c0.2) { inkFound = true } }
        XCTAssertTrue(inkFound)
        XCTAssertTrue(back.pixel(x: 21, y: 21) == (c0.0, c0.1, c0.2))
        // Mask: top-left and bottom-right quadrants of box 1 tinted with colour 0, others not.
        let tl = back.pixel(x: 120, y: 60), tr = back.pixel(x: 160, y: 60), br = back.pixel(x: 160, y: 95)
        XCTAssertNotEqual(tl.r, 40)
        XCTAssertTrue(tr == (40, 40, 40))
        XCTAssertTrue(br == tl)
    }

    func testOutOfRangeBoxesDoNotTrap() throws {
        let base = RGBImage(width: 10, height: 10)
        let out = Annotator.draw(image: base, boxes: [("x", -50, -50, 500, 500), ("nan", .nan, 3, .infinity, 4)],
                                 masks: [AnnotationMask(box: AnnotationBox(label: "", x0: -5, y0: -5, x1: 20, y1: 20),
                                                        width: 1, height: 1, values: [1])])
        XCTAssertEqual(out.width, 10)
        XCTAssertNoThrow(try PNGEncoder.encode(out))
    }

    func testFontCoversLabelCharacters() {
        for ch in "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 .,:;-_()/%" {
            XCTAssertNotNil(BitmapFont.glyphs[ch], "missing glyph \(ch)")
        }
    }
}
