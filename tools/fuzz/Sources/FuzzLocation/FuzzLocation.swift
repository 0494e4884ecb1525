// Model output and prompts as text: the <loc>/<seg> parser, task detection, segmentation of the
// parsed objects with the small test VAE, and the prompt tokenizer (real Gemma vocabulary).
import Foundation
import FuzzSupport
import GemmaTokenizer
import PaliGemma

let tokenizer = try? GemmaTokenizer(tokenizerJSON: fixtures.appendingPathComponent("tokenizer/tokenizer.json"))
let segmenter = try? Segmenter(vaeFile: fixtures.appendingPathComponent("segmentation/vae_small.npz"))

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    precondition(tokenizer != nil && segmenter != nil, "missing fixtures under \(fixtures.path)")
    let s = text(data, size)
    // Image sizes from the input, 0 included: 0…250 × 0…240.
    let width = size % 251, height = size > 0 ? Int(data[0]) % 241 : 1
    let report = LocationParser.parseReport(s, imageWidth: width, imageHeight: height)
    for o in report.objects {
        precondition(o.bins.count == 4 && o.x0 <= o.x1 && o.y0 <= o.y1)
        precondition(o.segmentationCodes.map { $0.count == 16 } ?? true)
    }
    _ = LocationParser.parse(s, imageWidth: width, imageHeight: height, requireSegmentation: true)
    if s.contains("<seg") {
        for object in segmenter!.segment(text: s, imageWidth: width, imageHeight: height).prefix(4) {
            if let mask = try? object.mask() { precondition(mask.count == width * height) }
        }
    }
    _ = TaskKind(prompt: s)
    let prompt = tokenizer!.paliGemmaPrompt(prefix: s, imageTokens: 16, suffix: nil)
    precondition(prompt.ids.count == prompt.tokenTypes.count)
    _ = tokenizer!.decode(prompt.ids, skipSpecialTokens: false)
    return 0
}
