import Foundation
import Kernels
@testable import PaliGemma
import XCTest

/// Compares the Swift forward pass with what transformers 5.24 computed on the same random-weight
/// checkpoints (tools/reference/fixtures_model.py).
final class ModelParityTests: XCTestCase {
    struct Errors: CustomStringConvertible {
        var vision: Float = 0, projector: Float = 0, prefill: Float = 0, greedy: Float = 0, suffix: Float = 0
        var worst: Float { [vision, projector, prefill, greedy, suffix].max()! }
        var description: String {
            String(format: "vision %.2e projector %.2e prefill %.2e greedy %.2e suffix %.2e",
                   vision, projector, prefill, greedy, suffix)
        }
    }

    /// Runs every recorded comparison for one fixture and returns the relative errors.
    func check(_ name: String, tolerance: Float, backend: ComputeBackend = FastBackend()) throws -> Errors {
        let dir = fixturesDirectory("model").appendingPathComponent(name)
        let model = try PaliGemmaModel(directory: dir, backend: backend)
        let ref = try ModelReference(name)
        var e = Errors()
        let pixels = try ref.floats("pixel_values")

        let vision = try model.visionFeatures(pixels: pixels)
        XCTAssertEqual([vision.rows, vision.columns], try ref.shape("vision_output"))
        e.vision = relativeError(vision.values, try ref.floats("vision_output"))

        let image = try model.encodeImage(pixels: pixels)
        e.projector = relativeError(image.rows.values, try ref.floats("projector_output"))

        let ids = try ref.ints("input_ids"), types = try ref.ints("token_type_ids")
        let session = model.makeSession(maxTokens: ids.count + 32)
        let logits = try session.prefill(prompt: ids, tokenTypes: types, image: image, logits: .all)
        e.prefill = relativeError(logits.values, try ref.floats("prefill_logits"))

        let expectedIDs = try ref.ints("greedy_ids")
        let result = try session.generate(prompt: ids, tokenTypes: types, image: image,
                                          options: GenerationOptions(maxNewTokens: expectedIDs.count),
                                          stopTokens: Set(model.config.text.eosTokenIDs), keepLogits: true)
        XCTAssertEqual(result.tokens, expectedIDs, "\(name): greedy ids differ from transformers")
        e.greedy = relativeError(result.logits.flatMap { $0 }, try ref.floats("greedy_logits"))

        session.reset()
        let suffixLogits = try session.prefill(prompt: try ref.ints("suffix_input_ids"),
                                               tokenTypes: try ref.ints("suffix_token_type_ids"),
                                               image: image, logits: .all)
        e.suffix = relativeError(suffixLogits.values, try ref.floats("suffix_logits"))

        print("[parity] \(name) (\(backend.name)): \(e)")
        XCTAssertLessThanOrEqual(e.worst, tolerance, "\(name): \(e)")
        return e
    }

    func testTiny16ImageTokensHubNames() throws { _ = try check("tiny16", tolerance: 1e-4) }
    func testGQA2SlidingWindowNoFinalSoftcapSharded() throws { _ = try check("gqa2_window", tolerance: 1e-4) }
    func testGQA4With256ImageTokens() throws { _ = try check("gqa4_256", tolerance: 1e-4) }
    func testBFloat16Checkpoint() throws { _ = try check("bf16", tolerance: 2e-2) }
    func testPaliGemma1GemmaDecoder() throws { _ = try check("gemma1", tolerance: 1e-4) }

    /// The plain reference kernels reach the same numbers (they are the oracle for the fast ones).
    func testReferenceBackendMatchesTransformers() throws {
        _ = try check("tiny16", tolerance: 1e-4, backend: ReferenceBackend())
    }
}
