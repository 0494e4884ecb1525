import Foundation
@testable import PaliGemma
import XCTest

/// The bundled demo model (Models/demo) on its held-out set (Tests/Fixtures/demo, written by
/// tools/demo/heldout.py with transformers' greedy outputs and the Python evaluator's scores).
final class DemoModelTests: XCTestCase {
    let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    func testSwiftMatchesTransformersAndThePythonEvaluator() throws {
        let model = root.appendingPathComponent("Models/demo")
        let set = fixturesDirectory("demo")
        let pipeline = try PaliGemmaPipeline(directory: model)
        let segmenter = try Segmenter(vaeFile: model.appendingPathComponent("vae-oid.npz"))

        // The scorer alone: transformers' recorded answers scored here give the Python
        // evaluator's figures (summary.json), task by task, masks included: both place masks as
        // big_vision's evaluator does (truncated box edges, PIL BILINEAR on the float logits, > 0).
        let recorded = try Evaluator.run(pipeline: pipeline, segmenter: segmenter, directory: set, answers: .transformers)
        struct Entry: Decodable { let value: Double; let n: Int }
        let summary = try JSONDecoder().decode([String: Entry].self,
                                               from: Data(contentsOf: set.appendingPathComponent("summary.json")))
        XCTAssertEqual(Set(recorded.metrics.keys), Set(summary.keys))
        for (name, expected) in summary {
            let ours = try XCTUnwrap(recorded.metrics[name], "metric \(name) missing")
            XCTAssertEqual(ours.count, expected.n, name)
            XCTAssertEqual(ours.value, expected.value, accuracy: 1e-9, name)
        }

        // Generation: greedy outputs equal transformers' (float32 compute from the bf16 weights)
        // on the same inputs. One prompt in 258 may flip on a near-tie between two logits (the
        // unoptimised test build rounds its sums differently from the release build, and
        // scene033's "detect circle" flips there), and only a flipped prompt may score
        // differently from transformers' answer.
        let report = try Evaluator.run(pipeline: pipeline, segmenter: segmenter, directory: set)
        print("[demo] \(report.prompts) prompts, identical to transformers \(report.identicalToReference.value)")
        for (k, m) in report.metrics.sorted(by: { $0.key < $1.key }) { print("[demo] \(k): \(m.value) (n=\(m.count))") }
        XCTAssertEqual(report.identicalToReference.count, report.prompts)
        XCTAssertGreaterThanOrEqual(report.identicalToReference.value, 0.99)
        XCTAssertEqual(report.results.count, recorded.results.count)
        var flippedCounts: [String: Int] = [:]
        for (ours, theirs) in zip(report.results, recorded.results) {
            XCTAssertEqual(ours.prompt, theirs.prompt)
            if ours.identicalToTransformers == true {
                XCTAssertEqual(ours.answer, theirs.answer, "\(ours.image) \(ours.prompt)")
                XCTAssertEqual(ours.scores, theirs.scores, "\(ours.image) \(ours.prompt)")
            } else {
                print("[demo] flipped: \(ours.image) \"\(ours.prompt)\": \"\(ours.answer)\" vs \"\(theirs.answer)\"")
                for (name, values) in theirs.scores { flippedCounts[name, default: 0] += values.count }
            }
        }
        // Every score lies in [0, 1], so each flipped value moves its mean by at most 1/n.
        for (name, theirs) in recorded.metrics {
            let ours = try XCTUnwrap(report.metrics[name], "metric \(name) missing")
            XCTAssertEqual(ours.count, theirs.count, name)
            let bound = Double(flippedCounts[name] ?? 0) / Double(max(1, theirs.count)) + 1e-12
            XCTAssertEqual(ours.value, theirs.value, accuracy: bound, name)
        }

        // The demo model's targets (issue 6), on the Swift runtime's own answers.
        let targets: [String: Double] = [
            "caption en exact": 0.80, "caption de exact": 0.80, "caption fr exact": 0.80,
            "VQA accuracy": 0.85, "detect recall@0.5": 0.90, "detect mean IoU": 0.70,
            "OCR exact": 0.80, "segment mean mask IoU": 0.60,
        ]
        for (name, target) in targets {
            let ours = try XCTUnwrap(report.metrics[name], "metric \(name) missing")
            XCTAssertGreaterThanOrEqual(ours.value, target, name)
        }
    }

    /// The README's library example, as written there, on the demo model.
    func testReadmeLibraryExample() async throws {
        let pipeline = try PaliGemmaPipeline(directory: root.appendingPathComponent("Models/demo"))
        let image = try pipeline.encode(image: try pipeline.loadImage(root.appendingPathComponent("Models/demo/example.png")))
        let caption = try pipeline.perform("caption en", on: image)
        XCTAssertEqual(caption.text, "a red circle, an orange square and a yellow diamond with the word \"lemon\"")
        XCTAssertEqual(caption.tokenLogProbs.count, caption.tokenIDs.count)

        let found = try pipeline.perform(PaliGemmaTask.detect(objects: ["square"]).prompt, on: image)
        let square = try XCTUnwrap(found.objects?.first)
        // The README's detect output: square  x0=178 y0=174 x1=248 y1=244.
        XCTAssertEqual(square.label, "square")
        XCTAssertEqual([square.x0, square.y0, square.x1, square.y1].map { $0.rounded() }, [178, 174, 248, 244])

        var streamed = ""
        for try await event in pipeline.stream(prompt: "caption en", image: image, options: GenerationOptions(maxNewTokens: 64)) {
            if case let .token(_, text) = event { streamed += text }
        }
        XCTAssertEqual(streamed, caption.text)
    }
}
