/// The PaliGemma model input: `<image>` × N, `<bos>`, the prefix, `\n`, then optionally the suffix and
/// `<eos>`, with token types (0 for the image tokens and prefix, 1 for the suffix), exactly as transformers'
/// `PaliGemmaProcessor` builds them.
public struct PaliGemmaPrompt: Sendable, Equatable {
    /// Token ids.
    public let ids: [Int32]
    /// 0 for image, `<bos>` and prefix tokens (full attention), 1 for suffix tokens (causal).
    public let tokenTypes: [Int32]
    /// Number of leading `<image>` tokens.
    public let imageTokenCount: Int
    /// Number of prefix tokens including the leading `<bos>` and trailing `\n` (not the image tokens).
    public let prefixTokenCount: Int

    /// Creates a prompt from its parts.
    public init(ids: [Int32], tokenTypes: [Int32], imageTokenCount: Int, prefixTokenCount: Int) {
        self.ids = ids
        self.tokenTypes = tokenTypes
        self.imageTokenCount = imageTokenCount
        self.prefixTokenCount = prefixTokenCount
    }
}

extension GemmaTokenizer {
    /// Builds the PaliGemma prompt: the text `"<image>" * imageTokens + "<bos>" + prefix + "\n"` tokenized as
    /// one string (so added tokens written in the prefix, such as `<loc0123>`, become their ids), then, when
    /// `suffix` is given, `suffix + "<eos>"` with token type 1.
    /// - Parameters:
    ///   - prefix: the task prompt, e.g. `"caption en"` or `"detect cat"`; it should not contain `<image>`.
    ///   - imageTokens: number of image embeddings (256 for 224², 1024 for 448², 4096 for 896²).
    ///   - suffix: the expected answer, for scoring or fine-tuning.
    public func paliGemmaPrompt(prefix: String, imageTokens: Int, suffix: String? = nil) -> PaliGemmaPrompt {
        let images = [Int32](repeating: imageTokenID, count: max(0, imageTokens))
        let prefixIDs = encode("<bos>" + prefix + "\n")
        var ids = images + prefixIDs
        var types = [Int32](repeating: 0, count: ids.count)
        if let suffix {
            let s = encode(suffix + "<eos>")
            ids += s
            types += [Int32](repeating: 1, count: s.count)
        }
        return PaliGemmaPrompt(ids: ids, tokenTypes: types, imageTokenCount: images.count,
                               prefixTokenCount: prefixIDs.count)
    }
}
