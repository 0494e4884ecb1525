import Foundation

extension TokenizerModel {
    /// Builds the model from a Hugging Face `tokenizer.json` (as transformers exports Gemma: a BPE model
    /// with vocab + merges and byte fallback, or a scored vocabulary merged SentencePiece-style).
    init(json data: Data, file: String) throws {
        let rootAny: Any
        do {
            rootAny = try JSONSerialization.jsonObject(with: data, options: [])
        } catch {
            throw TokenizerError.malformedJSON(file: file, reason: "JSON parse error (\(error.localizedDescription))")
        }
        guard let root = rootAny as? [String: Any] else {
            throw TokenizerError.malformedJSON(file: file, reason: "the top level is not an object")
        }
        guard let model = root["model"] as? [String: Any] else {
            throw TokenizerError.missingField(file: file, field: "model")
        }
        let type = model["type"] as? String ?? (model["merges"] != nil ? "BPE" : "")

        var lookup: [String: Int32] = [:]
        var byID: [Int: String] = [:]
        var scored: [(piece: String, id: Int32, score: Float)] = []
        func addPiece(_ piece: String, _ idAny: Any?) throws -> Int32 {
            guard let n = (idAny as? NSNumber)?.int64Value, n >= 0, n < 50_000_000 else {
                throw TokenizerError.invalidVocabulary(file: file, reason: "piece `\(piece)` has a bad id")
            }
            let id = Int32(n)
            lookup[piece] = id
            // Two pieces may share an id (transformers maps "\t" onto <0x09>); keep the first name.
            if byID[Int(id)] == nil { byID[Int(id)] = piece }
            return id
        }

        var ranked: [UInt64: UInt64] = [:]
        switch type {
        case "BPE":
            guard let vocab = model["vocab"] as? [String: Any] else {
                throw TokenizerError.missingField(file: file, field: "model.vocab")
            }
            // Deterministic order so that duplicated ids resolve the same way every time.
            for (piece, idAny) in vocab.sorted(by: { $0.key < $1.key }) { _ = try addPiece(piece, idAny) }
            guard let mergesAny = model["merges"] as? [Any] else {
                throw TokenizerError.missingField(file: file, field: "model.merges")
            }
            ranked.reserveCapacity(mergesAny.count)
            for (rank, m) in mergesAny.enumerated() {
                let left: String, right: String
                if let s = m as? String {
                    let parts = s.split(separator: " ", maxSplits: 1, omittingEmptySubsequences: false)
                    guard parts.count == 2 else {
                        throw TokenizerError.invalidVocabulary(file: file, reason: "merge \(rank) `\(s)` is not `left right`")
                    }
                    left = String(parts[0]); right = String(parts[1])
                } else if let pair = m as? [Any], pair.count == 2, let l = pair[0] as? String, let r = pair[1] as? String {
                    left = l; right = r
                } else {
                    throw TokenizerError.invalidVocabulary(file: file, reason: "merge \(rank) is neither a string nor a pair")
                }
                guard let l = lookup[left], let r = lookup[right], let merged = lookup[left + right] else {
                    throw TokenizerError.invalidVocabulary(
                        file: file, reason: "merge \(rank) (`\(left)` `\(right)`) names a piece missing from the vocab")
                }
                let key = UInt64(UInt32(bitPattern: l)) << 32 | UInt64(UInt32(bitPattern: r))
                if ranked[key] == nil { ranked[key] = UInt64(rank) << 32 | UInt64(UInt32(bitPattern: merged)) }
            }
        case "Unigram":
            guard let vocab = model["vocab"] as? [Any] else {
                throw TokenizerError.missingField(file: file, field: "model.vocab")
            }
            for (i, entry) in vocab.enumerated() {
                guard let pair = entry as? [Any], pair.count == 2, let piece = pair[0] as? String,
                    let score = (pair[1] as? NSNumber)?.floatValue
                else {
                    throw TokenizerError.invalidVocabulary(file: file, reason: "vocab entry \(i) is not [piece, score]")
                }
                let id = try addPiece(piece, NSNumber(value: i))
                scored.append((piece, id, score.isNaN ? -.infinity : score))
            }
        default:
            throw TokenizerError.unsupported(file: file, feature: "model type `\(type)` (expected BPE)")
        }

        var added: [String: Int32] = [:]
        var specialIDs = Set<Int32>()
        if let list = root["added_tokens"] as? [Any] {
            for (i, any) in list.enumerated() {
                guard let t = any as? [String: Any], let content = t["content"] as? String, !content.isEmpty else {
                    throw TokenizerError.invalidVocabulary(file: file, reason: "added_tokens[\(i)] has no content")
                }
                let id = try addPiece(content, t["id"])
                if byID[Int(id)] != content { byID[Int(id)] = content }
                lookup[content] = id
                added[content] = id
                if (t["special"] as? Bool) == true { specialIDs.insert(id) }
            }
        }
        if lookup["<image>"] == nil {  // PaliGemmaProcessor adds it when the tokenizer lacks it
            let id = Int32((byID.keys.max() ?? -1) + 1)
            lookup["<image>"] = id; byID[Int(id)] = "<image>"; added["<image>"] = id; specialIDs.insert(id)
        }

        let count = (byID.keys.max() ?? -1) + 1
        guard count <= 2 * byID.count + 1024 else {
            throw TokenizerError.invalidVocabulary(
                file: file, reason: "ids go up to \(count - 1) but only \(byID.count) pieces are defined")
        }
        var pieces = [String?](repeating: nil, count: count)
        for (id, p) in byID { pieces[id] = p }
        var special = [Bool](repeating: false, count: count)
        for id in specialIDs { special[Int(id)] = true }

        var scalarIDs: [UInt32: Int32] = [:]
        for (piece, id) in lookup where !specialIDs.contains(id) {
            let scalars = piece.unicodeScalars
            if scalars.count == 1, let s = scalars.first { scalarIDs[s.value] = id }
        }
        if type == "Unigram" {
            ranked = scoreRankedMerges(targets: scored, lookup: lookup)
        }

        self.pieces = pieces
        self.isSpecial = special
        self.addedTokens = added
        self.scalarIDs = scalarIDs
        self.merges = ranked
        self.byteFallback = model["byte_fallback"] as? Bool ?? (type == "Unigram")
        if let unk = model["unk_token"] as? String {
            unkID = lookup[unk]
        } else if let n = (model["unk_id"] as? NSNumber)?.intValue, n >= 0, n < count {
            unkID = Int32(n)
        } else {
            unkID = nil
        }
        self.ignoreMerges = model["ignore_merges"] as? Bool ?? false
        self.vocabLookup = lookup
        self.normalization = try Self.parseNormalization(root, file: file)
    }

    private static func scalars(_ s: String) -> [UInt32] { s.unicodeScalars.map(\.value) }

    private static func parseNormalization(_ root: [String: Any], file: String) throws -> Normalization {
        var norm = Normalization()
        func normalizer(_ any: Any?) throws {
            guard let n = any as? [String: Any] else {
                if any == nil || any is NSNull { return }
                throw TokenizerError.malformedJSON(file: file, reason: "normalizer is not an object")
            }
            switch n["type"] as? String {
            case "Sequence":
                for sub in n["normalizers"] as? [Any] ?? [] { try normalizer(sub) }
            case "Replace":
                guard let pattern = (n["pattern"] as? [String: Any])?["String"] as? String, !pattern.isEmpty,
                    let content = n["content"] as? String
                else { throw TokenizerError.unsupported(file: file, feature: "Replace normalizer with a regex pattern") }
                norm.replacements.append((from: scalars(pattern), to: scalars(content)))
            case "Prepend":
                guard let p = n["prepend"] as? String else {
                    throw TokenizerError.missingField(file: file, field: "normalizer.prepend")
                }
                norm.prependEachSegment = scalars(p)
            case let other:
                throw TokenizerError.unsupported(file: file, feature: "normalizer `\(other ?? "?")`")
            }
        }
        func preTokenizer(_ any: Any?) throws {
            guard let p = any as? [String: Any] else {
                if any == nil || any is NSNull { return }
                throw TokenizerError.malformedJSON(file: file, reason: "pre_tokenizer is not an object")
            }
            switch p["type"] as? String {
            case "Sequence":
                for sub in p["pretokenizers"] as? [Any] ?? [] { try preTokenizer(sub) }
            case "Split":
                guard let pattern = (p["pattern"] as? [String: Any])?["String"] as? String, !pattern.isEmpty else {
                    throw TokenizerError.unsupported(file: file, feature: "Split pre-tokenizer with a regex pattern")
                }
                if (p["invert"] as? Bool) == true {
                    throw TokenizerError.unsupported(file: file, feature: "inverted Split pre-tokenizer")
                }
                let behavior: SplitStep.Behavior
                switch p["behavior"] as? String {
                case "Removed": behavior = .removed
                case "Isolated": behavior = .isolated
                case "MergedWithPrevious": behavior = .mergedWithPrevious
                case "MergedWithNext": behavior = .mergedWithNext
                case "Contiguous": behavior = .contiguous
                case let other: throw TokenizerError.unsupported(file: file, feature: "Split behavior `\(other ?? "?")`")
                }
                norm.splitSteps.append(.literal(pattern: scalars(pattern), behavior: behavior))
            case "Metaspace":
                let replacement = (p["replacement"] as? String)?.unicodeScalars.first?.value ?? 0x2581
                let scheme: SplitStep.PrependScheme
                switch p["prepend_scheme"] as? String {
                case "never": scheme = .never
                case "first": scheme = .first
                case "always": scheme = .always
                default: scheme = (p["add_prefix_space"] as? Bool) == false ? .never : .always
                }
                norm.splitSteps.append(.metaspace(replacement: replacement, prepend: scheme, split: p["split"] as? Bool ?? true))
            case let other:
                throw TokenizerError.unsupported(file: file, feature: "pre_tokenizer `\(other ?? "?")`")
            }
        }
        try normalizer(root["normalizer"])
        try preTokenizer(root["pre_tokenizer"])
        // transformers' Gemma export splits on " " after the normaliser has replaced every " " with "▁":
        // that split never fires, so drop it (and keep the fast path).
        let spacesGone = norm.replacements.contains { $0.from == [0x20] }
            && !norm.replacements.contains { $0.to.contains(0x20) } && !norm.prependEachSegment.contains(0x20)
        if spacesGone {
            norm.splitSteps.removeAll {
                if case .literal(let pattern, _) = $0, pattern.contains(0x20) { return true }
                return false
            }
        }
        return norm
    }
}
