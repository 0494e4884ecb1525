import Foundation

/// How a word is cut before BPE (Hugging Face pre-tokenizers that Gemma-like files use).
enum SplitStep: Sendable {
    enum Behavior: Sendable { case removed, isolated, mergedWithPrevious, mergedWithNext, contiguous }
    /// Split on every occurrence of a literal scalar sequence.
    case literal(pattern: [UInt32], behavior: Behavior)
    /// Metaspace: replace " " with the replacement, optionally prepend it, optionally split before it.
    case metaspace(replacement: UInt32, prepend: PrependScheme, split: Bool)

    enum PrependScheme: Sendable { case always, first, never }
}

/// Text normalisation applied to every segment between matched added tokens.
struct Normalization: Sendable {
    /// Scalar replacements applied in order (a single scalar replaced by a scalar sequence).
    var replacements: [(from: [UInt32], to: [UInt32])] = []
    /// Prepended to every non-empty segment (Hugging Face `Prepend` normaliser).
    var prependEachSegment: [UInt32] = []
    /// Prepended to the text once, when it starts with ordinary text (SentencePiece `add_dummy_prefix`).
    var prependAtTextStart: [UInt32] = []
    var splitSteps: [SplitStep] = []

    var isGemmaFastPath: Bool {
        replacements.count == 1 && replacements[0].from == [0x20] && replacements[0].to.count == 1
            && prependEachSegment.isEmpty && splitSteps.isEmpty
    }
}

/// Everything the encoder and decoder need, built by one of the loaders.
struct TokenizerModel: Sendable {
    var pieces: [String?]
    /// Whether `decode(skipSpecialTokens: true)` drops the id.
    var isSpecial: [Bool]
    /// Pieces matched whole inside the input text before normalisation, longest first at each position.
    var addedTokens: [String: Int32]
    /// Single-scalar pieces usable as initial BPE symbols.
    var scalarIDs: [UInt32: Int32]
    /// (left id << 32 | right id) → (rank << 32 | merged id); lower rank merges first.
    var merges: [UInt64: UInt64]
    var byteFallback: Bool
    var unkID: Int32?
    var ignoreMerges: Bool = false
    var vocabLookup: [String: Int32]
    var normalization: Normalization
}

extension TokenizerModel {
    /// The id of each `<0xNN>` piece (-1 when missing).
    func byteIDs() -> [Int32] {
        var table = [Int32](repeating: -1, count: 256)
        for b in 0..<256 {
            if let id = vocabLookup[String(format: "<0x%02X>", b)] { table[b] = id }
        }
        return table
    }
}

/// Byte value of a `<0xNN>` piece, as Hugging Face's ByteFallback decoder reads it.
func byteValue(ofPiece piece: String) -> UInt8? {
    let u = Array(piece.utf8)
    guard u.count == 6, u[0] == 0x3C, u[1] == 0x30, u[2] == 0x78, u[5] == 0x3E else { return nil }
    func hex(_ c: UInt8) -> UInt8? {
        switch c {
        case 0x30...0x39: return c - 0x30
        case 0x41...0x46: return c - 0x41 + 10
        case 0x61...0x66: return c - 0x61 + 10
        default: return nil
        }
    }
    guard let hi = hex(u[3]), let lo = hex(u[4]) else { return nil }
    return hi << 4 | lo
}

/// UTF-8 bytes of one scalar value.
@inline(__always)
func appendUTF8(_ v: UInt32, to out: inout [UInt8]) {
    switch v {
    case 0..<0x80: out.append(UInt8(v))
    case 0x80..<0x800:
        out.append(UInt8(0xC0 | (v >> 6))); out.append(UInt8(0x80 | (v & 0x3F)))
    case 0x800..<0x10000:
        out.append(UInt8(0xE0 | (v >> 12))); out.append(UInt8(0x80 | ((v >> 6) & 0x3F)))
        out.append(UInt8(0x80 | (v & 0x3F)))
    default:
        out.append(UInt8(0xF0 | (v >> 18))); out.append(UInt8(0x80 | ((v >> 12) & 0x3F)))
        out.append(UInt8(0x80 | ((v >> 6) & 0x3F))); out.append(UInt8(0x80 | (v & 0x3F)))
    }
}

/// Builds the merge table SentencePiece BPE uses: any two pieces whose concatenation is a piece,
/// ranked by that piece's score (higher first; equal scores share a rank, so the leftmost pair wins).
func scoreRankedMerges(targets: [(piece: String, id: Int32, score: Float)], lookup: [String: Int32])
    -> [UInt64: UInt64]
{
    let distinct = Array(Set(targets.map(\.score))).sorted(by: >)
    var rankOf = [Float: UInt64](minimumCapacity: distinct.count)
    for (i, s) in distinct.enumerated() { rankOf[s] = UInt64(i) }
    var merges = [UInt64: UInt64](minimumCapacity: targets.count * 2)
    for t in targets {
        let view = t.piece.unicodeScalars
        guard view.count >= 2 else { continue }
        let rank = rankOf[t.score] ?? 0
        var cut = view.index(after: view.startIndex)
        while cut < view.endIndex {
            defer { cut = view.index(after: cut) }
            guard let l = lookup[String(view[..<cut])], let r = lookup[String(view[cut...])] else { continue }
            let key = UInt64(UInt32(bitPattern: l)) << 32 | UInt64(UInt32(bitPattern: r))
            let value = rank << 32 | UInt64(UInt32(bitPattern: t.id))
            if let old = merges[key], old <= value { continue }
            merges[key] = value
        }
    }
    return merges
}

/// An open-addressing hash map from (left id, right id) to (rank << 32 | merged id), faster than
/// `Dictionary` on the encoder's hot path.
struct MergeTable: Sendable {
    private var keys: [UInt64]
    private var values: [UInt64]
    private let mask: Int
    private let shift: UInt64
    let isEmpty: Bool
    private static let empty = UInt64.max

    init(_ merges: [UInt64: UInt64]) {
        var capacity = 16
        var bits: UInt64 = 4
        while capacity < merges.count * 2 { capacity <<= 1; bits += 1 }
        keys = [UInt64](repeating: Self.empty, count: capacity)
        values = [UInt64](repeating: 0, count: capacity)
        mask = capacity - 1
        shift = 64 - bits
        isEmpty = merges.isEmpty
        for (k, v) in merges {
            var i = slot(k)
            while keys[i] != Self.empty { i = (i + 1) & mask }
            keys[i] = k
            values[i] = v
        }
    }

    @inline(__always)
    private func slot(_ key: UInt64) -> Int { Int(truncatingIfNeeded: (key &* 0x9E37_79B9_7F4A_7C15) >> shift) }

    @inline(__always)
    func value(left: Int32, right: Int32) -> UInt64? {
        let key = UInt64(UInt32(bitPattern: left)) << 32 | UInt64(UInt32(bitPattern: right))
        return keys.withUnsafeBufferPointer { k in
            var i = slot(key)
            while true {
                let found = k[i]
                if found == key { return values[i] }
                if found == Self.empty { return nil }
                i = (i + 1) & mask
            }
        }
    }
}

/// Whether bytes are well-formed UTF-8 (no overlongs, surrogates or values above U+10FFFF), the same
/// test Rust's `String::from_utf8` applies in the reference decoder. (`String(validating:)` needs macOS 15.)
func isValidUTF8<C: Collection>(_ bytes: C) -> Bool where C.Element == UInt8 {
    var it = bytes.makeIterator()
    while let b0 = it.next() {
        if b0 < 0x80 { continue }
        let need: Int
        var lo: UInt8 = 0x80, hi: UInt8 = 0xBF
        switch b0 {
        case 0xC2...0xDF: need = 1
        case 0xE0: need = 2; lo = 0xA0
        case 0xE1...0xEC, 0xEE...0xEF: need = 2
        case 0xED: need = 2; hi = 0x9F
        case 0xF0: need = 3; lo = 0x90
        case 0xF1...0xF3: need = 3
        case 0xF4: need = 3; hi = 0x8F
        default: return false
        }
        for k in 0..<need {
            guard let b = it.next() else { return false }
            if k == 0 { guard b >= lo && b <= hi else { return false } } else { guard b & 0xC0 == 0x80 else { return false } }
        }
    }
    return true
}
