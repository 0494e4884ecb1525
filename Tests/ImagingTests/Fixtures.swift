import Foundation
import XCTest
@testable import Imaging

/// Locates and reads Tests/Fixtures/image (written by tools/reference/fixtures_image.py).
enum Fixtures {
    static let root: URL = {
        var dir = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        for _ in 0..<6 {
            let candidate = dir.appendingPathComponent("Fixtures/image")
            if FileManager.default.fileExists(atPath: candidate.appendingPathComponent("manifest.json").path) {
                return candidate
            }
            dir = dir.deletingLastPathComponent()
        }
        return dir.appendingPathComponent("Tests/Fixtures/image")
    }()

    struct Case: Decodable {
        let name: String
        let file: String
        let mode: String
        let width: Int
        let height: Int
        let alpha: Bool
        let exact_decode: Bool
        let decoded_ref: Bool
        let resized: [Int]
        let floats: [Int]
        let aa: [Int]
    }

    struct Manifest: Decodable { let cases: [Case] }

    static func cases() throws -> [Case] {
        let data = try Data(contentsOf: root.appendingPathComponent("manifest.json"))
        return try JSONDecoder().decode(Manifest.self, from: data).cases
    }

    static func url(_ relative: String) -> URL { root.appendingPathComponent(relative) }

    /// A delta-coded uint8 array (see `put` in fixtures_image.py).
    static func bytes(_ name: String, _ kind: String, count: Int) throws -> [UInt8] {
        let data = try Data(contentsOf: url("ref/\(name).\(kind).z"))
        guard var a = Zlib.inflate(data, count: count) else {
            throw NSError(domain: "Fixtures", code: 1, userInfo: [NSLocalizedDescriptionKey: "bad \(name).\(kind)"])
        }
        if a.count > 3 { for i in 3..<a.count { a[i] = a[i] &+ a[i - 3] } }
        return a
    }

    static func floats(_ name: String, _ kind: String, count: Int) throws -> [Float] {
        let data = try Data(contentsOf: url("ref/\(name).\(kind).z"))
        guard let raw = Zlib.inflate(data, count: count * 4) else {
            throw NSError(domain: "Fixtures", code: 1, userInfo: [NSLocalizedDescriptionKey: "bad \(name).\(kind)"])
        }
        return raw.withUnsafeBytes { Array($0.bindMemory(to: Float.self)) }
    }
}

/// Per-image comparison statistics.
struct Diff: CustomStringConvertible {
    var total = 0
    var identical = 0
    var worst = 0

    init(_ a: [UInt8], _ b: [UInt8]) {
        total = min(a.count, b.count)
        for i in 0..<total {
            let d = abs(Int(a[i]) - Int(b[i]))
            if d == 0 { identical += 1 }
            worst = max(worst, d)
        }
    }

    var fraction: Double { total == 0 ? 1 : Double(identical) / Double(total) }
    var description: String { String(format: "%.4f%% identical, worst %d", fraction * 100, worst) }
}
