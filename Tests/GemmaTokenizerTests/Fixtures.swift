import Foundation
import XCTest

@testable import GemmaTokenizer

/// Reference data written by `tools/reference/make_fixtures.py tokenizer`.
enum Fixtures {
    struct Meta: Decodable {
        let vocab_size_model: Int
        let vocab_size_json: Int
        let image_id: Int32
        let bos: Int32
        let eos: Int32
        let pad: Int32
        let unk: Int32
    }

    struct Case: Decodable {
        let text: String
        let ids: [Int32]
        /// sentencepiece's own ids, only where they differ from the Hugging Face reference.
        let sp_ids: [Int32]?
        /// Reference decode(skip_special_tokens=True) where it differs from `text`.
        let decoded: String?
        /// Reference decode(skip_special_tokens=False) where it differs from `text`.
        let decoded_raw: String?
    }

    struct Cases: Decodable {
        let meta: Meta
        let cases: [Case]
    }

    struct DecodeCase: Decodable {
        let ids: [Int32]
        let decoded: String
        let decoded_raw: String
        let pieces: [String]
    }

    struct Prompt: Decodable {
        let prefix: String
        let suffix: String?
        let image_tokens: Int
        let ids: [Int32]
        let token_types: [Int32]
    }

    static let directory: URL = {
        var url = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        while url.path != "/" {
            let candidate = url.appendingPathComponent("Tests/Fixtures/tokenizer")
            if FileManager.default.fileExists(atPath: candidate.appendingPathComponent("cases.json").path) {
                return candidate
            }
            url.deleteLastPathComponent()
        }
        fatalError("Tests/Fixtures/tokenizer not found above \(#filePath)")
    }()

    static var modelURL: URL { directory.appendingPathComponent("tokenizer.model") }
    static var jsonURL: URL { directory.appendingPathComponent("tokenizer.json") }

    static func load<T: Decodable>(_ name: String, as: T.Type) -> T {
        let data = try! Data(contentsOf: directory.appendingPathComponent(name))
        return try! JSONDecoder().decode(T.self, from: data)
    }

    static let cases = load("cases.json", as: Cases.self)
    static let decodeCases = load("decode_cases.json", as: [DecodeCase].self)
    static let prompts = load("prompts.json", as: [Prompt].self)

    static let fromJSON: GemmaTokenizer = try! GemmaTokenizer(tokenizerJSON: jsonURL)
    static let fromModel: GemmaTokenizer = try! GemmaTokenizer(sentencePieceModel: modelURL)

    /// Both loaders, labelled.
    static var tokenizers: [(String, GemmaTokenizer)] { [("tokenizer.json", fromJSON), ("tokenizer.model", fromModel)] }
}

func show(_ s: String) -> String {
    s.unicodeScalars.map { $0.isASCII && $0.value >= 0x20 && $0.value < 0x7F
        ? String($0) : String(format: "\\u{%X}", $0.value) }.joined()
}
