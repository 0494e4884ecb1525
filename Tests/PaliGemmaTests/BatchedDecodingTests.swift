import Foundation
import Imaging
import Kernels
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
        let batching = try XCTUnwrap(shared.model.enableBatchedDecoding(maxSequences: 8))
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
        let batching = try XCTUnwrap(shared.model.enableBatchedDecoding(maxSequences: 4))
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

    // @unchecked Sendable: `values` is only touched under `lock`.
    final class Results: @unchecked Sendable {
        private let lock = NSLock()
        private var values: [Result<Generation, Error>?]
        init(count: Int) { values = Array(repeating: nil, count: count) }
        func set(_ i: Int, _ r: Result<Generation, Error>) { lock.lock(); values[i] = r; lock.unlock() }
        func get(_ i: Int) throws -> Generation { lock.lock(); defer { lock.unlock() }; return try values[i]!.get() }
    }
}
