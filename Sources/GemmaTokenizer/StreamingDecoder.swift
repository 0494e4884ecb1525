/// Decodes ids one at a time, for streaming generated text.
///
/// Each ``append(_:)`` returns only finished text. A run of `<0xNN>` byte pieces is held back until a
/// non-byte token (or ``finish()``) closes it, because the reference decodes a whole run at once (an invalid
/// run becomes one U+FFFD per byte); so the concatenation of everything returned, plus ``finish()``, equals
/// ``GemmaTokenizer/decode(_:skipSpecialTokens:)`` of all ids, and no piece of a UTF-8 sequence is ever
/// returned on its own.
public struct StreamingDecoder: Sendable {
    /// The tokenizer whose vocabulary is decoded.
    public let tokenizer: GemmaTokenizer
    /// Whether control tokens (`<bos>`, `<eos>`, `<image>`, …) are dropped; `<loc>`/`<seg>` are always kept.
    public let skipSpecialTokens: Bool
    private var pendingBytes: [UInt8] = []

    /// Creates a decoder; see also ``GemmaTokenizer/streamingDecoder(skipSpecialTokens:)``.
    public init(tokenizer: GemmaTokenizer, skipSpecialTokens: Bool = true) {
        self.tokenizer = tokenizer
        self.skipSpecialTokens = skipSpecialTokens
    }

    /// Whether byte pieces are held back waiting for the rest of their run.
    public var hasPendingBytes: Bool { !pendingBytes.isEmpty }

    /// Feeds one id; returns the text it completes (often empty while a byte run is open).
    public mutating func append(_ id: Int32) -> String {
        let t = tokenizer
        guard id >= 0, Int(id) < t.decodedPieces.count, t.model.pieces[Int(id)] != nil else { return "" }
        if skipSpecialTokens && t.model.isSpecial[Int(id)] { return "" }
        let b = t.byteValues[Int(id)]
        if b >= 0 {
            pendingBytes.append(UInt8(b))
            return ""
        }
        var out: [UInt8] = []
        if !pendingBytes.isEmpty { GemmaTokenizer.flush(&pendingBytes, into: &out) }
        out.append(contentsOf: t.decodedPieces[Int(id)])
        return String(decoding: out, as: UTF8.self)
    }

    /// Feeds several ids; returns the text they complete.
    public mutating func append(contentsOf ids: [Int32]) -> String {
        var s = ""
        for id in ids { s += append(id) }
        return s
    }

    /// Ends the stream: returns the text of a byte run still held back and resets the decoder.
    public mutating func finish() -> String {
        guard !pendingBytes.isEmpty else { return "" }
        var out: [UInt8] = []
        GemmaTokenizer.flush(&pendingBytes, into: &out)
        return String(decoding: out, as: UTF8.self)
    }
}
