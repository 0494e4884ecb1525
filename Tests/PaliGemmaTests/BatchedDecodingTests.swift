import Foundation
import Imaging
import Kernels
import SafeTensors
@testable import PaliGemma
import XCTest

/// Generations running at the same time share decode steps (continuous batching); each must
/// produce exactly what it produces alone.
final class BatchedDecodingTests: XCTestCase {
    struct Case: Decodable { let image: String, prompt: String }
    struct Reference: Decodable { let cases: [Case] }

    func runTogether(_ directory: URL, label: String) throws {
        let e2e = fixturesDirectory("model").appendingPathComponent("e2e")
        let cases = try JSONDecoder().decode(Reference.self, from: Data(contentsOf: e2e.appendingPathComponent("reference.json"))).cases
        let loader = ImageLoader(alpha: .compositeOnWhite)
        // Four requests: the reference prompts, and one sampled with a seed, up to 60 tokens each.
        var requests: [(String, String, GenerationOptions)] = cases.prefix(3).map { ($0.image, $0.prompt, GenerationOptions(maxNewTokens: 60)) }
        var sampled = GenerationOptions(maxNewTokens: 60)
        sampled.temperature = 1
        sampled.seed = 7
        requests.append((cases[0].image, "caption en", sampled))

        let alone = try PaliGemmaPipeline(directory: directory, imageLoader: loader)
        let expected = try requests.map { image, prompt, options in
            try alone.generate(prompt: prompt, image: try alone.encode(image: try alone.loadImage(fixturesDirectory("image").appendingPathComponent(image))),
                               options: options)
        }

        let shared = try PaliGemmaPipeline(directory: directory, imageLoader: loader)
        let batching = shared.model.enableBatchedDecoding(maxSequences: 8)
        let all = requests
        let results = Results(count: all.count)
        // One thread per request, as the server runs them (more than the cores, so they overlap).
        let group = DispatchGroup()
        for i in all.indices {
            group.enter()
            Thread {
                let (image, prompt, options) = all[i]
                results.set(i, Result {
                    try shared.generate(prompt: prompt, image: try shared.encode(image: try shared.loadImage(fixturesDirectory("image").appendingPathComponent(image))),
                                        options: options)
                })
                group.leave()
            }.start()
        }
        group.wait()
        for (i, want) in expected.enumerated() {
            let got = try results.get(i)
            XCTAssertEqual(got.tokenIDs, want.tokenIDs, "\(label): request \(i) differs from its run alone")
            XCTAssertEqual(got.tokenLogProbs.map(\.bitPattern), want.tokenLogProbs.map(\.bitPattern), "\(label): request \(i) log-probabilities")
        }
        print("[batched] \(label): \(String(format: "%.2f", batching.meanBatch)) sequences per step")
        XCTAssertGreaterThan(batching.meanBatch, 1.5, "\(label): the generations did not share steps")
    }

    /// float32 weights: products per sequence inside a shared step.
    func testConcurrentGenerationsEqualTheirRunsAloneFloat32() throws {
        try runTogether(fixturesDirectory("model").appendingPathComponent("e2e"), label: "f32")
    }

    /// 4-bit weights: one pass over the weights for all sequences (`linearEachRow`).
    func testConcurrentGenerationsEqualTheirRunsAloneQ4() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("batched-q4-\(UUID().uuidString)")
        addTeardownBlock { try? FileManager.default.removeItem(at: dir) }
        try Quantizer.quantize(source: fixturesDirectory("model").appendingPathComponent("e2e"), destination: dir, format: .q4)
        try runTogether(dir, label: "q4")
    }

    /// bf16 weights: one pass over the weights for all sequences (`ck_gemv_bf16_rows`); the
    /// greedy sequence is also transformers' (Tests/Fixtures/model/bf16).
    func testConcurrentGenerationsEqualTheirRunsAloneBF16() throws {
        let dir = fixturesDirectory("model").appendingPathComponent("bf16")
        let ref = try ModelReference("bf16")
        let ids = try ref.ints("input_ids"), types = try ref.ints("token_type_ids"), pixels = try ref.floats("pixel_values")
        let greedyIDs = try ref.ints("greedy_ids")
        var options = [GenerationOptions(maxNewTokens: 40)]
        for seed in [1, 2, 3] as [UInt64] {
            var sampled = GenerationOptions(maxNewTokens: 40)
            sampled.temperature = 1
            sampled.seed = seed
            options.append(sampled)
        }
        let alone = try PaliGemmaModel(directory: dir)
        let image = try alone.encodeImage(pixels: pixels)
        let expected = try options.map {
            try alone.makeSession(maxTokens: ids.count + 40).generate(prompt: ids, tokenTypes: types, image: image, options: $0, stopTokens: []).tokens
        }
        XCTAssertEqual(Array(expected[0].prefix(greedyIDs.count)), greedyIDs, "transformers' greedy ids")

        let shared = try PaliGemmaModel(directory: dir)
        let batching = shared.enableBatchedDecoding(maxSequences: 4)
        let sharedImage = try shared.encodeImage(pixels: pixels)
        let all = options
        let got = try tokensTogether(all.count) { i in
            try shared.makeSession(maxTokens: ids.count + 40).generate(prompt: ids, tokenTypes: types, image: sharedImage,
                                                                       options: all[i], stopTokens: []).tokens
        }
        for i in all.indices { XCTAssertEqual(got[i], expected[i], "request \(i) differs from its run alone") }
        XCTAssertGreaterThan(batching.meanBatch, 1.5, "the generations did not share steps")
    }

    /// With a LoRA adapter (unmerged; trainable token rows in tiny16_tokens, vision LoRA in
    /// gqa2_vision): shared steps add each sequence's low-rank terms as its own step does, so
    /// every answer equals its run alone, and the greedy one PEFT's ids.
    func testConcurrentGenerationsWithAnAdapterEqualTheirRunsAlone() throws {
        struct PEFTReference: Decodable {
            let greedy_ids_adapter: [Int]
            let greedy_max_new_tokens: Int
            let base_model_dir: String?
        }
        for name in ["tiny16_tokens", "gqa2_window", "gqa2_vision"] {
            let dir = fixturesDirectory("lora").appendingPathComponent(name)
            let reference = try JSONDecoder().decode(PEFTReference.self, from: Data(contentsOf: dir.appendingPathComponent("reference.json")))
            let base = fixturesDirectory("model").appendingPathComponent(reference.base_model_dir ?? name)
            let config = try PaliGemmaConfig.load(from: base.appendingPathComponent("config.json"))
            let examples = try SafeTensorsFile(path: dir.appendingPathComponent("examples.safetensors").path)
            func load() throws -> PaliGemmaModel {
                let adapter = try LoRAAdapter.load(from: dir.appendingPathComponent("adapter_step1"), text: config.text, vision: config.vision)
                return try PaliGemmaModel(directory: base, adapter: adapter)
            }
            // Each example's prompt, greedy, and the first again sampled with a seed.
            var requests: [(prompt: [Int], pixels: [Float], options: GenerationOptions)] = []
            for e in 0..<2 {
                guard let ids = examples.tensors["ids_\(e)"], let types = examples.tensors["types_\(e)"],
                      let pixels = examples.tensors["pixels_\(e)"] else { continue }
                let t = try types.integers()
                requests.append((Array(try ids.integers()[..<t.firstIndex(of: 1)!]), try pixels.floats(), GenerationOptions(maxNewTokens: 40)))
            }
            var sampled = GenerationOptions(maxNewTokens: 40)
            sampled.temperature = 1
            sampled.seed = 3
            requests.append((requests[0].prompt, requests[0].pixels, sampled))

            let alone = try load()
            let expected = try requests.map { r in
                try alone.generate(prompt: r.prompt, image: try alone.encodeImage(pixels: r.pixels), options: r.options, stopTokens: [])
            }
            XCTAssertEqual(Array(expected[0].tokens.prefix(reference.greedy_max_new_tokens)), reference.greedy_ids_adapter, "\(name): PEFT's ids")

            let shared = try load()
            let batching = shared.enableBatchedDecoding(maxSequences: 4)
            let all = requests
            let got = try tokensTogether(all.count) { i in
                try shared.generate(prompt: all[i].prompt, image: try shared.encodeImage(pixels: all[i].pixels),
                                    options: all[i].options, stopTokens: []).tokens
            }
            for i in all.indices { XCTAssertEqual(got[i], expected[i].tokens, "\(name): request \(i) differs from its run alone") }
            XCTAssertGreaterThan(batching.meanBatch, 1.2, "\(name): the generations did not share steps")
        }
    }

    /// The same image encoding with the same prompt, sent together: later ones start from the
    /// first one's prefill, and every answer is still the one it gives alone.
    func testRepeatedPromptOnOneImageReusesItsPrefill() throws {
        let e2e = fixturesDirectory("model").appendingPathComponent("e2e")
        let c = try JSONDecoder().decode(Reference.self, from: Data(contentsOf: e2e.appendingPathComponent("reference.json"))).cases[0]
        let url = fixturesDirectory("image").appendingPathComponent(c.image)
        let alone = try PaliGemmaPipeline(directory: e2e)
        let options = GenerationOptions(maxNewTokens: 30)
        let want = try alone.generate(prompt: c.prompt, image: try alone.encode(image: try alone.loadImage(url)), options: options)

        let shared = try PaliGemmaPipeline(directory: e2e)
        let batching = shared.model.enableBatchedDecoding(maxSequences: 4)
        let image = try shared.encode(image: try shared.loadImage(url))
        let results = Results(count: 3)
        let group = DispatchGroup()
        for i in 0..<3 {
            group.enter()
            Thread {
                results.set(i, Result { try shared.generate(prompt: c.prompt, image: image, options: options) })
                group.leave()
            }.start()
        }
        group.wait()
        for i in 0..<3 { XCTAssertEqual(try results.get(i).tokenIDs, want.tokenIDs, "request \(i)") }
        XCTAssertEqual(batching.prefills.hits, 2, "two of the three prefills were reused")
    }

    /// A newcomer's image encoding and prefill take the model alone; a stream already decoding
    /// takes its steps between their layers instead of stopping, and both answers are still the
    /// ones they give alone.
    func testRunningStreamStepsBetweenTheLayersOfANewcomersPrefill() throws {
        let e2e = fixturesDirectory("model").appendingPathComponent("e2e")
        let cases = try JSONDecoder().decode(Reference.self, from: Data(contentsOf: e2e.appendingPathComponent("reference.json"))).cases
        let a = cases[0], newcomers = Array(cases[1...2])
        func url(_ c: Case) -> URL { fixturesDirectory("image").appendingPathComponent(c.image) }
        // The running stream ignores stop tokens and is stopped once the newcomers have their
        // answers, so it decodes through all of their work.
        let longRun = GenerationOptions(maxNewTokens: 2000), short = GenerationOptions(maxNewTokens: 12)
        let alone = try PaliGemmaPipeline(directory: e2e)
        let idsA = alone.promptTokens(a.prompt)
        let wantA = try alone.model.makeSession(maxTokens: idsA.ids.count + longRun.maxNewTokens).generate(
            prompt: idsA.ids.map(Int.init), tokenTypes: idsA.tokenTypes.map(Int.init),
            image: try alone.encode(image: try alone.loadImage(url(a))).embedding, options: longRun, stopTokens: [])
        let wantNewcomers = try newcomers.map {
            try alone.generate(prompt: $0.prompt, image: try alone.encode(image: try alone.loadImage(url($0))), options: short)
        }

        let shared = try PaliGemmaPipeline(directory: e2e)
        let batching = shared.model.enableBatchedDecoding(maxSequences: 4)
        batching.decodeShareBetweenLayers = 1  // a step at every layer boundary, however short the layers
        let imageA = try shared.encode(image: try shared.loadImage(url(a)))
        let decoding = DispatchSemaphore(value: 0), newcomersAnswered = Flag()
        let resultA = Results(count: 1)
        let group = DispatchGroup()
        group.enter()
        Thread {
            let session = shared.model.makeSession(maxTokens: idsA.ids.count + longRun.maxNewTokens)
            var count = 0
            let r = Result {
                try session.generate(prompt: idsA.ids.map(Int.init), tokenTypes: idsA.tokenTypes.map(Int.init),
                                     image: imageA.embedding, options: longRun, stopTokens: []) { _, _ in
                    count += 1
                    if count == 3 { decoding.signal() }
                    return !newcomersAnswered.isSet
                }
            }
            resultA.setTokens(0, r.map(\.tokens))
            group.leave()
        }.start()
        decoding.wait()
        let got = try newcomers.map {
            try shared.generate(prompt: $0.prompt, image: try shared.encode(image: try shared.loadImage(url($0))), options: short)
        }
        newcomersAnswered.set()
        group.wait()
        let gotA = try resultA.tokens(0)
        XCTAssertEqual(got.map(\.tokenIDs), wantNewcomers.map(\.tokenIDs), "the newcomers' answers differ from their runs alone")
        XCTAssertLessThan(gotA.count, wantA.tokens.count, "the running stream ended before the newcomers' prefills")
        XCTAssertEqual(gotA, Array(wantA.tokens.prefix(gotA.count)), "the running stream differs from its run alone")
        XCTAssertGreaterThanOrEqual(batching.counts.betweenLayers, 1, "no step ran between the newcomers' layers")
    }

    /// Runs `work(i)` for i in 0..<count, each on a thread of its own and all at once (as the
    /// server runs generations), and returns their token lists in order.
    func tokensTogether(_ count: Int, _ work: @escaping @Sendable (Int) throws -> [Int]) throws -> [[Int]] {
        let results = Results(count: count)
        let group = DispatchGroup()
        for i in 0..<count {
            group.enter()
            Thread {
                results.setTokens(i, Result { try work(i) })
                group.leave()
            }.start()
        }
        group.wait()
        return try (0..<count).map { try results.tokens($0) }
    }

    // @unchecked Sendable: `value` is only touched under `lock`.
    final class Flag: @unchecked Sendable {
        private let lock = NSLock()
        private var value = false
        var isSet: Bool { lock.lock(); defer { lock.unlock() }; return value }
        func set() { lock.lock(); value = true; lock.unlock() }
    }

    // @unchecked Sendable: `values` is only touched under `lock`.
    final class Results: @unchecked Sendable {
        private let lock = NSLock()
        private var values: [Result<Generation, Error>?]
        init(count: Int) { values = Array(repeating: nil, count: count) }
        func set(_ i: Int, _ r: Result<Generation, Error>) { lock.lock(); values[i] = r; lock.unlock() }
        func get(_ i: Int) throws -> Generation { lock.lock(); defer { lock.unlock() }; return try values[i]!.get() }
        private var tokenLists: [Int: Result<[Int], Error>] = [:]
        func setTokens(_ i: Int, _ r: Result<[Int], Error>) { lock.lock(); tokenLists[i] = r; lock.unlock() }
        func tokens(_ i: Int) throws -> [Int] { lock.lock(); defer { lock.unlock() }; return try tokenLists[i]!.get() }
    }
}
