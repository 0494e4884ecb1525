import Foundation
import Kernels
@testable import PaliGemma
import SafeTensors
import XCTest

/// Damaged copies of a real fixture checkpoint: each must fail with its specific error.
final class CheckpointErrorTests: XCTestCase {
    var dir: URL!
    let source = fixturesDirectory("model").appendingPathComponent("tiny16")

    override func setUpWithError() throws {
        dir = FileManager.default.temporaryDirectory.appendingPathComponent("ckpt-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        try FileManager.default.copyItem(at: source.appendingPathComponent("config.json"), to: dir.appendingPathComponent("config.json"))
    }

    override func tearDownWithError() throws { try? FileManager.default.removeItem(at: dir) }

    /// Rewrites the fixture's tensors through `edit` into dir/model.safetensors.
    func rewrite(_ edit: (inout [SafeTensorsWriter.Entry]) -> Void) throws {
        let file = try SafeTensorsFile(path: source.appendingPathComponent("model.safetensors").path)
        var entries = file.tensors.values.sorted { $0.name < $1.name }.map {
            SafeTensorsWriter.Entry(name: $0.name, dtype: $0.dtype, shape: $0.shape, bytes: Data(bytes: $0.data, count: $0.byteCount))
        }
        edit(&entries)
        var w = SafeTensorsWriter()
        for e in entries { w.add(e.name, dtype: e.dtype, shape: e.shape, bytes: e.bytes) }
        try w.write(to: dir.appendingPathComponent("model.safetensors"))
    }

    func load() throws -> PaliGemmaModel { try PaliGemmaModel(directory: dir, backend: ReferenceBackend()) }

    func testIntactCopyLoads() throws {
        try rewrite { _ in }
        XCTAssertEqual(try load().numImageTokens, 16)
    }

    func testMissingTensor() throws {
        let name = "language_model.model.layers.1.mlp.up_proj.weight"
        try rewrite { $0.removeAll { $0.name == name } }
        XCTAssertThrowsError(try load()) { error in
            guard case let .missingTensor(missing, files) = error as? CheckpointError else { return XCTFail("\(error)") }
            XCTAssertEqual(missing, name)
            XCTAssertEqual(files, ["model.safetensors"])
        }
    }

    func testUnexpectedTensor() throws {
        try rewrite { $0.append(.init(name: "language_model.model.layers.7.mlp.up_proj.weight", dtype: .f32, shape: [1], bytes: Data(count: 4))) }
        XCTAssertThrowsError(try load()) { error in
            guard case let .unexpectedTensor(name, _) = error as? CheckpointError else { return XCTFail("\(error)") }
            XCTAssertEqual(name, "language_model.model.layers.7.mlp.up_proj.weight")
        }
    }

    func testWrongShape() throws {
        let name = "multi_modal_projector.linear.weight"
        try rewrite { entries in
            let i = entries.firstIndex { $0.name == name }!
            entries[i].shape = [entries[i].shape[1], entries[i].shape[0]]   // transposed
        }
        XCTAssertThrowsError(try load()) { error in
            guard case let .wrongShape(n, _, expected, found) = error as? CheckpointError else { return XCTFail("\(error)") }
            XCTAssertEqual(n, name)
            XCTAssertEqual(expected, [64, 32])
            XCTAssertEqual(found, [32, 64])
        }
    }

    func testUnsupportedDType() throws {
        let name = "language_model.model.norm.weight"
        try rewrite { entries in
            let i = entries.firstIndex { $0.name == name }!
            entries[i].dtype = .i32   // same byte size, wrong type
        }
        XCTAssertThrowsError(try load()) { error in
            guard case let .unsupportedDType(n, _, dtype) = error as? CheckpointError else { return XCTFail("\(error)") }
            XCTAssertEqual(n, name)
            XCTAssertEqual(dtype, "I32")
        }
    }

    func testTruncatedWeightsFile() throws {
        try FileManager.default.copyItem(at: source.appendingPathComponent("model.safetensors"),
                                         to: dir.appendingPathComponent("model.safetensors"))
        let url = dir.appendingPathComponent("model.safetensors")
        let data = try Data(contentsOf: url)
        try data.prefix(data.count / 2).write(to: url)
        XCTAssertThrowsError(try load()) { error in
            guard case .offsetsOutOfBounds = error as? SafeTensorsError else { return XCTFail("\(error)") }
        }
    }

    func testMissingShardOfShardedFixture() throws {
        let sharded = fixturesDirectory("model").appendingPathComponent("gqa2_window")
        try FileManager.default.removeItem(at: dir)
        try FileManager.default.copyItem(at: sharded, to: dir)
        let shard = try FileManager.default.contentsOfDirectory(atPath: dir.path).filter { $0.hasPrefix("model-00003") }.first!
        try FileManager.default.removeItem(at: dir.appendingPathComponent(shard))
        XCTAssertThrowsError(try load()) { error in
            guard case let .missingShard(_, missing) = error as? SafeTensorsError else { return XCTFail("\(error)") }
            XCTAssertEqual(missing, shard)
        }
    }

    func testMissingConfigAndDirectory() throws {
        try FileManager.default.removeItem(at: dir.appendingPathComponent("config.json"))
        XCTAssertThrowsError(try load()) { error in
            guard case .missingFile = error as? CheckpointError else { return XCTFail("\(error)") }
        }
        XCTAssertThrowsError(try PaliGemmaModel(directory: dir.appendingPathComponent("nowhere"))) { error in
            guard case .missingFile = error as? CheckpointError else { return XCTFail("\(error)") }
        }
    }
}
