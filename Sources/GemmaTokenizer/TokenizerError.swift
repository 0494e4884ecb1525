import Foundation

/// Why a tokenizer file could not be loaded. Every case names the file and what is wrong;
/// ``description`` adds a hint on how to fix it.
public enum TokenizerError: Error, CustomStringConvertible, Sendable, Equatable {
    /// The directory holds neither `tokenizer.json` nor `tokenizer.model`.
    case noTokenizerFile(directory: String)
    /// The file exists but could not be read.
    case unreadable(file: String, reason: String)
    /// `tokenizer.model` is not a valid SentencePiece ModelProto (bad wire format or truncated).
    case malformedProtobuf(file: String, offset: Int, reason: String)
    /// `tokenizer.json` is not valid JSON or does not have the expected shape.
    case malformedJSON(file: String, reason: String)
    /// A required field is absent.
    case missingField(file: String, field: String)
    /// The vocabulary is inconsistent (duplicate or out-of-range ids, merges naming unknown pieces, …).
    case invalidVocabulary(file: String, reason: String)
    /// The file asks for a feature this tokenizer does not implement (another model type or normaliser).
    case unsupported(file: String, feature: String)

    /// A one-line explanation naming the file, what is wrong and a hint.
    public var description: String {
        switch self {
        case .noTokenizerFile(let directory):
            return "\(directory): no tokenizer.json or tokenizer.model found; "
                + "hint: point at the checkpoint directory that holds the tokenizer files"
        case .unreadable(let file, let reason):
            return "\(file): cannot be read (\(reason)); hint: check the path and its permissions"
        case .malformedProtobuf(let file, let offset, let reason):
            return "\(file): not a valid SentencePiece model at byte \(offset): \(reason); "
                + "hint: the file may be truncated or not a tokenizer.model, download it again"
        case .malformedJSON(let file, let reason):
            return "\(file): not a valid tokenizer.json: \(reason); "
                + "hint: the file may be truncated, download it again or use tokenizer.model"
        case .missingField(let file, let field):
            return "\(file): required field `\(field)` is missing; "
                + "hint: the file is incomplete or not a Gemma tokenizer"
        case .invalidVocabulary(let file, let reason):
            return "\(file): invalid vocabulary: \(reason); hint: the file is corrupt or not a Gemma tokenizer"
        case .unsupported(let file, let feature):
            return "\(file): unsupported tokenizer feature: \(feature); "
                + "hint: only Gemma-style SentencePiece BPE tokenizers (byte fallback, identity normaliser) are supported"
        }
    }
}
