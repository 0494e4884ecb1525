import Foundation
import Kernels
import SafeTensors
import XCTest
@testable import PaliGemma

/// LoRA training against transformers 5.24 + PEFT 0.21.2 in float32 (Tests/Fixtures/lora): loss,
/// every gradient, one clipped AdamW step, and greedy ids with the trained adapter.
final class LoRATests: XCTestCase {
    struct Reference: Decodable {
        let loss: Float
        let lr: Float
        let weight_decay: Float
        let max_norm: Float
        let grad_norm: Float
        let greedy_ids_base: [Int]
        let greedy_ids_adapter: [Int]
        let greedy_max_new_tokens: Int
        let base_model_dir: String?
    }

    func baseName(_ name: String) throws -> String {
        try JSONDecoder().decode(Reference.self, from: Data(contentsOf: fixture(name).appendingPathComponent("reference.json"))).base_model_dir ?? name
    }

    func fixture(_ name: String) -> URL { fixturesDirectory("lora").appendingPathComponent(name) }

    func load(_ name: String) throws -> (trainer: LoRATrainer, sequences: [PreparedSequence], reference: Reference, grads: SafeTensorsFile) {
        let dir = fixture(name)
        let reference = try JSONDecoder().decode(Reference.self, from: Data(contentsOf: dir.appendingPathComponent("reference.json")))
        let base = fixturesDirectory("model").appendingPathComponent(try baseName(name))
        let config = try PaliGemmaConfig.load(from: base.appendingPathComponent("config.json"))
        let adapter = try LoRAAdapter.load(from: dir.appendingPathComponent("adapter_initial"), text: config.text, vision: config.vision)
        var options = FinetuneOptions()
        options.lora = adapter.config
        options.learningRate = reference.lr
        options.weightDecay = reference.weight_decay
        options.maxGradNorm = reference.max_norm
        let model = try PaliGemmaModel(directory: base, backend: LoRATrainer.backend(threads: nil), adapter: adapter)
        let trainer = try LoRATrainer(model: model, pipeline: nil, options: options)
        let examples = try SafeTensorsFile(path: dir.appendingPathComponent("examples.safetensors").path)
        let sequences = try (0..<2).map { i -> PreparedSequence in
            let ids = try XCTUnwrap(examples.tensors["ids_\(i)"]).integers()
            let types = try XCTUnwrap(examples.tensors["types_\(i)"]).integers()
            let pixels = try XCTUnwrap(examples.tensors["pixels_\(i)"]).floats()
            let prefix = types.firstIndex(of: 1)!
            return trainer.vision == nil
                ? PreparedSequence(ids: ids, prefixLength: prefix, image: try trainer.model.encodeImage(pixels: pixels))
                : PreparedSequence(ids: ids, prefixLength: prefix, pixels: pixels)
        }
        let grads = try SafeTensorsFile(path: dir.appendingPathComponent("grads.safetensors").path)
        return (trainer, sequences, reference, grads)
    }

    func checkGradientsAndStep(_ name: String) throws {
        let (trainer, sequences, reference, grads) = try load(name)
        let (loss, tokens) = try trainer.lossAndGradients(sequences)
        XCTAssertEqual(tokens, 12)
        XCTAssertEqual(loss, reference.loss, accuracy: 1e-4 * reference.loss, "\(name) loss")
        var worst: Float = 0
        for (l, t, _) in trainer.adapter.orderedPairs {
            let g = trainer.gradients.pairs[l][t]!
            for (m, ours) in [("A", g.a), ("B", g.b)] {
                let key = LoRAAdapter.key(layer: l, target: t, matrix: m)
                let expected = try XCTUnwrap(grads.tensors[key], key).floats()
                let err = relativeError(ours.values, expected)
                worst = max(worst, err)
                XCTAssertLessThan(err, 1e-4, "\(name) gradient \(key)")
            }
        }
        for (l, t, _) in trainer.adapter.orderedVisionPairs {
            let g = trainer.gradients.visionPairs[l][t]!
            for (m, ours) in [("A", g.a), ("B", g.b)] {
                let key = LoRAAdapter.visionKey(layer: l, target: t, matrix: m)
                let err = relativeError(ours.values, try XCTUnwrap(grads.tensors[key], key).floats())
                worst = max(worst, err)
                XCTAssertLessThan(err, 1e-4, "\(name) gradient \(key)")
            }
        }
        if let rows = trainer.gradients.tokens {
            let expected = try XCTUnwrap(grads.tensors[LoRAAdapter.tokensKey]).floats()
            let err = relativeError(rows.values, expected)
            worst = max(worst, err)
            XCTAssertLessThan(err, 1e-4, "\(name) token rows' gradient")
        }
        let norm = trainer.applyGradients(learningRate: reference.lr)
        XCTAssertEqual(norm, reference.grad_norm, accuracy: 1e-4 * reference.grad_norm)
        let step1 = try LoRAAdapter.load(from: fixture(name).appendingPathComponent("adapter_step1"),
                                         text: trainer.model.config.text, vision: trainer.model.config.vision)
        // The first AdamW step moves each weight by lr·g/(|g| + eps): where the clipped gradient is
        // within 100·eps of zero, that quotient amplifies float32 rounding of g a million-fold, so
        // those few weights are only held to the step's size.
        let clip = min(1, reference.max_norm / (reference.grad_norm + 1e-6))
        var stepError: Float = 0, illConditioned = 0
        for (l, t, pair) in trainer.adapter.orderedPairs {
            let expected = step1.pairs[l][t]!
            for (m, ours, theirs) in [("A", pair.a, expected.a), ("B", pair.b, expected.b)] {
                let g = try XCTUnwrap(grads.tensors[LoRAAdapter.key(layer: l, target: t, matrix: m)]).floats()
                for (i, (x, y)) in zip(ours.values, theirs.values).enumerated() {
                    if abs(g[i] * clip) < 100 * 1e-8 {
                        illConditioned += 1
                        XCTAssertLessThan(abs(x - y), 2 * reference.lr)
                    } else {
                        stepError = max(stepError, abs(x - y))
                    }
                }
            }
        }
        for (l, t, pair) in trainer.adapter.orderedVisionPairs {
            let expected = step1.visionPairs[l][t]!
            for (m, ours, theirs) in [("A", pair.a, expected.a), ("B", pair.b, expected.b)] {
                let g = try XCTUnwrap(grads.tensors[LoRAAdapter.visionKey(layer: l, target: t, matrix: m)]).floats()
                for (i, (x, y)) in zip(ours.values, theirs.values).enumerated() {
                    if abs(g[i] * clip) < 100 * 1e-8 { illConditioned += 1; XCTAssertLessThan(abs(x - y), 2 * reference.lr) } else { stepError = max(stepError, abs(x - y)) }
                }
            }
        }
        if let rows = trainer.adapter.tokens {
            let g = try XCTUnwrap(grads.tensors[LoRAAdapter.tokensKey]).floats()
            for (i, (x, y)) in zip(rows.rows.values, try XCTUnwrap(step1.tokens).rows.values).enumerated() {
                if abs(g[i] * clip) < 100 * 1e-8 { illConditioned += 1; XCTAssertLessThan(abs(x - y), 2 * reference.lr) } else { stepError = max(stepError, abs(x - y)) }
            }
        }
        XCTAssertLessThan(illConditioned, trainer.adapter.parameterCount / 100, "few weights sit that close to zero gradient")
        XCTAssertLessThan(stepError, 1e-5, "\(name): adapter after one AdamW step")
        print("\(name): loss \(loss) (reference \(reference.loss)), worst gradient error \(worst), step error \(stepError)")
    }

    func testGradientsAndOneStepMatchPEFT() throws {
        try checkGradientsAndStep("gqa2_window")
        try checkGradientsAndStep("tiny16")
        try checkGradientsAndStep("tiny16_tokens")
        try checkGradientsAndStep("gqa2_vision")
    }

    /// An adapter PEFT wrote gives PEFT's greedy ids; without it, the base's.
    func testGreedyIdsWithAdapterMatchPEFT() throws {
        for name in ["gqa2_window", "tiny16", "tiny16_tokens", "gqa2_vision"] {
            let dir = fixture(name)
            let reference = try JSONDecoder().decode(Reference.self, from: Data(contentsOf: dir.appendingPathComponent("reference.json")))
            let base = fixturesDirectory("model").appendingPathComponent(try baseName(name))
            let examples = try SafeTensorsFile(path: dir.appendingPathComponent("examples.safetensors").path)
            let ids = try XCTUnwrap(examples.tensors["ids_0"]).integers()
            let types = try XCTUnwrap(examples.tensors["types_0"]).integers()
            let prompt = Array(ids[..<types.firstIndex(of: 1)!])
            let pixels = try XCTUnwrap(examples.tensors["pixels_0"]).floats()
            let config = try PaliGemmaConfig.load(from: base.appendingPathComponent("config.json"))
            let adapter = try LoRAAdapter.load(from: dir.appendingPathComponent("adapter_step1"), text: config.text, vision: config.vision)
            XCTAssertEqual(adapter.adaptsVision, name == "gqa2_vision")
            for (model, expected) in [(try PaliGemmaModel(directory: base, adapter: adapter), reference.greedy_ids_adapter),
                                      (try PaliGemmaModel(directory: base), reference.greedy_ids_base)] {
                let out = try model.generate(prompt: prompt, image: try model.encodeImage(pixels: pixels),
                                             options: GenerationOptions(maxNewTokens: reference.greedy_max_new_tokens),
                                             stopTokens: [])
                XCTAssertEqual(out.tokens, expected, name)
            }
        }
    }

    /// What we save, we load back unchanged, under PEFT's key names.
    func testSaveLoadRoundTripUsesPEFTNames() throws {
        let config = try PaliGemmaConfig.load(from: fixturesDirectory("model").appendingPathComponent("tiny16/config.json"))
        let adapter = try LoRAAdapter(config: LoRAConfig(rank: 3, alpha: 6, dropout: 0, targets: [.q, .down]), text: config.text, seed: 9)
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("lora-\(UUID())")
        defer { try? FileManager.default.removeItem(at: dir) }
        try adapter.save(to: dir, baseModel: "tiny16")
        let file = try SafeTensorsFile(path: dir.appendingPathComponent("adapter_model.safetensors").path)
        XCTAssertEqual(file.tensors.count, 2 * 2 * config.text.numHiddenLayers)
        XCTAssertNotNil(file.tensors["base_model.model.model.language_model.layers.1.mlp.down_proj.lora_B.weight"])
        let back = try LoRAAdapter.load(from: dir, text: config.text)
        XCTAssertEqual(back.config, adapter.config)
        XCTAssertEqual(back.pairs[1][.q]!.a.values, adapter.pairs[1][.q]!.a.values)
        // A fresh adapter's B is zero (PEFT's init), A within Kaiming's bound 1/√in.
        XCTAssertTrue(adapter.pairs[0][.q]!.b.values.allSatisfy { $0 == 0 })
        let bound = 1 / Float(config.text.hiddenSize).squareRoot()
        XCTAssertTrue(adapter.pairs[0][.q]!.a.values.allSatisfy { abs($0) <= bound })
    }
}
