import Dispatch
import Foundation
import Imaging
import PaliGemma

/// One generated token as streamed: its id (nil for a final piece that only closes an open UTF-8
/// byte sequence) and the text it completed (may be empty).
struct TokenEvent: Encodable {
    let id: Int?
    let text: String
    /// Not sent on /v1/generate's stream (its `done` event carries them all).
    var logProb: Float? = nil

    enum CodingKeys: String, CodingKey { case id, text }

    func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(id, forKey: .id)  // null, not absent, for the closing piece
        try c.encode(text, forKey: .text)
    }
}

func monotonicSeconds() -> Double { Double(DispatchTime.now().uptimeNanoseconds) / 1e9 }

/// Encodes the image, generates and parses the answer by task, calling `onToken` per token.
/// Blocking: call it on the inference queue while holding the gate. Stops when `cancel` is set.
func runGeneration(pipeline: PaliGemmaPipeline, image: RGBImage, prompt: String, options: GenerationOptions,
                   segmenter: Segmenter?, cancel: CancellationFlag?, onToken: ((TokenEvent) -> Void)?) throws -> TaskResult {
    let encoded = try pipeline.encode(image: image)
    return try pipeline.perform(prompt, on: encoded, options: options, segmenter: segmenter) { token in
        onToken?(TokenEvent(id: token.id, text: token.text, logProb: token.logProb))
        return !(cancel?.isCancelled ?? false)
    }
}
