import ArgumentParser
import Foundation
import GemmaTokenizer

struct Tokenize: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Show the token ids and pieces of a text: the first tool to reach for when an output looks wrong.",
        discussion: """
        Examples:
          paligemma tokenize "caption en"
          paligemma tokenize --prompt "detect cat"        # the full model input, with <image> and <bos>
          paligemma tokenize --decode 2 1040 5 --json
        """)

    @OptionGroup var model: ModelOptions
    @Argument(help: "Text to encode.") var text: String?
    @Flag(help: "Build the whole PaliGemma prompt (image tokens, <bos>, text, newline) with token types.") var prompt = false
    @Option(parsing: .upToNextOption, help: "Decode these ids instead.") var decode: [Int32] = []
    @Flag(help: "Print JSON.") var json = false

    func run() throws {
        try wrap {
            let directory = try model.resolveDirectory()
            let tokenizer = try GemmaTokenizer.load(directory: directory)
            if !decode.isEmpty {
                let text = tokenizer.decode(decode, skipSpecialTokens: false)
                if json {
                    let object: [String: Any] = ["ids": decode.map(Int.init), "text": text,
                                                 "pieces": decode.map { tokenizer.piece(for: $0) ?? "?" }]
                    print(String(decoding: try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys]), as: UTF8.self))
                } else {
                    print(text)
                }
                return
            }
            guard let text else { throw ValidationError("give a text to encode, or --decode IDS") }
            var ids: [Int32]
            var types: [Int32]? = nil
            if prompt {
                let config = try? JSONSerialization.jsonObject(with: Data(contentsOf: directory.appendingPathComponent("config.json"))) as? [String: Any]
                let vision = config?["vision_config"] as? [String: Any]
                let size = vision?["image_size"] as? Int ?? 224, patch = vision?["patch_size"] as? Int ?? 14
                let p = tokenizer.paliGemmaPrompt(prefix: text, imageTokens: (size / patch) * (size / patch))
                ids = p.ids
                types = p.tokenTypes
            } else {
                ids = tokenizer.encode(text)
            }
            let pieces = ids.map { tokenizer.piece(for: $0) ?? "?" }
            if json {
                var object: [String: Any] = ["ids": ids.map(Int.init), "pieces": pieces, "count": ids.count]
                if let types { object["token_types"] = types.map(Int.init) }
                print(String(decoding: try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys]), as: UTF8.self))
            } else {
                print("\(ids.count) tokens")
                var i = 0
                while i < ids.count {
                    // Collapse the run of <image> tokens into one line.
                    var j = i
                    while j + 1 < ids.count, ids[j + 1] == ids[i], pieces[i] == "<image>" { j += 1 }
                    let typeText = types.map { "  type \($0[i])" } ?? ""
                    if j > i {
                        print(String(format: "%6d  %@ × %d%@", ids[i], pieces[i] as NSString, j - i + 1, typeText as NSString))
                    } else {
                        print(String(format: "%6d  %@%@", ids[i], pieces[i].debugDescription as NSString, typeText as NSString))
                    }
                    i = j + 1
                }
            }
        }
    }
}
