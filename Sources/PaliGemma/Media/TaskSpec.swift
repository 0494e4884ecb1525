import Foundation

extension PaliGemmaTask {
    /// The forms `init(spec:language:)` reads, for help texts and errors.
    public static let specForms = "caption [LANG], describe [LANG], answer QUESTION, question ANSWER, ocr, detect A ; B, segment X"

    /// A task written as one string, the way a user names it on the command line:
    /// `caption`, `caption fr`, `describe`, `answer what color is it?` (also `ask …`),
    /// `question red`, `ocr`, `detect car ; person`, `segment cat`. `language` applies where the
    /// spec names none. Throws `InputError.option` for anything else.
    public init(spec: String, language: String = "en") throws {
        let trimmed = spec.trimmingCharacters(in: .whitespacesAndNewlines)
        let head = trimmed.prefix { !$0.isWhitespace }.lowercased()
        let rest = trimmed.dropFirst(head.count).trimmingCharacters(in: .whitespaces)
        func needsArgument(_ what: String) throws -> String {
            guard !rest.isEmpty else { throw InputError.option("the task `\(head)` needs \(what), as in `\(head) \(what.uppercased())`") }
            return rest
        }
        switch head {
        case "caption", "describe":
            guard !rest.contains(where: \.isWhitespace) else {
                throw InputError.option("`\(head)` takes only a language code (`\(head) fr`), got `\(rest)`")
            }
            let lang = rest.isEmpty ? language : rest
            self = head == "caption" ? .caption(language: lang) : .describe(language: lang)
        case "answer", "ask": self = .answer(question: try needsArgument("a question"), language: language)
        case "question": self = .question(answer: try needsArgument("an answer"), language: language)
        case "ocr":
            guard rest.isEmpty else { throw InputError.option("`ocr` takes nothing after it, got `\(rest)`") }
            self = .ocr
        case "detect":
            let objects = try needsArgument("objects").split(separator: ";").map(String.init)
                .filter { !$0.trimmingCharacters(in: .whitespaces).isEmpty }
            self = .detect(objects: objects)
        case "segment": self = .segment(object: try needsArgument("an object"))
        default:
            throw InputError.option("unknown task `\(trimmed)`; use one of: \(Self.specForms) (or give a raw prompt)")
        }
    }
}
