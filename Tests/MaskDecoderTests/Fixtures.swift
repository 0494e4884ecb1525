import Foundation
import XCTest
@testable import MaskDecoder

/// Tests/Fixtures/segmentation, found by walking up from this file.
let segmentationFixtures: URL = {
    var dir = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
    for _ in 0..<6 {
        let candidate = dir.appendingPathComponent("Tests/Fixtures/segmentation")
        if FileManager.default.fileExists(atPath: candidate.path) { return candidate }
        let sibling = dir.appendingPathComponent("Fixtures/segmentation")
        if FileManager.default.fileExists(atPath: sibling.path) { return sibling }
        dir.deleteLastPathComponent()
    }
    return URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("Fixtures/segmentation")
}()

func fixture(_ name: String) -> URL { segmentationFixtures.appendingPathComponent(name) }

/// Asserts that `body` throws an error for which `matches` is true.
func assertThrows<T>(_ body: @autoclosure () throws -> T, file: StaticString = #filePath, line: UInt = #line,
                     _ matches: (Error) -> Bool) {
    do {
        _ = try body()
        XCTFail("expected an error", file: file, line: line)
    } catch {
        XCTAssertTrue(matches(error), "unexpected error: \(error)", file: file, line: line)
    }
}

/// A `.npy` file built by hand.
func npyFile(header: String, payload: [UInt8], version: UInt8 = 1) -> Data {
    var h = Array(header.utf8)
    let prefix = version == 1 ? 10 : 12
    while (prefix + h.count + 1) % 64 != 0 { h.append(0x20) }
    h.append(0x0A)
    var d: [UInt8] = [0x93, 0x4E, 0x55, 0x4D, 0x50, 0x59, version, 0]
    if version == 1 {
        d += [UInt8(h.count & 0xFF), UInt8(h.count >> 8)]
    } else {
        d += [UInt8(h.count & 0xFF), UInt8((h.count >> 8) & 0xFF), 0, 0]
    }
    return Data(d + h + payload)
}

func bytes<T>(_ values: [T]) -> [UInt8] { values.withUnsafeBytes { Array($0) } }
