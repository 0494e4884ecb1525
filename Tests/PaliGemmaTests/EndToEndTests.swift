import Foundation
import Imaging
import Kernels
@testable import PaliGemma
import SafeTensors
import XCTest

/// Image file → Swift decoding and preprocessing → tokenizer → model → text, against
/// transformers' PaliGemmaProcessor + generate() on the same files.
final class EndToEndTests: XCTestCase {
    struct Case: Decodable {
        let image: String, prompt: String, text: String
        let input_ids: [Int], token_type_ids: [Int], generated_ids: [Int]
    }
    struct Reference: Decodable { let cases: [Case] }

    let dir = fixturesDirectory("model").appendingPathComponent("e2e")
    /// The reference gave the processor PIL images as opened, which composites transparent ones on
    /// white (the tool's default drops alpha instead, as load_image does: ImagingTests check both).
    static let loader = ImageLoader(alpha: .compositeOnWhite)

    func reference() throws -> Reference {
        try JSONDecoder().decode(Reference.self, from: Data(contentsOf: dir.appendingPathComponent("reference.json")))
    }

    func testImageFilesAndPromptsGiveTheReferenceText() throws {
        let pipeline = try PaliGemmaPipeline(directory: dir, imageLoader: Self.loader)
        let tensors = try SafeTensorsFile(path: dir.appendingPathComponent("reference.safetensors").path)
        for (i, c) in try reference().cases.enumerated() {
            let image = try pipeline.loadImage(fixturesDirectory("image").appendingPathComponent(c.image))
            // Same pixels as the processor.
            let pixels = pipeline.preprocessor.pixelValues(image)
            let expectedPixels = try XCTUnwrap(tensors.tensors["pixel_values_\(i)"]).floats()
            XCTAssertLessThanOrEqual(relativeError(pixels, expectedPixels), 1e-6, c.image)
            // Same prompt tokens.
            let p = pipeline.promptTokens(c.prompt)
            XCTAssertEqual(p.ids.map(Int.init), c.input_ids, c.prompt)
            XCTAssertEqual(p.tokenTypes.map(Int.init), c.token_type_ids, c.prompt)
            // Same tokens and text.
            let encoded = try pipeline.encode(image: image)
            var streamed = ""
            let g = try pipeline.generate(prompt: c.prompt, image: encoded,
                                          options: GenerationOptions(maxNewTokens: c.generated_ids.count)) { streamed += $0 }
            XCTAssertEqual(g.tokenIDs, c.generated_ids, c.prompt)
            XCTAssertEqual(g.text, c.text, c.prompt)
            XCTAssertEqual(streamed, c.text, "streamed text equals the full decode")
            XCTAssertEqual(g.tokenLogProbs.count, g.tokenIDs.count)
            XCTAssertTrue(g.tokenLogProbs.allSatisfy { $0 <= 0 && $0.isFinite })
            XCTAssertEqual(encoded.width, image.width)
        }
    }

    func testAsyncStreamYieldsTokensThenTheResult() async throws {
        let pipeline = try PaliGemmaPipeline(directory: dir, imageLoader: Self.loader)
        let c = try reference().cases[0]
        let image = try pipeline.encode(image: try pipeline.loadImage(fixturesDirectory("image").appendingPathComponent(c.image)))
        var ids: [Int] = []
        var text = ""
        var finished: Generation?
        for try await event in pipeline.stream(prompt: c.prompt, image: image,
                                               options: GenerationOptions(maxNewTokens: c.generated_ids.count)) {
            switch event {
            case let .token(id, piece):
                ids.append(id)
                text += piece
            case let .finished(g):
                finished = g
            }
        }
        XCTAssertEqual(Array(ids.prefix(c.generated_ids.count)), c.generated_ids)
        XCTAssertEqual(text, c.text)
        XCTAssertEqual(finished?.tokenIDs, c.generated_ids)
    }

    func testSamplingIsSeededAndRespectsTopK() throws {
        let pipeline = try PaliGemmaPipeline(directory: dir, imageLoader: Self.loader)
        let c = try reference().cases[0]
        let image = try pipeline.encode(image: try pipeline.loadImage(fixturesDirectory("image").appendingPathComponent(c.image)))
        let opts = GenerationOptions(maxNewTokens: 8, temperature: 1.5, topK: 5, topP: 0.9, seed: 11)
        let a = try pipeline.generate(prompt: c.prompt, image: image, options: opts)
        let b = try pipeline.generate(prompt: c.prompt, image: image, options: opts)
        XCTAssertEqual(a.tokenIDs, b.tokenIDs, "same seed, same tokens")
        // top-k 1 is greedy whatever the temperature.
        let greedyLike = try pipeline.generate(prompt: c.prompt, image: image,
                                               options: GenerationOptions(maxNewTokens: 8, temperature: 2, topK: 1, seed: 3))
        XCTAssertEqual(greedyLike.tokenIDs, Array(c.generated_ids.prefix(8)))
        XCTAssertThrowsError(try pipeline.generate(prompt: c.prompt, image: image, options: GenerationOptions(topP: 0)))
    }

    func testStopTokenEndsGeneration() throws {
        let pipeline = try PaliGemmaPipeline(directory: dir, imageLoader: Self.loader)
        let c = try reference().cases[1]
        let image = try pipeline.encode(image: try pipeline.loadImage(fixturesDirectory("image").appendingPathComponent(c.image)))
        let p = pipeline.promptTokens(c.prompt)
        let session = pipeline.model.makeSession(maxTokens: p.ids.count + 12)
        let stop = c.generated_ids[0]
        let r = try session.generate(prompt: p.ids.map(Int.init), tokenTypes: p.tokenTypes.map(Int.init),
                                     image: image.embedding, options: GenerationOptions(maxNewTokens: 12),
                                     stopTokens: [stop])
        XCTAssertEqual(r.tokens, [stop])
        XCTAssertEqual(r.finishReason, .stopToken)
    }

    /// Several images in one prompt, as transformers' processor and generate() take them.
    func testSeveralImagesInOnePromptMatchTransformers() throws {
        struct Multi: Decodable {
            struct Case: Decodable { let images: [String], prompt: String, input_ids: [Int], generated_ids: [Int], text: String }
            let cases: [Case]
        }
        let reference = try JSONDecoder().decode(Multi.self, from: Data(contentsOf: dir.appendingPathComponent("reference_multi.json")))
        let pipeline = try PaliGemmaPipeline(directory: dir, imageLoader: Self.loader)
        for c in reference.cases {
            let images = try c.images.map { try pipeline.loadImage(fixturesDirectory("image").appendingPathComponent($0)) }
            let encoded = try pipeline.encode(images: images)
            XCTAssertEqual(encoded.embedding.rows.rows, pipeline.model.numImageTokens * images.count)
            XCTAssertEqual(pipeline.promptTokens(c.prompt, images: images.count).ids.map(Int.init), c.input_ids, c.prompt)
            let g = try pipeline.generate(prompt: c.prompt, image: encoded, options: GenerationOptions(maxNewTokens: c.generated_ids.count))
            XCTAssertEqual(g.tokenIDs, c.generated_ids, "\(c.images.count) images: \(c.prompt)")
            XCTAssertEqual(g.text, c.text)
        }
    }
}
