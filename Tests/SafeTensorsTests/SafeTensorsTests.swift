import Foundation
import SafeTensors
import XCTest

/// Each malformed file yields its own error naming the file, never a crash.
final class SafeTensorsTests: XCTestCase {
    var dir: URL!

    override func setUpWithError() throws {
        dir = FileManager.default.temporaryDirectory.appendingPathComponent("st-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws { try? FileManager.default.removeItem(at: dir) }

    /// A file with the given raw header text and data bytes.
    func write(_ name: String, header: String, data: [UInt8] = [], declaredLength: UInt64? = nil) throws -> String {
        var bytes = Data()
        var n = (declaredLength ?? UInt64(header.utf8.count)).littleEndian
        withUnsafeBytes(of: &n) { bytes.append(contentsOf: $0) }
        bytes.append(Data(header.utf8))
        bytes.append(contentsOf: data)
        let url = dir.appendingPathComponent(name)
        try bytes.write(to: url)
        return url.path
    }

    func expectError(_ path: String, _ check: (SafeTensorsError) -> Bool, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertThrowsError(try SafeTensorsFile(path: path), file: file, line: line) { error in
            guard let e = error as? SafeTensorsError else { return XCTFail("unexpected \(error)", file: file, line: line) }
            XCTAssertTrue(check(e), "wrong error: \(e)", file: file, line: line)
            XCTAssertTrue(e.description.contains(path), "message should name the file: \(e)", file: file, line: line)
        }
    }

    func testRoundTripAllFloatTypes() throws {
        var w = SafeTensorsWriter()
        w.add("a", shape: [2, 3], floats: [1, 2, 3, 4, 5, 6])
        w.add("b", dtype: .bf16, shape: [2], bytes: Data([0x80, 0x3F, 0x00, 0xC0]))  // 1.0, -2.0
        w.add("c", dtype: .f16, shape: [1], bytes: Data([0x00, 0x3C]))               // 1.0
        w.add("i", dtype: .i64, shape: [2], bytes: Data([5, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF]))
        w.metadata = ["format": "pt"]
        let url = dir.appendingPathComponent("ok.safetensors")
        try w.write(to: url)
        let f = try SafeTensorsFile(path: url.path)
        XCTAssertEqual(try f.tensors["a"]!.floats(), [1, 2, 3, 4, 5, 6])
        XCTAssertEqual(f.tensors["a"]!.shape, [2, 3])
        XCTAssertEqual(try f.tensors["b"]!.floats(), [1, -2])
        XCTAssertEqual(try f.tensors["c"]!.floats(), [1])
        XCTAssertEqual(try f.tensors["i"]!.integers(), [5, -1])
        XCTAssertEqual(f.metadata["format"], "pt")
    }

    func testHeaderNotJSON() throws {
        expectError(try write("x.safetensors", header: "{not json")) { if case .headerNotJSON = $0 { return true }; return false }
        expectError(try write("y.safetensors", header: "[1,2]")) { if case .headerNotJSON = $0 { return true }; return false }
    }

    func testHeaderLargerThanFile() throws {
        expectError(try write("x.safetensors", header: "{}", declaredLength: 1 << 40)) {
            if case .headerTooLarge = $0 { return true }; return false
        }
    }

    func testTruncatedFile() throws {
        let url = dir.appendingPathComponent("t.safetensors")
        try Data([1, 2, 3]).write(to: url)
        expectError(url.path) { if case .truncated = $0 { return true }; return false }
        // A valid file cut inside its data section: the last tensor's offsets now lie past the end.
        var w = SafeTensorsWriter()
        w.add("a", shape: [4], floats: [1, 2, 3, 4])
        let full = w.serialized()
        let cut = dir.appendingPathComponent("cut.safetensors")
        try full.prefix(full.count - 5).write(to: cut)
        expectError(cut.path) { if case .offsetsOutOfBounds = $0 { return true }; return false }
    }

    func testOffsetsOutOfBounds() throws {
        let h = #"{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}"#
        expectError(try write("x.safetensors", header: h, data: [UInt8](repeating: 0, count: 8))) {
            if case let .offsetsOutOfBounds(_, tensor, end, bytes) = $0 { return tensor == "a" && end == 16 && bytes == 8 }
            return false
        }
    }

    func testOverlappingTensors() throws {
        let h = #"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#
        expectError(try write("x.safetensors", header: h, data: [UInt8](repeating: 0, count: 12))) {
            if case .overlapping = $0 { return true }; return false
        }
    }

    func testSizeMismatchAndBadEntries() throws {
        let h = #"{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}"#
        expectError(try write("x.safetensors", header: h, data: [UInt8](repeating: 0, count: 8))) {
            if case .sizeMismatch = $0 { return true }; return false
        }
        let neg = #"{"a":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}}"#
        expectError(try write("n.safetensors", header: neg, data: [UInt8](repeating: 0, count: 8))) {
            if case .badEntry = $0 { return true }; return false
        }
        let huge = #"{"a":{"dtype":"F32","shape":[4611686018427387904,4],"data_offsets":[0,8]}}"#
        expectError(try write("h.safetensors", header: huge, data: [UInt8](repeating: 0, count: 8))) {
            if case .badEntry = $0 { return true }; if case .sizeMismatch = $0 { return true }; return false
        }
        let reversed = #"{"a":{"dtype":"F32","shape":[2],"data_offsets":[8,0]}}"#
        expectError(try write("r.safetensors", header: reversed, data: [UInt8](repeating: 0, count: 8))) {
            if case .badEntry = $0 { return true }; return false
        }
    }

    func testUnknownDType() throws {
        let h = #"{"a":{"dtype":"Q9","shape":[2],"data_offsets":[0,2]}}"#
        expectError(try write("x.safetensors", header: h, data: [0, 0])) {
            if case let .unsupportedDType(_, tensor, dtype) = $0 { return tensor == "a" && dtype == "Q9" }; return false
        }
    }

    func testMissingShardAndBadIndex() throws {
        var w = SafeTensorsWriter()
        w.add("a", shape: [1], floats: [1])
        try w.write(to: dir.appendingPathComponent("model-00001-of-00002.safetensors"))
        let index = #"{"metadata":{},"weight_map":{"a":"model-00001-of-00002.safetensors","b":"model-00002-of-00002.safetensors"}}"#
        try Data(index.utf8).write(to: dir.appendingPathComponent("model.safetensors.index.json"))
        XCTAssertThrowsError(try SafeTensorsCheckpoint(directory: dir)) { error in
            XCTAssertEqual(error as? SafeTensorsError,
                           .missingShard(index: dir.appendingPathComponent("model.safetensors.index.json").path,
                                         shard: "model-00002-of-00002.safetensors"))
        }
        try Data("{\"weight_map\": 3}".utf8).write(to: dir.appendingPathComponent("model.safetensors.index.json"))
        XCTAssertThrowsError(try SafeTensorsCheckpoint(directory: dir)) { error in
            guard case .badIndex = error as? SafeTensorsError else { return XCTFail("\(error)") }
        }
        let escape = #"{"weight_map":{"a":"../../etc/passwd"}}"#
        try Data(escape.utf8).write(to: dir.appendingPathComponent("model.safetensors.index.json"))
        XCTAssertThrowsError(try SafeTensorsCheckpoint(directory: dir)) { error in
            guard case .badIndex = error as? SafeTensorsError else { return XCTFail("\(error)") }
        }
    }

    func testMissingFileAndEmptyDirectory() throws {
        XCTAssertThrowsError(try SafeTensorsFile(path: dir.appendingPathComponent("nope.safetensors").path)) { error in
            guard case .cannotOpen = error as? SafeTensorsError else { return XCTFail("\(error)") }
        }
        XCTAssertThrowsError(try SafeTensorsCheckpoint(directory: dir)) { error in
            guard case .cannotOpen = error as? SafeTensorsError else { return XCTFail("\(error)") }
        }
    }
}
