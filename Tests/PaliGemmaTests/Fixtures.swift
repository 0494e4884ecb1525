import Foundation
import Kernels
import SafeTensors
import XCTest

/// Locates `Tests/Fixtures/<part>` from this source file.
func fixturesDirectory(_ part: String) -> URL {
    URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Fixtures").appendingPathComponent(part)
}

/// max |a − b| / max |b|: the relative error the tolerances are stated in.
func relativeError(_ a: [Float], _ b: [Float], file: StaticString = #filePath, line: UInt = #line) -> Float {
    XCTAssertEqual(a.count, b.count, "length mismatch", file: file, line: line)
    guard a.count == b.count, !b.isEmpty else { return .infinity }
    var maxDiff: Float = 0, maxRef: Float = 0
    for i in b.indices {
        maxDiff = max(maxDiff, abs(a[i] - b[i]))
        maxRef = max(maxRef, abs(b[i]))
    }
    if maxDiff.isNaN { return .infinity }
    return maxRef == 0 ? maxDiff : maxDiff / maxRef
}

/// The recorded reference tensors of one model fixture.
struct ModelReference {
    let file: SafeTensorsFile
    init(_ name: String) throws {
        file = try SafeTensorsFile(path: fixturesDirectory("model").appendingPathComponent(name)
            .appendingPathComponent("reference.safetensors").path)
    }
    func floats(_ name: String) throws -> [Float] { try XCTUnwrap(file.tensors[name], name).floats() }
    func ints(_ name: String) throws -> [Int] { try XCTUnwrap(file.tensors[name], name).integers() }
    func shape(_ name: String) throws -> [Int] { try XCTUnwrap(file.tensors[name], name).shape }
}
