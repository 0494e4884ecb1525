import Foundation

/// The Gemma SentencePiece tokenizer as PaliGemma 2 uses it, loaded from `tokenizer.json` (Hugging Face)
/// or `tokenizer.model` (SentencePiece ModelProto), encoding exactly like the transformers tokenizer that
/// `PaliGemmaProcessor` drives: BPE merges with byte fallback, spaces as `▁` without a dummy prefix, and the
/// added tokens (`<bos>`, `<eos>`, `<image>`, `<locDDDD>`, `<segDDD>`, …) matched whole inside the text.
///
/// Instances are immutable and safe to share between threads.
public final class GemmaTokenizer: Sendable {
    let model: TokenizerModel
    /// Initial-symbol ids for scalars below U+10000 (-1: not a piece).
    let bmpIDs: [Int32]
    /// `<0xNN>` piece id for each byte (-1: missing).
    let byteIDTable: [Int32]
    /// Byte value of each id that is a `<0xNN>` piece, else -1.
    let byteValues: [Int16]
    /// UTF-8 text each id decodes to (with `▁` replaced by a space).
    let decodedPieces: [[UInt8]]
    let trie: AddedTokenTrie
    let mergeTable: MergeTable
    let joinableScalars: MergeTable

    /// The id of `<bos>`, which starts every PaliGemma prompt.
    public let bosID: Int32
    /// The id of `<eos>`, which ends generation and every suffix.
    public let eosID: Int32
    /// The id of `<pad>`.
    public let padID: Int32
    /// The id of `<image>`, the placeholder for one image embedding. When the file lacks it, it is appended
    /// right after the vocabulary, as `PaliGemmaProcessor` does, so it is always present.
    public let imageTokenID: Int32
    /// The id of `<unk>`, if the vocabulary has one.
    public let unknownID: Int32?

    // MARK: Loading

    /// Loads the tokenizer from a checkpoint directory, preferring `tokenizer.json`, then
    /// `tokenizer.model`, then `paligemma_tokenizer.model` or the folder's only `*.model` file.
    /// - Throws: ``TokenizerError`` naming the file when neither exists or the file is malformed.
    public static func load(directory: URL) throws -> GemmaTokenizer {
        let fm = FileManager.default
        let json = directory.appendingPathComponent("tokenizer.json")
        if fm.fileExists(atPath: json.path) { return try GemmaTokenizer(tokenizerJSON: json) }
        let spm = directory.appendingPathComponent("tokenizer.model")
        if fm.fileExists(atPath: spm.path) { return try GemmaTokenizer(sentencePieceModel: spm) }
        // Beside a big_vision tree: `paligemma_tokenizer.model` as Google ships it, or the folder's
        // one SentencePiece model under another name.
        let models = ((try? fm.contentsOfDirectory(atPath: directory.path)) ?? []).filter { $0.hasSuffix(".model") }.sorted()
        if let name = models.first(where: { $0 == "paligemma_tokenizer.model" }) ?? (models.count == 1 ? models.first : nil) {
            return try GemmaTokenizer(sentencePieceModel: directory.appendingPathComponent(name))
        }
        throw TokenizerError.noTokenizerFile(directory: directory.path)
    }

    /// Loads a Hugging Face `tokenizer.json`.
    /// - Throws: ``TokenizerError`` naming the file when it cannot be read or is malformed.
    public convenience init(tokenizerJSON url: URL) throws {
        let data = try Self.read(url)
        try self.init(model: TokenizerModel(json: data, file: url.path), file: url.path)
    }

    /// Loads a SentencePiece `tokenizer.model` (a serialized ModelProto).
    /// - Throws: ``TokenizerError`` naming the file when it cannot be read or is malformed.
    public convenience init(sentencePieceModel url: URL) throws {
        let data = try Self.read(url)
        try self.init(model: TokenizerModel(sentencePiece: [UInt8](data), file: url.path), file: url.path)
    }

    /// Parses a `tokenizer.json` already in memory; `name` labels errors.
    public convenience init(tokenizerJSONData data: Data, name: String = "tokenizer.json") throws {
        try self.init(model: TokenizerModel(json: data, file: name), file: name)
    }

    /// Parses a SentencePiece `tokenizer.model` already in memory; `name` labels errors.
    public convenience init(sentencePieceModelData data: Data, name: String = "tokenizer.model") throws {
        try self.init(model: TokenizerModel(sentencePiece: [UInt8](data), file: name), file: name)
    }

    private static func read(_ url: URL) throws -> Data {
        do {
            return try Data(contentsOf: url)
        } catch {
            throw TokenizerError.unreadable(file: url.path, reason: error.localizedDescription)
        }
    }

    init(model: TokenizerModel, file: String) throws {
        self.model = model
        var bmp = [Int32](repeating: -1, count: 0x10000)
        for (s, id) in model.scalarIDs where s < 0x10000 { bmp[Int(s)] = id }
        bmpIDs = bmp
        byteIDTable = model.byteIDs()
        var values = [Int16](repeating: -1, count: model.pieces.count)
        var decoded = [[UInt8]](repeating: [], count: model.pieces.count)
        for (i, p) in model.pieces.enumerated() {
            guard let p else { continue }
            if let b = byteValue(ofPiece: p) { values[i] = Int16(b) }
            decoded[i] = Array(p.replacingOccurrences(of: "\u{2581}", with: " ").utf8)
        }
        byteValues = values
        decodedPieces = decoded
        trie = AddedTokenTrie(model.addedTokens)
        mergeTable = MergeTable(model.merges)
        // Scalar pairs that some merge could join; text splits into independent chunks everywhere else.
        var joinable: [UInt64: UInt64] = [:]
        for key in model.merges.keys {
            let l = Int(key >> 32), r = Int(key & 0xFFFF_FFFF)
            guard l < model.pieces.count, r < model.pieces.count,
                let a = model.pieces[l]?.unicodeScalars.last, let b = model.pieces[r]?.unicodeScalars.first
            else { continue }
            joinable[UInt64(a.value) << 32 | UInt64(b.value)] = 1
        }
        joinableScalars = MergeTable(joinable)
        func required(_ piece: String) throws -> Int32 {
            guard let id = model.vocabLookup[piece] else {
                throw TokenizerError.missingField(file: file, field: "piece \(piece)")
            }
            return id
        }
        bosID = try required("<bos>")
        eosID = try required("<eos>")
        padID = try required("<pad>")
        imageTokenID = try required("<image>")
        unknownID = model.unkID
    }

    // MARK: Vocabulary

    /// Number of ids, including added tokens such as `<image>`.
    public var vocabularySize: Int { model.pieces.count }

    /// The piece (token string) of an id, or `nil` when the id is out of range or unassigned.
    public func piece(for id: Int32) -> String? {
        guard id >= 0, Int(id) < model.pieces.count else { return nil }
        return model.pieces[Int(id)]
    }

    /// The pieces of several ids (`nil` for unknown ids).
    public func pieces(for ids: [Int32]) -> [String?] { ids.map { piece(for: $0) } }

    /// The id of a piece or added token, or `nil` when the vocabulary lacks it.
    public func id(for piece: String) -> Int32? { model.vocabLookup[piece] }

    /// Whether `decode(_:skipSpecialTokens: true)` drops this id (control tokens such as `<bos>`, `<eos>`,
    /// `<pad>`, `<image>`; never `<locDDDD>` / `<segDDD>`).
    public func isSpecial(_ id: Int32) -> Bool {
        id >= 0 && Int(id) < model.isSpecial.count && model.isSpecial[Int(id)]
    }

    // MARK: Encoding

    /// Encodes text to ids without adding `<bos>`/`<eos>` (like `tokenizer(text, add_special_tokens=False)`).
    /// Added tokens written in the text (`<bos>`, `<image>`, `<loc0123>`, …) become their ids.
    /// - Parameter addBOS: prepend `<bos>`.
    public func encode(_ text: String, addBOS: Bool = false) -> [Int32] {
        var out: [Int32] = []
        out.reserveCapacity(text.utf8.count / 3 + 2)
        if addBOS { out.append(bosID) }
        var workspace = BPEWorkspace()
        var words: [UInt32] = []
        var text = text
        text.withUTF8 { bytes in
            var segmentStart = 0
            var i = 0
            let n = bytes.count
            while i < n {
                if trie.startsMatch[Int(bytes[i])], let (id, end) = trie.longestMatch(bytes, from: i) {
                    if segmentStart < i {
                        encodeSegment(bytes, segmentStart..<i, atTextStart: segmentStart == 0, &out, &workspace, &words)
                    }
                    out.append(id)
                    i = end
                    segmentStart = end
                } else {
                    i += 1
                }
            }
            if segmentStart < n {
                encodeSegment(bytes, segmentStart..<n, atTextStart: segmentStart == 0, &out, &workspace, &words)
            }
        }
        return out
    }

    private func encodeSegment(
        _ bytes: UnsafeBufferPointer<UInt8>, _ range: Range<Int>, atTextStart: Bool,
        _ out: inout [Int32], _ w: inout BPEWorkspace, _ scalars: inout [UInt32]
    ) {
        scalars.removeAll(keepingCapacity: true)
        let norm = model.normalization
        if atTextStart { scalars.append(contentsOf: norm.prependAtTextStart) }
        let fast = norm.isGemmaFastPath
        let spaceTo = fast ? norm.replacements[0].to[0] : 0x20
        var i = range.lowerBound
        while i < range.upperBound {
            let b0 = UInt32(bytes[i])
            var v: UInt32
            if b0 < 0x80 {
                v = b0; i += 1
            } else if b0 < 0xE0 {
                v = (b0 & 0x1F) << 6 | UInt32(bytes[i + 1] & 0x3F); i += 2
            } else if b0 < 0xF0 {
                v = (b0 & 0x0F) << 12 | UInt32(bytes[i + 1] & 0x3F) << 6 | UInt32(bytes[i + 2] & 0x3F); i += 3
            } else {
                v = (b0 & 0x07) << 18 | UInt32(bytes[i + 1] & 0x3F) << 12 | UInt32(bytes[i + 2] & 0x3F) << 6
                    | UInt32(bytes[i + 3] & 0x3F)
                i += 4
            }
            if v == 0x20 { v = spaceTo }
            scalars.append(v)
        }
        if fast {
            bpeInChunks(scalars[...], into: &out, workspace: &w)
            return
        }
        for word in GemmaTokenizer.preTokenize(GemmaTokenizer.normalize(scalars, norm), norm.splitSteps) {
            bpeInChunks(word, into: &out, workspace: &w)
        }
    }

    // MARK: Decoding

    /// Decodes ids to text like the reference (`tokenizer.decode`): `▁` becomes a space, runs of `<0xNN>`
    /// byte pieces become UTF-8 (an invalid run becomes one U+FFFD per byte), unknown ids are ignored.
    /// - Parameter skipSpecialTokens: drop control tokens (`<bos>`, `<eos>`, `<pad>`, `<image>`, …);
    ///   `<locDDDD>` and `<segDDD>` are always kept.
    public func decode(_ ids: [Int32], skipSpecialTokens: Bool = true) -> String {
        var out: [UInt8] = []
        var run: [UInt8] = []
        out.reserveCapacity(ids.count * 4)
        for id in ids {
            guard id >= 0, Int(id) < decodedPieces.count, model.pieces[Int(id)] != nil else { continue }
            if skipSpecialTokens && model.isSpecial[Int(id)] { continue }
            let b = byteValues[Int(id)]
            if b >= 0 {
                run.append(UInt8(b))
                continue
            }
            if !run.isEmpty { Self.flush(&run, into: &out) }
            out.append(contentsOf: decodedPieces[Int(id)])
        }
        if !run.isEmpty { Self.flush(&run, into: &out) }
        return String(decoding: out, as: UTF8.self)
    }

    /// Appends a byte run: its UTF-8 text when valid, else one U+FFFD per byte (Hugging Face ByteFallback).
    static func flush(_ run: inout [UInt8], into out: inout [UInt8]) {
        if isValidUTF8(run) {
            out.append(contentsOf: run)
        } else {
            for _ in run { out.append(contentsOf: [0xEF, 0xBF, 0xBD]) }
        }
        run.removeAll(keepingCapacity: true)
    }

    /// A decoder that turns ids into text one at a time (see ``StreamingDecoder``).
    public func streamingDecoder(skipSpecialTokens: Bool = true) -> StreamingDecoder {
        StreamingDecoder(tokenizer: self, skipSpecialTokens: skipSpecialTokens)
    }
}

/// A byte trie over the added tokens, for leftmost-longest matching in raw text.
struct AddedTokenTrie: Sendable {
    var children: [[UInt8: Int32]] = [[:]]
    var tokenID: [Int32] = [-1]
    var startsMatch = [Bool](repeating: false, count: 256)

    init(_ tokens: [String: Int32]) {
        for (content, id) in tokens {
            var node = 0
            for b in content.utf8 {
                if let c = children[node][b] {
                    node = Int(c)
                } else {
                    children.append([:]); tokenID.append(-1)
                    children[node][b] = Int32(children.count - 1)
                    node = children.count - 1
                }
            }
            tokenID[node] = id
            if let f = content.utf8.first { startsMatch[Int(f)] = true }
        }
    }

    func longestMatch(_ bytes: UnsafeBufferPointer<UInt8>, from start: Int) -> (Int32, Int)? {
        var node = 0
        var best: (Int32, Int)?
        var i = start
        while i < bytes.count, let c = children[node][bytes[i]] {
            node = Int(c)
            i += 1
            if tokenID[node] >= 0 { best = (tokenID[node], i) }
        }
        return best
    }
}

extension GemmaTokenizer {
    /// General normalisation (replacements and per-segment prefix) for non-Gemma configurations.
    static func normalize(_ scalars: [UInt32], _ norm: Normalization) -> [UInt32] {
        var s = scalars
        for (from, to) in norm.replacements where !from.isEmpty {
            var r: [UInt32] = []
            r.reserveCapacity(s.count)
            var i = 0
            while i < s.count {
                if i + from.count <= s.count && s[i..<(i + from.count)].elementsEqual(from) {
                    r.append(contentsOf: to)
                    i += from.count
                } else {
                    r.append(s[i]); i += 1
                }
            }
            s = r
        }
        if !norm.prependEachSegment.isEmpty && !s.isEmpty { s = norm.prependEachSegment + s }
        return s
    }

    /// Applies the split steps, returning the words BPE runs on separately.
    static func preTokenize(_ scalars: [UInt32], _ steps: [SplitStep]) -> [ArraySlice<UInt32>] {
        var words: [[UInt32]] = [scalars]
        for (stepIndex, step) in steps.enumerated() {
            var next: [[UInt32]] = []
            for (wordIndex, word) in words.enumerated() {
                switch step {
                case .literal(let pattern, let behavior):
                    next.append(contentsOf: split(word, on: pattern, behavior))
                case .metaspace(let replacement, let prepend, let split):
                    var w = word.map { $0 == 0x20 ? replacement : $0 }
                    let first = stepIndex == 0 && wordIndex == 0
                    if (prepend == .always || (prepend == .first && first)), w.first != replacement {
                        w.insert(replacement, at: 0)
                    }
                    next.append(contentsOf: split
                        ? Self.split(w, on: [replacement], .mergedWithNext) : [w])
                }
            }
            words = next
        }
        return words.filter { !$0.isEmpty }.map { $0[...] }
    }

    static func split(_ word: [UInt32], on pattern: [UInt32], _ behavior: SplitStep.Behavior) -> [[UInt32]] {
        guard !pattern.isEmpty else { return [word] }
        var pieces: [([UInt32], Bool)] = []  // (text, isMatch)
        var current: [UInt32] = []
        var i = 0
        while i < word.count {
            if i + pattern.count <= word.count && word[i..<(i + pattern.count)].elementsEqual(pattern) {
                if !current.isEmpty { pieces.append((current, false)); current = [] }
                pieces.append((pattern, true))
                i += pattern.count
            } else {
                current.append(word[i]); i += 1
            }
        }
        if !current.isEmpty { pieces.append((current, false)) }
        var out: [[UInt32]] = []
        switch behavior {
        case .removed: out = pieces.filter { !$0.1 }.map(\.0)
        case .isolated: out = pieces.map(\.0)
        case .contiguous:
            for (p, m) in pieces {
                if m, let last = out.last, last.count >= pattern.count,
                   Array(last.suffix(pattern.count)) == pattern, pieces.count > 0 {
                    out[out.count - 1] += p
                } else { out.append(p) }
            }
        case .mergedWithPrevious:
            for (p, m) in pieces {
                if m, !out.isEmpty { out[out.count - 1] += p } else { out.append(p) }
            }
        case .mergedWithNext:
            var pending: [UInt32] = []
            for (p, m) in pieces {
                if m { pending += p } else { out.append(pending + p); pending = [] }
            }
            if !pending.isEmpty { out.append(pending) }
        }
        return out
    }
}
