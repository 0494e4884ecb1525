import GemmaTokenizer

/// Encodes and decodes with a tokenizer built from the fuzzed file: its tables must be consistent
/// whatever the file said.
public func exercise(_ tokenizer: GemmaTokenizer) {
    let samples = ["caption en", "detect cat ; dog <loc0012><seg042> ", "a  b\tc\né ü 漢字 🙂", "<image><bos>x<eos>", ""]
    for s in samples {
        let ids = tokenizer.encode(s, addBOS: true)
        _ = tokenizer.decode(ids)
        _ = tokenizer.decode(ids, skipSpecialTokens: false)
        var stream = tokenizer.streamingDecoder()
        _ = stream.append(contentsOf: ids)
        _ = stream.finish()
    }
    _ = tokenizer.paliGemmaPrompt(prefix: "answer en what?", imageTokens: 4, suffix: "yes")
    let n = Int32(clamping: tokenizer.vocabularySize)
    let ids: [Int32] = [-1, 0, 1, n - 1, n, n + 1, Int32.max, Int32.min] + (0..<min(n, 300)).map { $0 }
    _ = tokenizer.decode(ids)
    _ = tokenizer.decode(ids, skipSpecialTokens: false)
    _ = tokenizer.pieces(for: ids)
    for id in ids { _ = tokenizer.isSpecial(id) }
    var stream = tokenizer.streamingDecoder(skipSpecialTokens: false)
    for id in ids { _ = stream.append(id) }
    _ = stream.finish()
}
