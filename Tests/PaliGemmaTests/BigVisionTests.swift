import Foundation
import Imaging
import Kernels
@testable import PaliGemma
import SafeTensors
import XCTest

/// big_vision / Kaggle `.npz` trees (Tests/Fixtures/bigvision, made by
/// tools/reference/fixtures_bigvision.py from the model fixtures with the inverse of transformers'
/// conversion mapping, which the tool checks round-trips exactly): loaded directly, they must give
/// what transformers computed on the converted checkpoints.
final class BigVisionTests: XCTestCase {
    let trees = fixturesDirectory("bigvision")

    /// A folder holding `tree` as Kaggle ships it, with the files named in `extra` beside it.
    func kaggleFolder(_ tree: String, extra: [(URL, String)] = []) throws -> URL {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("bigvision-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        addTeardownBlock { try? FileManager.default.removeItem(at: dir) }
        try FileManager.default.copyItem(at: trees.appendingPathComponent(tree), to: dir.appendingPathComponent(tree))
        for (source, name) in extra { try FileManager.default.copyItem(at: source, to: dir.appendingPathComponent(name)) }
        return dir
    }

    /// The tree's settings read off its shapes equal the converted checkpoint's config.json.
    func testConfigurationInferredFromTheTreeMatchesTheConvertedCheckpoint() throws {
        for (tree, model) in [("e2e.npz", "e2e"), ("bf16.b16.npz", "bf16"), ("gemma1.npz", "gemma1")] {
            let m = try PaliGemmaModel(directory: trees.appendingPathComponent(tree))
            let hf = try PaliGemmaConfig.load(from: fixturesDirectory("model").appendingPathComponent(model).appendingPathComponent("config.json"))
            var expected = hf
            // The tree's vocabulary stops before `<image>`; the converted checkpoint pads after it.
            expected.text.vocabSize = hf.imageTokenIndex
            let (a, b) = (m.config, expected)
            XCTAssertEqual(a.imageTokenIndex, b.imageTokenIndex, tree)
            XCTAssertEqual(a.projectionDim, b.projectionDim, tree)
            XCTAssertEqual([a.vision.hiddenSize, a.vision.intermediateSize, a.vision.numHiddenLayers, a.vision.numAttentionHeads,
                            a.vision.imageSize, a.vision.patchSize, a.vision.numChannels],
                           [b.vision.hiddenSize, b.vision.intermediateSize, b.vision.numHiddenLayers, b.vision.numAttentionHeads,
                            b.vision.imageSize, b.vision.patchSize, b.vision.numChannels], tree)
            XCTAssertEqual([a.text.vocabSize, a.text.hiddenSize, a.text.intermediateSize, a.text.numHiddenLayers,
                            a.text.numAttentionHeads, a.text.numKeyValueHeads, a.text.headDim],
                           [b.text.vocabSize, b.text.hiddenSize, b.text.intermediateSize, b.text.numHiddenLayers,
                            b.text.numAttentionHeads, b.text.numKeyValueHeads, b.text.headDim], tree)
            XCTAssertEqual(a.text.modelType, b.text.modelType, tree)
            XCTAssertEqual(a.text.queryPreAttnScalar, b.text.queryPreAttnScalar, tree)
            XCTAssertEqual(a.text.slidingWindow, b.text.slidingWindow, tree)
            XCTAssertEqual(a.text.slidingLayers, b.text.slidingLayers, tree)
            XCTAssertEqual(a.text.finalLogitSoftcapping, b.text.finalLogitSoftcapping, tree)
            XCTAssertEqual(a.text.attnLogitSoftcapping, b.text.attnLogitSoftcapping, tree)
        }
    }

    /// Every published shape set is recognised with the conversion script's settings: the 27B
    /// scales queries by hidden/heads (144), the others by head_dim (256).
    func testPublishedSizesGetTheirQueryScale() throws {
        XCTAssertEqual(BigVisionTree.queryScale(hidden: 2304, heads: 8, headDim: 256), 256)
        XCTAssertEqual(BigVisionTree.queryScale(hidden: 3584, heads: 16, headDim: 256), 256)
        XCTAssertEqual(BigVisionTree.queryScale(hidden: 4608, heads: 32, headDim: 128), 144)
    }

    /// Logits and greedy ids from the tree equal transformers' on the converted checkpoint
    /// (float32, bfloat16 saved as ml_dtypes writes it, and PaliGemma 1's layout).
    func testTreesGiveTransformersOutputs() throws {
        // (e2e, the float32 PaliGemma 2 tree, is checked from image files in testKaggleFolderRunsEndToEnd.)
        for (tree, model, tolerance) in [("bf16.b16.npz", "bf16", Float(2e-2)), ("gemma1.npz", "gemma1", 1e-4)] {
            let m = try PaliGemmaModel(directory: trees.appendingPathComponent(tree))
            let ref = try ModelReference(model)
            let vocab = m.config.text.vocabSize
            let image = try m.encodeImage(pixels: try ref.floats("pixel_values"))
            XCTAssertLessThanOrEqual(relativeError(image.rows.values, try ref.floats("projector_output")), tolerance, tree)
            let ids = try ref.ints("input_ids"), types = try ref.ints("token_type_ids")
            let session = m.makeSession(maxTokens: ids.count + 32)
            let logits = try session.prefill(prompt: ids, tokenTypes: types, image: image, logits: .all)
            // The reference has a logit for each padding row the conversion appended; the tree's
            // rows are the first `vocab`.
            let full = try ref.floats("prefill_logits"), width = try ref.shape("prefill_logits").last!
            let expected = (0..<logits.rows).flatMap { r in full[(r * width)..<(r * width + vocab)] }
            XCTAssertLessThanOrEqual(relativeError(logits.values, Array(expected)), tolerance, tree)
            let greedy = try ref.ints("greedy_ids")
            XCTAssertTrue(greedy.allSatisfy { $0 < vocab }, "\(tree): the reference picked a padding row")
            let result = try session.generate(prompt: ids, tokenTypes: types, image: image,
                                              options: GenerationOptions(maxNewTokens: greedy.count),
                                              stopTokens: Set(m.config.text.eosTokenIDs))
            XCTAssertEqual(result.tokens, greedy, "\(tree): greedy ids differ from transformers")
        }
    }

    /// As a user meets it: the folder Kaggle gives (the tree and `paligemma_tokenizer.model`),
    /// image files and prompts in, the reference text out; the .npz file itself works too.
    func testKaggleFolderRunsEndToEnd() throws {
        let folder = try kaggleFolder("e2e.npz", extra: [(fixturesDirectory("tokenizer").appendingPathComponent("tokenizer.model"),
                                                         "paligemma_tokenizer.model")])
        struct Case: Decodable { let image: String, prompt: String, text: String, generated_ids: [Int] }
        struct Reference: Decodable { let cases: [Case] }
        let reference = try JSONDecoder().decode(Reference.self, from: Data(contentsOf:
            fixturesDirectory("model").appendingPathComponent("e2e").appendingPathComponent("reference.json")))
        for location in [folder, folder.appendingPathComponent("e2e.npz")] {
            let pipeline = try PaliGemmaPipeline(directory: location, imageLoader: ImageLoader(alpha: .compositeOnWhite))
            for c in reference.cases {
                let image = try pipeline.loadImage(fixturesDirectory("image").appendingPathComponent(c.image))
                let g = try pipeline.generate(prompt: c.prompt, image: try pipeline.encode(image: image),
                                              options: GenerationOptions(maxNewTokens: c.generated_ids.count))
                XCTAssertEqual(g.tokenIDs, c.generated_ids, "\(location.lastPathComponent): \(c.prompt)")
                XCTAssertEqual(g.text, c.text)
            }
        }
    }

    // MARK: Bad trees

    /// Writes `arrays` as an uncompressed .npz (what np.savez does) and returns its URL.
    func writeNpz(_ arrays: [(String, Data)], compressed: Bool = false, zip64: Bool = false) throws -> URL {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("tree-\(UUID().uuidString).npz")
        addTeardownBlock { try? FileManager.default.removeItem(at: url) }
        try ZipWriter.write(arrays.map { ($0.0 + ".npy", $0.1) }, compressedMethod: compressed, zip64: zip64, to: url)
        return url
    }

    /// The same tree rewritten with every size and offset in ZIP64 fields (as in files past 4 GB)
    /// reads the same arrays and gives the same model.
    func testZip64ArchiveReadsTheSameArrays() throws {
        let tree = trees.appendingPathComponent("e2e.npz")
        let archive = try MappedNpzArchive(path: tree.path)
        let copy = try writeNpz(archive.keys.map { key in
            let t = archive.arrays[key]!
            return (key, npy(descr: "<f4", shape: t.shape, payload: Data(bytes: t.data, count: t.byteCount)))
        }, zip64: true)
        let again = try MappedNpzArchive(path: copy.path)
        XCTAssertEqual(again.keys, archive.keys)
        for key in archive.keys {
            let (a, b) = (archive.arrays[key]!, again.arrays[key]!)
            XCTAssertEqual(a.shape, b.shape, key)
            XCTAssertEqual(Data(bytes: a.data, count: a.byteCount), Data(bytes: b.data, count: b.byteCount), key)
        }
        let m = try PaliGemmaModel(directory: copy)
        XCTAssertEqual(m.config.text.vocabSize, 3420)
    }

    func testBadTreesGetClearErrors() throws {
        let tree = trees.appendingPathComponent("e2e.npz")
        let bytes = try Data(contentsOf: tree)
        func expectError(_ url: URL, _ fragments: [String], file: StaticString = #filePath, line: UInt = #line) {
            XCTAssertThrowsError(try PaliGemmaModel(directory: url), file: file, line: line) { error in
                let text = "\(error)"
                for f in fragments { XCTAssertTrue(text.contains(f), "\(text) lacks \(f)", file: file, line: line) }
            }
        }
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("badtrees-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        addTeardownBlock { try? FileManager.default.removeItem(at: dir) }

        // Cut short: the directory at the end is gone.
        let truncated = dir.appendingPathComponent("truncated.npz")
        try bytes.prefix(bytes.count / 2).write(to: truncated)
        expectError(truncated, ["truncated.npz", "end-of-central-directory"])

        // Not a ZIP at all.
        let garbage = dir.appendingPathComponent("garbage.npz")
        try Data(repeating: 0x41, count: 4096).write(to: garbage)
        expectError(garbage, ["garbage.npz", "not a readable .npz"])

        // A layer's array missing, one of the wrong shape, a compressed member.
        let archive = try MappedNpzArchive(path: tree.path)
        func member(_ key: String) -> Data {
            let t = archive.arrays[key]!
            return npy(descr: t.dtype == .f32 ? "<f4" : "|V2", shape: t.shape, payload: Data(bytes: t.data, count: t.byteCount))
        }
        let all = archive.keys
        let missing = try writeNpz(all.filter { $0 != "params/llm/layers/mlp/linear" }.map { ($0, member($0)) })
        expectError(missing, ["params/llm/layers/mlp/linear", "missing", missing.lastPathComponent])

        let reshaped = try writeNpz(all.map { key in
            key == "params/llm/layers/mlp/linear" ? (key, npy(descr: "<f4", shape: [1, 2, 3], payload: Data(count: 24))) : (key, member(key))
        })
        expectError(reshaped, ["params/llm/layers/mlp/linear", "[1, 2, 3]"])

        let deflated = try writeNpz(all.map { ($0, member($0)) }, compressed: true)
        expectError(deflated, ["compressed", "np.savez"])

        // A folder with two trees: which one is meant?
        let two = try kaggleFolder("e2e.npz", extra: [(trees.appendingPathComponent("gemma1.npz"), "gemma1.npz")])
        expectError(two, ["several big_vision trees", "e2e.npz", "gemma1.npz"])
    }

    /// A `.npy` member: magic, version 1.0, the header dict padded to 64 bytes, the data.
    func npy(descr: String, shape: [Int], payload: Data) -> Data {
        let dims = shape.map(String.init).joined(separator: ", ") + (shape.count == 1 ? "," : "")
        var header = "{'descr': '\(descr)', 'fortran_order': False, 'shape': (\(dims)), }"
        while (10 + header.utf8.count + 1) % 64 != 0 { header += " " }
        header += "\n"
        var out = Data([0x93, 0x4E, 0x55, 0x4D, 0x50, 0x59, 1, 0])
        out.append(contentsOf: [UInt8(header.utf8.count & 0xFF), UInt8(header.utf8.count >> 8)])
        out.append(Data(header.utf8))
        out.append(payload)
        return out
    }
}

/// The smallest ZIP writer the tests need: stored members (or members marked deflated, to be
/// refused before their data is looked at), one central directory; with `zip64`, every size and
/// offset is given in ZIP64 fields, as for members and archives past 4 GB.
enum ZipWriter {
    static func write(_ members: [(String, Data)], compressedMethod: Bool, zip64: Bool = false, to url: URL) throws {
        var out = Data(), directory = Data()
        func u16(_ v: Int, _ d: inout Data) { d.append(contentsOf: [UInt8(v & 0xFF), UInt8(v >> 8 & 0xFF)]) }
        func u32(_ v: Int, _ d: inout Data) { for s in [0, 8, 16, 24] { d.append(UInt8(v >> s & 0xFF)) } }
        for (name, data) in members {
            let offset = out.count
            let nameBytes = Data(name.utf8)
            let method = compressedMethod ? 8 : 0
            u32(0x0403_4B50, &out); u16(20, &out); u16(0, &out); u16(method, &out); u16(0, &out); u16(0, &out)
            u32(0, &out); u32(data.count, &out); u32(data.count, &out); u16(nameBytes.count, &out); u16(0, &out)
            out.append(nameBytes); out.append(data)
            let saturated = 0xFFFF_FFFF
            u32(0x0201_4B50, &directory); u16(45, &directory); u16(45, &directory); u16(0, &directory); u16(method, &directory)
            u16(0, &directory); u16(0, &directory); u32(0, &directory)
            u32(zip64 ? saturated : data.count, &directory); u32(zip64 ? saturated : data.count, &directory)
            u16(nameBytes.count, &directory); u16(zip64 ? 28 : 0, &directory); u16(0, &directory); u16(0, &directory); u16(0, &directory)
            u32(0, &directory); u32(zip64 ? saturated : offset, &directory); directory.append(nameBytes)
            if zip64 {
                u16(1, &directory); u16(24, &directory)
                u32(data.count, &directory); u32(0, &directory); u32(data.count, &directory); u32(0, &directory)
                u32(offset, &directory); u32(0, &directory)
            }
        }
        let directoryOffset = out.count
        out.append(directory)
        if zip64 {
            let record = out.count
            u32(0x0606_4B50, &out); u32(44, &out); u32(0, &out); u16(45, &out); u16(45, &out); u32(0, &out); u32(0, &out)
            for v in [members.count, members.count, directory.count, directoryOffset] { u32(v, &out); u32(0, &out) }
            u32(0x0706_4B50, &out); u32(0, &out); u32(record, &out); u32(0, &out); u32(1, &out)
        }
        u32(0x0605_4B50, &out); u16(0, &out); u16(0, &out)
        u16(zip64 ? 0xFFFF : members.count, &out); u16(zip64 ? 0xFFFF : members.count, &out)
        u32(zip64 ? 0xFFFF_FFFF : directory.count, &out); u32(zip64 ? 0xFFFF_FFFF : directoryOffset, &out); u16(0, &out)
        try out.write(to: url)
    }
}

extension BigVisionTests {
    /// `quantize` takes a tree as it takes a Hugging Face checkpoint: quantizing the bf16 tree
    /// writes the same tensors as quantizing the checkpoint the tree converts to (the embedding
    /// up to the tree's rows), and the result loads with the tokenizer beside the tree.
    func testQuantizingATreeEqualsQuantizingItsConversion() throws {
        let work = FileManager.default.temporaryDirectory.appendingPathComponent("bvq-\(UUID().uuidString)")
        addTeardownBlock { try? FileManager.default.removeItem(at: work) }
        let fromTree = work.appendingPathComponent("tree-q8"), fromHF = work.appendingPathComponent("hf-q8")
        try Quantizer.quantize(source: trees.appendingPathComponent("bf16.b16.npz"), destination: fromTree, format: .q8)
        try Quantizer.quantize(source: fixturesDirectory("model").appendingPathComponent("bf16"), destination: fromHF, format: .q8)
        let a = try SafeTensorsCheckpoint(directory: fromTree), b = try SafeTensorsCheckpoint(directory: fromHF)
        let hfNames = Set(b.names.map { $0.replacingOccurrences(of: "vision_tower.vision_model.", with: "vision_tower.") })
        XCTAssertEqual(Set(a.names.map { $0.replacingOccurrences(of: "vision_tower.vision_model.", with: "vision_tower.") }), hfNames)
        for t in a.tensors {
            let other = try XCTUnwrap(b[t.name] ?? b[t.name.replacingOccurrences(of: "vision_tower.vision_model.", with: "vision_tower.")], t.name)
            if t.name.contains("embed_tokens") {
                // 511 rows in the tree, 512 in the conversion: the tree's rows are the first ones.
                XCTAssertEqual(t.shape[0], other.shape[0] - 1, t.name)
                XCTAssertEqual(Data(bytes: t.data, count: t.byteCount), Data(bytes: other.data, count: t.byteCount), t.name)
            } else {
                XCTAssertEqual(t.shape, other.shape, t.name)
                XCTAssertEqual(Data(bytes: t.data, count: t.byteCount), Data(bytes: other.data, count: other.byteCount), t.name)
            }
        }
        let model = try PaliGemmaModel(directory: fromTree)
        XCTAssertEqual(model.config.quantization?.format, "q8")
        XCTAssertEqual(model.config.text.vocabSize, 511)
    }
}
