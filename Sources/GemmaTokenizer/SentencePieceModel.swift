import Foundation

/// A minimal protobuf wire-format reader; every read is bounds-checked and throws on bad input.
struct ProtobufReader {
    struct Failure: Error { let offset: Int; let reason: String }

    let bytes: [UInt8]
    private(set) var position: Int
    let end: Int

    init(_ bytes: [UInt8], range: Range<Int>? = nil) {
        self.bytes = bytes
        position = range?.lowerBound ?? 0
        end = range?.upperBound ?? bytes.count
    }

    var isAtEnd: Bool { position >= end }

    mutating func varint() throws -> UInt64 {
        var value: UInt64 = 0
        var shift: UInt64 = 0
        let start = position
        while true {
            guard position < end else { throw Failure(offset: start, reason: "truncated varint") }
            let byte = bytes[position]
            position += 1
            if shift == 63 && byte > 1 { throw Failure(offset: start, reason: "varint overflows 64 bits") }
            value |= UInt64(byte & 0x7F) << shift
            if byte & 0x80 == 0 { return value }
            shift += 7
            if shift > 63 { throw Failure(offset: start, reason: "varint longer than 10 bytes") }
        }
    }

    /// Reads a field key; returns (field number, wire type).
    mutating func key() throws -> (field: UInt64, wire: UInt8) {
        let start = position
        let k = try varint()
        let field = k >> 3
        guard field > 0 else { throw Failure(offset: start, reason: "field number 0") }
        return (field, UInt8(k & 7))
    }

    mutating func lengthDelimited() throws -> Range<Int> {
        let start = position
        let n = try varint()
        guard n <= UInt64(end - position) else {
            throw Failure(offset: start, reason: "length \(n) runs past the end of the data")
        }
        let r = position..<(position + Int(n))
        position += Int(n)
        return r
    }

    mutating func fixed32() throws -> UInt32 {
        guard end - position >= 4 else { throw Failure(offset: position, reason: "truncated fixed32") }
        var v: UInt32 = 0
        for i in 0..<4 { v |= UInt32(bytes[position + i]) << (8 * UInt32(i)) }
        position += 4
        return v
    }

    mutating func skip(wire: UInt8) throws {
        switch wire {
        case 0: _ = try varint()
        case 1:
            guard end - position >= 8 else { throw Failure(offset: position, reason: "truncated fixed64") }
            position += 8
        case 2: _ = try lengthDelimited()
        case 5: _ = try fixed32()
        default: throw Failure(offset: position, reason: "unsupported wire type \(wire)")
        }
    }

    func string(_ r: Range<Int>) throws -> String {
        guard isValidUTF8(bytes[r]) else {
            throw Failure(offset: r.lowerBound, reason: "string is not valid UTF-8")
        }
        return String(decoding: bytes[r], as: UTF8.self)
    }

    /// Reads a varint field after checking its wire type.
    mutating func expectVarint(_ wire: UInt8) throws -> UInt64 {
        guard wire == 0 else { throw Failure(offset: position, reason: "expected a varint, found wire type \(wire)") }
        return try varint()
    }
}

/// The parts of a SentencePiece ModelProto the tokenizer needs.
struct SentencePieceProto {
    enum PieceType: Int { case normal = 1, unknown = 2, control = 3, userDefined = 4, unused = 5, byte = 6 }
    struct Piece { var piece: String; var score: Float; var type: PieceType }

    var pieces: [Piece] = []
    var modelType: Int = 1  // UNIGRAM is the proto default
    var byteFallback = false
    var splitDigits = false
    var treatWhitespaceAsSuffix = false
    var unkID: Int64 = 0, bosID: Int64 = 1, eosID: Int64 = 2, padID: Int64 = -1
    var normalizerName = "nmt_nfkc"
    var precompiledCharsmapSize = 0
    var addDummyPrefix = true
    var removeExtraWhitespaces = true
    var escapeWhitespaces = true

    init(bytes: [UInt8]) throws {
        var r = ProtobufReader(bytes)
        var sawTrainer = false, sawNormalizer = false
        while !r.isAtEnd {
            let (field, wire) = try r.key()
            switch (field, wire) {
            case (1, 2): pieces.append(try Self.piece(bytes, try r.lengthDelimited()))
            case (2, 2): sawTrainer = true; try trainer(bytes, try r.lengthDelimited())
            case (3, 2): sawNormalizer = true; try normalizer(bytes, try r.lengthDelimited())
            default: try r.skip(wire: wire)
            }
        }
        _ = (sawTrainer, sawNormalizer)
    }

    private static func piece(_ bytes: [UInt8], _ range: Range<Int>) throws -> Piece {
        var r = ProtobufReader(bytes, range: range)
        var p = Piece(piece: "", score: 0, type: .normal)
        var sawPiece = false
        while !r.isAtEnd {
            let (field, wire) = try r.key()
            switch field {
            case 1 where wire == 2: p.piece = try r.string(try r.lengthDelimited()); sawPiece = true
            case 2 where wire == 5:
                let f = Float(bitPattern: try r.fixed32())
                p.score = f.isNaN ? -.infinity : f
            case 3:
                let raw = try r.expectVarint(wire)
                guard raw <= 6, let t = PieceType(rawValue: Int(raw)) else {
                    throw ProtobufReader.Failure(offset: r.position, reason: "unknown piece type \(raw)")
                }
                p.type = t
            default: try r.skip(wire: wire)
            }
        }
        guard sawPiece else { throw ProtobufReader.Failure(offset: range.lowerBound, reason: "piece without text") }
        return p
    }

    private static func int32(_ v: UInt64) -> Int64 { Int64(Int32(truncatingIfNeeded: v)) }

    private mutating func trainer(_ bytes: [UInt8], _ range: Range<Int>) throws {
        var r = ProtobufReader(bytes, range: range)
        while !r.isAtEnd {
            let (field, wire) = try r.key()
            switch field {
            case 3: modelType = Int(truncatingIfNeeded: try r.expectVarint(wire))
            case 24: treatWhitespaceAsSuffix = try r.expectVarint(wire) != 0
            case 25: splitDigits = try r.expectVarint(wire) != 0
            case 35: byteFallback = try r.expectVarint(wire) != 0
            case 40: unkID = Self.int32(try r.expectVarint(wire))
            case 41: bosID = Self.int32(try r.expectVarint(wire))
            case 42: eosID = Self.int32(try r.expectVarint(wire))
            case 43: padID = Self.int32(try r.expectVarint(wire))
            default: try r.skip(wire: wire)
            }
        }
    }

    private mutating func normalizer(_ bytes: [UInt8], _ range: Range<Int>) throws {
        var r = ProtobufReader(bytes, range: range)
        while !r.isAtEnd {
            let (field, wire) = try r.key()
            switch (field, wire) {
            case (1, 2): normalizerName = try r.string(try r.lengthDelimited())
            case (2, 2): precompiledCharsmapSize = try r.lengthDelimited().count
            case (3, _): addDummyPrefix = try r.expectVarint(wire) != 0
            case (4, _): removeExtraWhitespaces = try r.expectVarint(wire) != 0
            case (5, _): escapeWhitespaces = try r.expectVarint(wire) != 0
            default: try r.skip(wire: wire)
            }
        }
    }
}

extension TokenizerModel {
    /// Builds the model from a SentencePiece `tokenizer.model`, matching what Hugging Face's Gemma
    /// converter and `PaliGemmaProcessor` make of it: control, unknown and user-defined pieces are matched
    /// whole inside the text, and `<image>` is appended as a special token when the model lacks it.
    init(sentencePiece bytes: [UInt8], file: String) throws {
        let proto: SentencePieceProto
        do {
            proto = try SentencePieceProto(bytes: bytes)
        } catch let f as ProtobufReader.Failure {
            throw TokenizerError.malformedProtobuf(file: file, offset: f.offset, reason: f.reason)
        }
        guard !proto.pieces.isEmpty else { throw TokenizerError.missingField(file: file, field: "pieces") }
        guard proto.modelType == 2 else {
            throw TokenizerError.unsupported(
                file: file, feature: "model_type \(proto.modelType) (only BPE = 2 is supported)")
        }
        guard proto.normalizerName == "identity" || proto.precompiledCharsmapSize == 0 else {
            throw TokenizerError.unsupported(file: file, feature: "normalizer `\(proto.normalizerName)`")
        }
        guard !proto.treatWhitespaceAsSuffix else {
            throw TokenizerError.unsupported(file: file, feature: "treat_whitespace_as_suffix")
        }
        guard proto.pieces.count < Int(Int32.max) - 1 else {
            throw TokenizerError.invalidVocabulary(file: file, reason: "too many pieces")
        }

        var pieces: [String?] = []
        var special: [Bool] = []
        var lookup: [String: Int32] = [:]
        var added: [String: Int32] = [:]
        var scalarIDs: [UInt32: Int32] = [:]
        var targets: [(piece: String, id: Int32, score: Float)] = []
        pieces.reserveCapacity(proto.pieces.count + 1)
        for (i, p) in proto.pieces.enumerated() {
            let id = Int32(i)
            guard !p.piece.isEmpty else {
                throw TokenizerError.invalidVocabulary(file: file, reason: "piece \(i) is empty")
            }
            guard lookup[p.piece] == nil else {
                throw TokenizerError.invalidVocabulary(file: file, reason: "piece `\(p.piece)` appears twice")
            }
            lookup[p.piece] = id
            pieces.append(p.piece)
            // <locDDDD>/<segDDD> stay in decoded text whatever their piece type (the processor adds them
            // as ordinary added tokens), so task parsers can read them.
            special.append((p.type == .control || p.type == .unknown) && !isLocationOrSegmentToken(p.piece))
            switch p.type {
            case .control, .unknown:
                added[p.piece] = id
            case .userDefined:
                added[p.piece] = id
                targets.append((p.piece, id, p.score))
            case .normal:
                targets.append((p.piece, id, p.score))
            case .unused, .byte:
                break
            }
            if p.type == .normal || p.type == .userDefined {
                let scalars = p.piece.unicodeScalars
                if scalars.count == 1, let s = scalars.first { scalarIDs[s.value] = id }
            }
        }
        if lookup["<image>"] == nil {
            let id = Int32(pieces.count)
            pieces.append("<image>"); special.append(true)
            lookup["<image>"] = id; added["<image>"] = id
        }
        let unk = proto.unkID
        self.pieces = pieces
        self.isSpecial = special
        self.addedTokens = added
        self.scalarIDs = scalarIDs
        self.merges = scoreRankedMerges(
            targets: targets, lookup: Dictionary(uniqueKeysWithValues: targets.map { ($0.piece, $0.id) }))
        self.byteFallback = proto.byteFallback
        self.unkID = unk >= 0 && unk < Int64(proto.pieces.count) ? Int32(unk) : nil
        self.vocabLookup = lookup
        var norm = Normalization()
        if proto.escapeWhitespaces { norm.replacements = [(from: [0x20], to: [0x2581])] }
        if proto.addDummyPrefix { norm.prependAtTextStart = [proto.escapeWhitespaces ? 0x2581 : 0x20] }
        if proto.removeExtraWhitespaces {
            throw TokenizerError.unsupported(file: file, feature: "remove_extra_whitespaces")
        }
        self.normalization = norm
    }
}

/// Whether a piece is one of PaliGemma's `<locDDDD>` or `<segDDD>` tokens.
func isLocationOrSegmentToken(_ piece: String) -> Bool {
    let u = Array(piece.utf8)
    func digits(_ r: Range<Int>) -> Bool { r.allSatisfy { u[$0] >= 0x30 && u[$0] <= 0x39 } }
    if u.count == 9, piece.hasPrefix("<loc"), u[8] == 0x3E { return digits(4..<8) }
    if u.count == 8, piece.hasPrefix("<seg"), u[7] == 0x3E { return digits(4..<7) }
    return false
}
