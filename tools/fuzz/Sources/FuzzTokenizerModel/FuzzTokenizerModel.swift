// A SentencePiece tokenizer.model (protobuf), parsed in memory, then used.
import FuzzSupport
import GemmaTokenizer
import TokenizerExercise

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    guard let tokenizer = try? GemmaTokenizer(sentencePieceModelData: bytes(data, size)) else { return 0 }
    exercise(tokenizer)
    return 0
}
