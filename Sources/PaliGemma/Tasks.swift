import Foundation

/// The prompts PaliGemma checkpoints were trained on.
public enum PaliGemmaTask: Sendable, Equatable {
    /// `caption {lang}`: a short caption.
    case caption(language: String)
    /// `describe {lang}`: a longer description (pre-trained and docci checkpoints).
    case describe(language: String)
    /// `answer {lang} {question}`: visual question answering.
    case answer(question: String, language: String)
    /// `question {lang} {answer}`: a question whose answer is given.
    case question(answer: String, language: String)
    /// `ocr`: the text in the image.
    case ocr
    /// `detect a ; b`: boxes for the named things.
    case detect(objects: [String])
    /// `segment x`: a box and a mask for the named thing.
    case segment(object: String)
    /// Any prompt, sent as is.
    case free(String)

    /// The prompt text the model expects.
    public var prompt: String {
        switch self {
        case let .caption(lang): return "caption \(lang)"
        case let .describe(lang): return "describe \(lang)"
        case let .answer(q, lang): return "answer \(lang) \(q)"
        case let .question(a, lang): return "question \(lang) \(a)"
        case .ocr: return "ocr"
        case let .detect(objects): return "detect " + objects.map { $0.trimmingCharacters(in: .whitespaces) }.joined(separator: " ; ")
        case let .segment(object): return "segment \(object.trimmingCharacters(in: .whitespaces))"
        case let .free(text): return text
        }
    }
}

/// A box in the original image's pixel coordinates, with the model's raw location bins.
public struct DetectedObject: Codable, Sendable, Equatable {
    public var label: String
    public var x0: Double, y0: Double, x1: Double, y1: Double
    /// The four `<locNNNN>` values as emitted: y0, x0, y1, x1 in 0…1023.
    public var bins: [Int]
    /// For segmentation: the 16 `<segNNN>` codes (4×4, row-major), else nil.
    public var segmentationCodes: [Int]?

    enum CodingKeys: String, CodingKey {
        case label, x0, y0, x1, y1, bins, segmentationCodes = "segmentation_codes"
    }
}

/// Reads boxes (and mask codes) out of model text such as
/// `<loc0100><loc0200><loc0500><loc0600> cat ; <loc…>… dog`.
///
/// Robust to what a model may really emit: objects with fewer than four locations, junk between
/// objects, missing labels or separators. What cannot be parsed is skipped, never fatal.
public enum LocationParser {
    enum Token: Equatable { case loc(Int), seg(Int), text(String) }

    /// Splits text into `<locNNNN>`, `<segNNN>` and plain-text runs.
    static func tokens(_ text: String) -> [Token] {
        var out: [Token] = []
        var rest = Substring(text)
        var plain = ""
        func flush() {
            if !plain.isEmpty { out.append(.text(plain)) }
            plain = ""
        }
        while !rest.isEmpty {
            if rest.hasPrefix("<loc"), rest.count >= 9, let v = Int(rest.dropFirst(4).prefix(4)),
               rest.dropFirst(8).first == ">", rest.dropFirst(4).prefix(4).allSatisfy(\.isNumber) {
                flush()
                out.append(.loc(v))
                rest = rest.dropFirst(9)
            } else if rest.hasPrefix("<seg"), rest.count >= 8, let v = Int(rest.dropFirst(4).prefix(3)),
                      rest.dropFirst(7).first == ">", rest.dropFirst(4).prefix(3).allSatisfy(\.isNumber) {
                flush()
                out.append(.seg(v))
                rest = rest.dropFirst(8)
            } else {
                plain.append(rest.removeFirst())
            }
        }
        flush()
        return out
    }

    /// Parses objects. Locations are bins of the square model input; `bin / 1023` (the
    /// training encoding, `round(coordinate × 1023)`) scales them to the original image size.
    /// Whitespace between `<loc>`/`<seg>` tokens is allowed (as Google's demo parser allows it).
    /// A box whose y1 ≤ y0 or x1 ≤ x0 is invalid (as big_vision's evaluator treats it) and left
    /// out, never swapped into shape.
    /// - Parameter requireSegmentation: keep only objects followed by 16 `<seg>` codes.
    public static func parse(_ text: String, imageWidth: Int, imageHeight: Int,
                             requireSegmentation: Bool = false) -> [DetectedObject] {
        parseReport(text, imageWidth: imageWidth, imageHeight: imageHeight, requireSegmentation: requireSegmentation).objects
    }

    /// `parse`, also counting the boxes left out as inverted or empty.
    public static func parseReport(_ text: String, imageWidth: Int, imageHeight: Int,
                                   requireSegmentation: Bool = false) -> (objects: [DetectedObject], invalidBoxes: Int) {
        let toks = tokens(text)
        func isSpace(_ t: Token) -> Bool {
            if case let .text(s) = t { return s.allSatisfy(\.isWhitespace) }
            return false
        }
        var objects: [DetectedObject] = []
        var invalid = 0
        var i = 0
        while i < toks.count {
            // Find four location tokens in a row (whitespace between them allowed).
            guard case .loc = toks[i] else { i += 1; continue }
            var locs: [Int] = []
            var j = i
            while j < toks.count, locs.count < 4 {
                if case let .loc(v) = toks[j] { locs.append(v); j += 1 }
                else if isSpace(toks[j]), j + 1 < toks.count, case .loc = toks[j + 1] { j += 1 }
                else { break }
            }
            guard locs.count == 4 else { i = j; continue }
            var codes: [Int] = []
            while j < toks.count, codes.count < 16 {
                if case let .seg(v) = toks[j] { codes.append(v); j += 1 }
                else if isSpace(toks[j]), j + 1 < toks.count, case .seg = toks[j + 1] { j += 1 }
                else { break }
            }
            var label = ""
            if j < toks.count, case let .text(t) = toks[j] {
                // The label runs to the object separator.
                label = String(t.split(separator: ";", maxSplits: 1, omittingEmptySubsequences: false).first ?? "")
                    .trimmingCharacters(in: .whitespacesAndNewlines)
                j += 1
            }
            i = j
            if requireSegmentation && codes.count != 16 { continue }
            // <loc> order is y0, x0, y1, x1.
            guard locs[2] > locs[0], locs[3] > locs[1] else { invalid += 1; continue }
            let w = Double(imageWidth), h = Double(imageHeight)
            func scale(_ bin: Int, _ size: Double) -> Double { min(max(Double(bin) / 1023, 0), 1) * size }
            objects.append(DetectedObject(label: label, x0: scale(locs[1], w), y0: scale(locs[0], h),
                                          x1: scale(locs[3], w), y1: scale(locs[2], h),
                                          bins: locs, segmentationCodes: codes.count == 16 ? codes : nil))
        }
        return (objects, invalid)
    }
}
