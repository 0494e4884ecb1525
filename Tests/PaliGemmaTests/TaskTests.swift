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
            + "<loc0060><loc0070><loc0080><loc0090> extra loc; <seg001> <loc0000><loc0000><loc9999><loc0512>"
        let objects = LocationParser.parse(junk, imageWidth: 100, imageHeight: 100)
        // Two locations, a broken tag, five locations (the first four make a box, the fifth is
        // dropped with the text after it), and a box with an out-of-range bin.
        XCTAssertEqual(objects.map(\.label), ["ok", "", ""])
        guard objects.count == 3 else { return }
        XCTAssertEqual(objects[1].bins, [50, 60, 70, 80], "the first four of five locations")
        XCTAssertEqual(objects[2].y0, 0)
        XCTAssertEqual(objects[2].y1, 100, "bins past 1023 clamp to the image")
        XCTAssertEqual(objects[2].x1, 512.0 / 1023 * 100, accuracy: 1e-9)
        XCTAssertTrue(LocationParser.parse("", imageWidth: 0, imageHeight: 0).isEmpty)
        XCTAssertTrue(LocationParser.parse("<loc<loc0001>>>", imageWidth: 10, imageHeight: 10).isEmpty)
    }

    /// Google's demo parser allows spaces between the location and segmentation tokens.
    func testSpacesBetweenTokensAreAccepted() {
        let text = "<loc0100> <loc0200> <loc0300> <loc0400> cat ; <loc0010><loc0020> <loc0030><loc0040>"
            + String(repeating: " <seg005>", count: 16) + " dog"
        let objects = LocationParser.parse(text, imageWidth: 1023, imageHeight: 1023)
        XCTAssertEqual(objects.map(\.label), ["cat", "dog"])
        guard objects.count == 2 else { return }
        XCTAssertEqual(objects[0].bins, [100, 200, 300, 400])
        XCTAssertEqual([objects[0].x0, objects[0].y0, objects[0].x1, objects[0].y1], [200, 100, 400, 300])
        XCTAssertEqual(objects[1].segmentationCodes, Array(repeating: 5, count: 16))
        XCTAssertEqual(LocationParser.parse(text, imageWidth: 1023, imageHeight: 1023, requireSegmentation: true).map(\.label), ["dog"])
    }

    /// An inverted or empty box is invalid (big_vision's evaluator gives it no area), not
    /// swapped into a valid one; the task result says how many were left out.
    func testInvertedAndEmptyBoxesAreInvalid() {
        let text = "<loc0300><loc0400><loc0100><loc0200> upside ; <loc0100><loc0200><loc0100><loc0400> flat ; "
            + "<loc0100><loc0200><loc0300><loc0400> fine"
        let report = LocationParser.parseReport(text, imageWidth: 640, imageHeight: 480)
        XCTAssertEqual(report.objects.map(\.label), ["fine"])
        XCTAssertEqual(report.invalidBoxes, 2)
    }

    /// The task of a prompt is its first word, in any case, around any whitespace.
    func testTaskKindFromPrompt() {
        XCTAssertEqual(TaskKind(prompt: "detect cat ; dog"), .detect)
        XCTAssertEqual(TaskKind(prompt: "  Detect cat\n"), .detect)
        XCTAssertEqual(TaskKind(prompt: "SEGMENT cat"), .segment)
        XCTAssertEqual(TaskKind(prompt: "caption en"), .caption)
        XCTAssertEqual(TaskKind(prompt: "detector parts"), .other)
        XCTAssertEqual(TaskKind(prompt: "other"), .other)
        XCTAssertEqual(TaskKind(prompt: ""), .other)
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

    /// One result type for every front end: boxes parsed by task, non-finite log-probabilities
    /// written as null (so the line still parses) and noted, segment without a decoder noted.
    func testTaskResultJSON() throws {
        let timings = Generation.Timings(imageSeconds: 0.5, prefillSeconds: 0.25, decodeSeconds: 1, promptTokens: 12, generatedTokens: 3)
        let g = Generation(prompt: " Segment cat", text: "<loc0000><loc0000><loc1023><loc0511> cat", tokenIDs: [1, 2, 3],
                           tokenLogProbs: [-0.5, -.infinity, .nan], finishReason: .stopToken, timings: timings)
        let r = TaskResult(generation: g, width: 200, height: 100, id: "a7", image: "cat.png")
        XCTAssertEqual(r.task, .segment)
        XCTAssertEqual(r.objects?.count, 1)
        XCTAssertEqual(r.objects?.first?.x1 ?? 0, 511.0 / 1023 * 200, accuracy: 1e-9)
        XCTAssertNil(r.masks)
        let line = try r.jsonLine()
        let object = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
        let logProbs = try XCTUnwrap(object["token_logprobs"] as? [Any])
        XCTAssertEqual(logProbs.count, 3)
        XCTAssertEqual(logProbs[0] as? Double, -0.5)
        XCTAssertTrue(logProbs[1] is NSNull && logProbs[2] is NSNull, "\(logProbs)")
        XCTAssertEqual(object["task"] as? String, "segment")
        XCTAssertEqual(object["id"] as? String, "a7")
        XCTAssertEqual(object["image"] as? String, "cat.png")
        XCTAssertEqual(object["finish_reason"] as? String, "stop")
        let notes = try XCTUnwrap(object["notes"] as? [String])
        XCTAssertTrue(notes.contains { $0.contains("2 token log-probabilities are not finite") }, "\(notes)")
        XCTAssertTrue(notes.contains { $0.contains("no mask decoder") }, "\(notes)")
        // And it reads back.
        let back = try JSONDecoder().decode(TaskResult.self, from: Data(line.utf8))
        XCTAssertEqual(back.objects, r.objects)
        XCTAssertEqual(back.tokenLogProbs[0], -0.5)
        XCTAssertEqual(back.tokenLogProbs[1], -.infinity)

        let caption = TaskResult(generation: Generation(prompt: "caption en", text: "<loc0001> a cat", tokenIDs: [], tokenLogProbs: [],
                                                        finishReason: .maxTokens, timings: timings), width: 1, height: 1)
        XCTAssertNil(caption.objects, "captions are not parsed for boxes")
        XCTAssertNil(caption.notes)
    }

    /// Detection scoring matches each true box to at most one prediction (hand-worked IoUs).
    func testDetectionMatchingIsOneToOne() {
        let a = ([0.0, 0, 10, 10], "cat"), b = ([20.0, 0, 30, 10], "cat")
        // One prediction over two identical true boxes covers only one of them.
        XCTAssertEqual(Evaluator.matchBoxes(truth: [a, a], predicted: [([0, 0, 10, 10], "cat")]), [1, 0])
        // The better of two predictions wins; 90/110 is the shifted box's IoU with a.
        let shifted = ([1.0, 0, 11, 10], "cat")
        XCTAssertEqual(Evaluator.matchBoxes(truth: [a], predicted: [shifted, ([0, 0, 10, 10], "cat")]), [1])
        let ious = Evaluator.matchBoxes(truth: [a, b], predicted: [shifted, ([100, 100, 110, 110], "cat"), ([20, 0, 30, 10], "dog")])
        XCTAssertEqual(ious[0], 90.0 / 110, accuracy: 1e-12)
        XCTAssertEqual(ious[1], 0, "a dog box never matches a cat")
    }
}
