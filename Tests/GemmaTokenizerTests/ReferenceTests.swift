import Foundation
import XCTest

@testable import GemmaTokenizer

/// Compares the Swift tokenizer with the Hugging Face reference recorded in Tests/Fixtures/tokenizer.
final class ReferenceTests: XCTestCase {
    func testSpecialIDs() {
        let meta = Fixtures.cases.meta
        for (name, t) in Fixtures.tokenizers {
            XCTAssertEqual(t.bosID, meta.bos, name)
            XCTAssertEqual(t.eosID, meta.eos, name)
            XCTAssertEqual(t.padID, meta.pad, name)
            XCTAssertEqual(t.unknownID, meta.unk, name)
            XCTAssertEqual(t.imageTokenID, meta.image_id, name)
            XCTAssertEqual(t.vocabularySize, meta.vocab_size_json, name)
            XCTAssertEqual(t.id(for: "<loc0000>"), Int32(meta.vocab_size_model - 1152), name)
            XCTAssertEqual(t.id(for: "<seg127>"), Int32(meta.vocab_size_model - 1), name)
            XCTAssertEqual(t.piece(for: t.imageTokenID), "<image>", name)
            XCTAssertNil(t.piece(for: -1), name)
            XCTAssertNil(t.piece(for: Int32(t.vocabularySize)), name)
            XCTAssertTrue(t.isSpecial(t.bosID) && t.isSpecial(t.imageTokenID), name)
            XCTAssertFalse(t.isSpecial(t.id(for: "<loc0123>")!), name)
        }
    }

    func testLocationTokenNames() {
        XCTAssertTrue(isLocationOrSegmentToken("<loc0000>") && isLocationOrSegmentToken("<seg127>"))
        XCTAssertFalse(isLocationOrSegmentToken("<loc000>") || isLocationOrSegmentToken("<seg12a>")
            || isLocationOrSegmentToken("<image>") || isLocationOrSegmentToken("<loc00000>"))
    }

    func testUTF8Validator() {
        var rng = SplitMix(seed: 3)
        for _ in 0..<20000 {
            let bytes = (0..<Int(rng.next() % 6)).map { _ in UInt8(truncatingIfNeeded: rng.next() | (rng.next() % 3 == 0 ? 0x80 : 0)) }
            let swiftValid = String(decoding: bytes, as: UTF8.self).utf8.elementsEqual(bytes)
            XCTAssertEqual(isValidUTF8(bytes), swiftValid, "\(bytes)")
        }
        XCTAssertFalse(isValidUTF8([0xED, 0xA0, 0x80]))  // surrogate
        XCTAssertFalse(isValidUTF8([0xC0, 0x80]))  // overlong
        XCTAssertFalse(isValidUTF8([0xF4, 0x90, 0x80, 0x80]))  // above U+10FFFF
        XCTAssertTrue(isValidUTF8(Array("é日😀".utf8)))
    }

    func testCorpusSize() {
        XCTAssertGreaterThanOrEqual(Fixtures.cases.cases.count, 2000)
    }

    func testEncodeMatchesReference() {
        for (name, t) in Fixtures.tokenizers {
            var failures = 0
            for c in Fixtures.cases.cases {
                let ids = t.encode(c.text)
                if ids != c.ids {
                    failures += 1
                    if failures <= 10 { XCTFail("\(name): \(show(c.text)): got \(ids), want \(c.ids)") }
                }
            }
            XCTAssertEqual(failures, 0, "\(name): \(failures) of \(Fixtures.cases.cases.count) strings differ")
        }
    }

    func testAddBOS() {
        XCTAssertEqual(Fixtures.fromJSON.encode("hello", addBOS: true), [Fixtures.fromJSON.bosID] + Fixtures.fromJSON.encode("hello"))
        XCTAssertEqual(Fixtures.fromJSON.encode(""), [])
    }

    func testDecodeMatchesReference() {
        for (name, t) in Fixtures.tokenizers {
            var failures = 0
            for c in Fixtures.cases.cases {
                let skip = t.decode(c.ids, skipSpecialTokens: true)
                let raw = t.decode(c.ids, skipSpecialTokens: false)
                if skip != (c.decoded ?? c.text) || raw != (c.decoded_raw ?? c.text) {
                    failures += 1
                    if failures <= 10 { XCTFail("\(name): decode \(c.ids): got \(show(skip)) / \(show(raw))") }
                }
            }
            for c in Fixtures.decodeCases {
                let skip = t.decode(c.ids, skipSpecialTokens: true)
                let raw = t.decode(c.ids, skipSpecialTokens: false)
                if skip != c.decoded || raw != c.decoded_raw {
                    failures += 1
                    if failures <= 10 {
                        XCTFail("\(name): decode \(c.ids): got \(show(skip)) / \(show(raw)), want \(show(c.decoded)) / \(show(c.decoded_raw))")
                    }
                }
            }
            XCTAssertEqual(failures, 0, name)
        }
    }

    func testRoundTripWhereReferenceRoundTrips() {
        var checked = 0
        for (name, t) in Fixtures.tokenizers {
            for c in Fixtures.cases.cases where c.decoded_raw == nil {
                XCTAssertEqual(t.decode(t.encode(c.text), skipSpecialTokens: false), c.text, "\(name): \(show(c.text))")
                checked += 1
            }
        }
        XCTAssertGreaterThan(checked, 4000)
    }

    func testPiecesMatchReference() {
        let t = Fixtures.fromJSON
        for c in Fixtures.decodeCases {
            XCTAssertEqual(t.pieces(for: c.ids).map { $0 ?? "?" }, c.pieces)
        }
        // The SentencePiece model names byte pieces <0xNN> where the export may rename one (tab).
        for c in Fixtures.decodeCases {
            let pieces = Fixtures.fromModel.pieces(for: c.ids).map { $0 ?? "?" }
            for (p, want) in zip(pieces, c.pieces) where p != want {
                XCTAssertEqual(byteValue(ofPiece: p).map { String(UnicodeScalar($0)) }, want)
            }
        }
    }

    func testPromptsMatchProcessor() {
        for (name, t) in Fixtures.tokenizers {
            for p in Fixtures.prompts {
                let prompt = t.paliGemmaPrompt(prefix: p.prefix, imageTokens: p.image_tokens, suffix: p.suffix)
                XCTAssertEqual(prompt.ids, p.ids, "\(name): \(show(p.prefix)) / \(p.suffix.map(show) ?? "nil")")
                XCTAssertEqual(prompt.tokenTypes, p.token_types, "\(name): \(show(p.prefix))")
                XCTAssertEqual(prompt.imageTokenCount, p.image_tokens)
                XCTAssertEqual(prompt.ids.prefix(p.image_tokens + 1).last, t.bosID)
            }
        }
    }

    func testStreamingDecoderEqualsFullDecode() {
        let sequences = Fixtures.decodeCases.map(\.ids) + Fixtures.cases.cases.map(\.ids)
        for (name, t) in Fixtures.tokenizers {
            for skip in [true, false] {
                for ids in sequences {
                    var d = t.streamingDecoder(skipSpecialTokens: skip)
                    var text = ""
                    for id in ids {
                        let chunk = d.append(id)
                        // Each chunk is well-formed text on its own: re-validating its bytes changes nothing.
                        XCTAssertTrue(isValidUTF8(Array(chunk.utf8)))
                        text += chunk
                    }
                    text += d.finish()
                    XCTAssertFalse(d.hasPendingBytes)
                    XCTAssertEqual(text, t.decode(ids, skipSpecialTokens: skip), "\(name) skip=\(skip): \(ids)")
                }
            }
        }
    }

    func testStreamingHoldsByteRuns() {
        let t = Fixtures.fromJSON
        let bytes = Array("😀".utf8).map { t.id(for: String(format: "<0x%02X>", $0))! }
        var d = t.streamingDecoder()
        for id in bytes { XCTAssertEqual(d.append(id), "") }
        XCTAssertTrue(d.hasPendingBytes)
        XCTAssertEqual(d.append(t.id(for: "<loc0001>")!), "😀<loc0001>")
        XCTAssertEqual(d.append(bytes[0]), "")
        XCTAssertEqual(d.finish(), "\u{FFFD}")
    }

    func testLoadDirectoryPrefersJSON() throws {
        let t = try GemmaTokenizer.load(directory: Fixtures.directory)
        XCTAssertEqual(t.encode("hello <loc0001> world"), Fixtures.fromJSON.encode("hello <loc0001> world"))

        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("gemma-tok-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        XCTAssertThrowsError(try GemmaTokenizer.load(directory: dir)) { error in
            guard case TokenizerError.noTokenizerFile = error else { return XCTFail("\(error)") }
        }
        try FileManager.default.copyItem(at: Fixtures.modelURL, to: dir.appendingPathComponent("tokenizer.model"))
        XCTAssertEqual(try GemmaTokenizer.load(directory: dir).encode("caption en"),
                       Fixtures.fromModel.encode("caption en"))
        // A broken tokenizer.json next to a good tokenizer.model: the JSON is the one read.
        try Data("{".utf8).write(to: dir.appendingPathComponent("tokenizer.json"))
        XCTAssertThrowsError(try GemmaTokenizer.load(directory: dir)) { error in
            guard case TokenizerError.malformedJSON(let file, _) = error else { return XCTFail("\(error)") }
            XCTAssertTrue(file.hasSuffix("tokenizer.json"))
        }
    }
}

/// The three merge strategies (heap, compact rescan, independent chunks) must agree exactly.
final class MergeStrategyTests: XCTestCase {
    func testHeapRescanAndChunksAgree() {
        var rng = SplitMix(seed: 7)
        let texts = Fixtures.cases.cases.map(\.text).filter { !$0.isEmpty }
        for (name, t) in Fixtures.tokenizers {
            var w = BPEWorkspace()
            for _ in 0..<150 {
                var s = ""
                while s.unicodeScalars.count < 60 { s += texts[Int(rng.next() % UInt64(texts.count))] }
                let word = s.unicodeScalars.map { $0.value == 0x20 ? 0x2581 : $0.value }
                var heap: [Int32] = [], small: [Int32] = [], chunks: [Int32] = []
                t.bpe(word[...], into: &heap, workspace: &w)  // > 48 scalars: heap
                t.smallBPE(word[...], into: &small, workspace: &w)
                t.bpeInChunks(word[...], into: &chunks, workspace: &w)
                XCTAssertEqual(heap, small, "\(name): \(show(s))")
                XCTAssertEqual(heap, chunks, "\(name): \(show(s))")
            }
        }
    }

    func testLongInputs() {
        let t = Fixtures.fromJSON
        let long = String(repeating: "the quick brown fox 日本語 😀 <loc0001>  \t\n", count: 2000)
        let ids = t.encode(long)
        XCTAssertEqual(t.decode(ids, skipSpecialTokens: false), long)
        let spaces = String(repeating: " ", count: 5000) + String(repeating: "ab", count: 5000)
        XCTAssertEqual(t.decode(t.encode(spaces)), spaces)
    }
}
