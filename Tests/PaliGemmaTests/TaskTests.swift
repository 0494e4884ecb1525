@testable import PaliGemma
import XCTest

final class TaskTests: XCTestCase {
    func testPrompts() {
        XCTAssertEqual(PaliGemmaTask.caption(language: "en").prompt, "caption en")
        XCTAssertEqual(PaliGemmaTask.answer(question: "what is this?", language: "de").prompt, "answer de what is this?")
        XCTAssertEqual(PaliGemmaTask.detect(objects: ["cat ", " dog"]).prompt, "detect cat ; dog")
        XCTAssertEqual(PaliGemmaTask.segment(object: "car").prompt, "segment car")
        XCTAssertEqual(PaliGemmaTask.ocr.prompt, "ocr")
    }

    func testDetectionMapsBinsToPixels() {
        let text = "<loc0000><loc0000><loc1023><loc1023> cat ; <loc0100><loc0200><loc0300><loc0400> dog"
        let objects = LocationParser.parse(text, imageWidth: 640, imageHeight: 480)
        XCTAssertEqual(objects.count, 2)
        XCTAssertEqual(objects[0].label, "cat")
        XCTAssertEqual(objects[0].x1, 640, accuracy: 1e-9)
        XCTAssertEqual(objects[0].y1, 480, accuracy: 1e-9)
        XCTAssertEqual(objects[1].label, "dog")
        XCTAssertEqual(objects[1].y0, 100.0 / 1023 * 480, accuracy: 1e-9)
        XCTAssertEqual(objects[1].x0, 200.0 / 1023 * 640, accuracy: 1e-9)
        XCTAssertEqual(objects[1].bins, [100, 200, 300, 400])
    }

    func testMalformedOutputIsSkippedNotFatal() {
        let junk = "hello <loc0001><loc0002> half ; <loc0010><loc0020><loc0030><loc0040> ok ; <loc12> <loc0050>"
            + "<loc0060><loc0070><loc0080><loc0090> extra loc; <seg001> <loc9999><loc0000><loc0000><loc0000>"
        let objects = LocationParser.parse(junk, imageWidth: 100, imageHeight: 100)
        // Two locations, a broken tag, five locations (the first four make a box, the fifth is
        // dropped with the text after it), and a box with an out-of-range bin.
        XCTAssertEqual(objects.map(\.label), ["ok", "", ""])
        guard objects.count == 3 else { return }
        XCTAssertEqual(objects[1].bins, [50, 60, 70, 80], "the first four of five locations")
        XCTAssertEqual(objects[2].y0, 0)
        XCTAssertEqual(objects[2].y1, 100, "bins past 1023 clamp to the image")
        XCTAssertTrue(LocationParser.parse("", imageWidth: 0, imageHeight: 0).isEmpty)
        XCTAssertTrue(LocationParser.parse("<loc<loc0001>>>", imageWidth: 10, imageHeight: 10).isEmpty)
    }

    func testSegmentationCodes() {
        let codes = (0..<16).map { String(format: "<seg%03d>", $0 * 7) }.joined()
        let text = "<loc0100><loc0100><loc0200><loc0200>\(codes) car ; <loc0100><loc0100><loc0200><loc0200><seg001> bad"
        let all = LocationParser.parse(text, imageWidth: 50, imageHeight: 50)
        XCTAssertEqual(all.count, 2)
        XCTAssertEqual(all[0].segmentationCodes, (0..<16).map { $0 * 7 })
        XCTAssertNil(all[1].segmentationCodes)
        let masked = LocationParser.parse(text, imageWidth: 50, imageHeight: 50, requireSegmentation: true)
        XCTAssertEqual(masked.map(\.label), ["car"])
    }
}
