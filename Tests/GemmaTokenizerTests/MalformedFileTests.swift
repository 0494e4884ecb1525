import Foundation
import XCTest

@testable import GemmaTokenizer

/// Broken tokenizer files must give a typed error naming the file, never a crash.
final class MalformedFileTests: XCTestCase {
    let modelData = try! Data(contentsOf: Fixtures.modelURL)
    let jsonData = try! Data(contentsOf: Fixtures.jsonURL)

    private func assertTokenizerError(
        _ body: @autoclosure () throws -> GemmaTokenizer, name: String, _ message: String,
        file: StaticString = #filePath, line: UInt = #line
    ) {
        XCTAssertThrowsError(try body(), message, file: file, line: line) { error in
            guard let e = error as? TokenizerError else {
                return XCTFail("\(message): not a TokenizerError: \(error)", file: file, line: line)
            }
            XCTAssertTrue(e.description.contains(name), "\(message): \(e.description)", file: file, line: line)
            XCTAssertTrue(e.description.contains("hint"), file: file, line: line)
        }
    }

    func testTruncatedModel() {
        var offsets = Array(stride(from: 0, to: modelData.count, by: 97)) + [1, 2, 3, modelData.count - 1]
        offsets += (1..<40).map { modelData.count - $0 }
        var threw = 0, loaded = 0
        for n in Set(offsets).sorted() {
            do {
                // A cut at a message boundary is a valid, smaller model; anything else must throw.
                let t = try GemmaTokenizer(sentencePieceModelData: modelData.prefix(n), name: "cut.model")
                loaded += 1
                _ = t.decode(t.encode("hello <loc0001> 日本 😀"))
            } catch let e as TokenizerError {
                threw += 1
                XCTAssertTrue(e.description.contains("cut.model"), e.description)
            } catch {
                XCTFail("\(n): \(error)")
            }
        }
        XCTAssertGreaterThan(threw, loaded)
        assertTokenizerError(try GemmaTokenizer(sentencePieceModelData: Data(), name: "empty.model"),
                             name: "empty.model", "empty file")
        assertTokenizerError(try GemmaTokenizer(sentencePieceModelData: modelData.prefix(modelData.count / 2 + 1),
                                                name: "half.model"), name: "half.model", "half file")
    }

    func testGarbageModel() {
        var generator = SplitMix(seed: 42)
        for i in 0..<200 {
            let n = Int(generator.next() % 4096)
            let bytes = (0..<n).map { _ in UInt8(truncatingIfNeeded: generator.next()) }
            do {
                _ = try GemmaTokenizer(sentencePieceModelData: Data(bytes), name: "garbage\(i).model")
            } catch let e as TokenizerError {
                XCTAssertTrue(e.description.contains("garbage\(i).model"))
            } catch {
                XCTFail("\(error)")
            }
        }
        // Flipped bytes inside the real model: errors or a working tokenizer, never a trap.
        for i in 0..<120 {
            var bytes = [UInt8](modelData)
            let at = Int(generator.next() % UInt64(bytes.count))
            bytes[at] = UInt8(truncatingIfNeeded: generator.next())
            if let t = try? GemmaTokenizer(sentencePieceModelData: Data(bytes), name: "flip\(i).model") {
                _ = t.decode(t.encode("hello world <loc0001> ü 😀 12"), skipSpecialTokens: false)
            }
        }
        // A varint that never ends, a length past the end, a group wire type.
        for bad: [UInt8] in [[0x0A, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x01],
                             [0x0A, 0x05, 0x0A], [0x0B], [0x00], [0x0A, 0x00], [0x0A, 0x02, 0x0A, 0xC3]] {
            assertTokenizerError(try GemmaTokenizer(sentencePieceModelData: Data(bad), name: "bad.model"),
                                 name: "bad.model", "\(bad)")
        }
    }

    func testTruncatedJSON() {
        for n in stride(from: 0, to: jsonData.count, by: jsonData.count / 53) + [jsonData.count - 1, jsonData.count - 2] {
            assertTokenizerError(try GemmaTokenizer(tokenizerJSONData: jsonData.prefix(n), name: "cut.json"),
                                 name: "cut.json", "cut at \(n)")
        }
    }

    func testBadJSONShapes() throws {
        var root = try JSONSerialization.jsonObject(with: jsonData) as! [String: Any]
        func check(_ label: String, _ mutate: (inout [String: Any]) -> Void) throws {
            var copy = root
            mutate(&copy)
            let data = try JSONSerialization.data(withJSONObject: copy)
            assertTokenizerError(try GemmaTokenizer(tokenizerJSONData: data, name: "\(label).json"),
                                 name: "\(label).json", label)
        }
        try check("no-model") { $0["model"] = nil }
        try check("model-not-object") { $0["model"] = [1, 2] }
        try check("no-vocab") { r in var m = r["model"] as! [String: Any]; m["vocab"] = nil; r["model"] = m }
        try check("no-merges") { r in var m = r["model"] as! [String: Any]; m["merges"] = nil; r["model"] = m }
        try check("wordpiece") { r in var m = r["model"] as! [String: Any]; m["type"] = "WordPiece"; r["model"] = m }
        try check("bad-merge") { r in
            var m = r["model"] as! [String: Any]; m["merges"] = [["nope", "zzz"]]; r["model"] = m
        }
        try check("bad-merge-string") { r in
            var m = r["model"] as! [String: Any]; m["merges"] = ["nospace"]; r["model"] = m
        }
        try check("bad-id") { r in
            var m = r["model"] as! [String: Any]
            var v = m["vocab"] as! [String: Any]; v["<bos>"] = "two"; m["vocab"] = v; r["model"] = m
        }
        try check("negative-id") { r in
            var m = r["model"] as! [String: Any]
            var v = m["vocab"] as! [String: Any]; v["x"] = -5; m["vocab"] = v; r["model"] = m
        }
        try check("no-bos") { r in
            var m = r["model"] as! [String: Any]
            var v = m["vocab"] as! [String: Any]; v["<bos>"] = nil; m["vocab"] = v; r["model"] = m
            r["added_tokens"] = (r["added_tokens"] as! [[String: Any]]).filter { $0["content"] as? String != "<bos>" }
        }
        try check("regex-normalizer") { $0["normalizer"] = ["type": "Replace", "pattern": ["Regex": " +"], "content": "▁"] }
        try check("nfkc") { $0["normalizer"] = ["type": "NFKC"] }
        try check("added-no-content") { $0["added_tokens"] = [["id": 5]] }
        root["model"] = nil
        for text in ["", "null", "[]", "\"x\"", "{\"model\": 3}", "\u{FEFF}{", "{\"model\":{\"type\":\"BPE\"}}"] {
            assertTokenizerError(try GemmaTokenizer(tokenizerJSONData: Data(text.utf8), name: "tiny.json"),
                                 name: "tiny.json", text)
        }
    }

    func testMissingFiles() {
        let missing = URL(fileURLWithPath: "/nonexistent/dir/tokenizer.model")
        assertTokenizerError(try GemmaTokenizer(sentencePieceModel: missing), name: missing.path, "missing model")
        let missingJSON = URL(fileURLWithPath: "/nonexistent/dir/tokenizer.json")
        assertTokenizerError(try GemmaTokenizer(tokenizerJSON: missingJSON), name: missingJSON.path, "missing json")
    }

    func testOddInputsDoNotTrap() {
        for (_, t) in Fixtures.tokenizers {
            XCTAssertEqual(t.decode([-1, 1_000_000, Int32.max, Int32.min]), "")
            var d = t.streamingDecoder()
            XCTAssertEqual(d.append(-7), "")
            XCTAssertEqual(t.paliGemmaPrompt(prefix: "", imageTokens: -3).ids, [t.bosID] + t.encode("\n"))
            for s in ["<", "<loc", "<loc0001", "<<loc0001>>", String(repeating: "<", count: 1000), "\u{0}"] {
                XCTAssertEqual(t.decode(t.encode(s), skipSpecialTokens: false), s)
            }
        }
    }
}

/// Deterministic random numbers for the fuzz tests.
struct SplitMix: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
