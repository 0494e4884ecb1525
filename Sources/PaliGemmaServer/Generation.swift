import Dispatch
import Foundation
import Imaging
import PaliGemma

/// What `/v1/generate` answers: the generation (the same keys as `PaliGemma.Generation`), the
/// image's size, and for `detect`/`segment` prompts the boxes (and masks) in original-image pixels.
public struct GenerateResponse: Codable, Sendable {
    public var prompt: String
    public var text: String
    public var tokenIDs: [Int]
    public var tokenLogProbs: [Float]
    public var finishReason: String
    public var timings: Timings
    /// Size of the image as decoded (EXIF orientation applied).
    public var width: Int
    public var height: Int
    /// For detect and segment prompts: the parsed boxes.
    public var objects: [DetectedObject]?
    /// For segment prompts when the server has a mask decoder: one mask per object, COCO RLE.
    public var masks: [SegmentedObject]?

    public struct Timings: Codable, Sendable {
        public var imageSeconds: Double
        public var prefillSeconds: Double
        public var decodeSeconds: Double
        public var promptTokens: Int
        public var generatedTokens: Int
        public var decodeTokensPerSecond: Double
        /// Time spent waiting for the model behind other requests.
        public var queueSeconds: Double
        /// From the request's arrival to the result (queue included).
        public var totalSeconds: Double

        enum CodingKeys: String, CodingKey {
            case imageSeconds = "image_seconds", prefillSeconds = "prefill_seconds", decodeSeconds = "decode_seconds"
            case promptTokens = "prompt_tokens", generatedTokens = "generated_tokens"
            case decodeTokensPerSecond = "decode_tokens_per_second"
            case queueSeconds = "queue_seconds", totalSeconds = "total_seconds"
        }
    }

    enum CodingKeys: String, CodingKey {
        case prompt, text, tokenIDs = "token_ids", tokenLogProbs = "token_logprobs"
        case finishReason = "finish_reason", timings, width, height, objects, masks
    }
}

/// One generated token as streamed: its id (nil for a final piece that only closes an open UTF-8
/// byte sequence) and the text it completed (may be empty).
struct TokenEvent: Encodable {
    let id: Int?
    let text: String

    enum CodingKeys: String, CodingKey { case id, text }

    func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(id, forKey: .id)  // null, not absent, for the closing piece
        try c.encode(text, forKey: .text)
    }
}

func monotonicSeconds() -> Double { Double(DispatchTime.now().uptimeNanoseconds) / 1e9 }

/// Encodes the image and generates, calling `onToken` per token. Blocking: call it on the
/// inference queue while holding the gate. Stops when `cancel` is set.
func runGeneration(pipeline: PaliGemmaPipeline, image: RGBImage, prompt: String, options: GenerationOptions,
                   cancel: CancellationFlag?, onToken: ((TokenEvent) -> Void)?) throws -> GenerateResponse {
    let encoded = try pipeline.encode(image: image)
    let g = try pipeline.generate(prompt: prompt, image: encoded, options: options) { id, text in
        onToken?(TokenEvent(id: id, text: text))
        return !(cancel?.isCancelled ?? false)
    }
    let t = g.timings
    return GenerateResponse(
        prompt: prompt, text: g.text, tokenIDs: g.tokenIDs, tokenLogProbs: g.tokenLogProbs,
        finishReason: g.finishReason.rawValue,
        timings: .init(imageSeconds: t.imageSeconds, prefillSeconds: t.prefillSeconds, decodeSeconds: t.decodeSeconds,
                       promptTokens: t.promptTokens, generatedTokens: t.generatedTokens,
                       decodeTokensPerSecond: t.decodeTokensPerSecond, queueSeconds: 0, totalSeconds: 0),
        width: image.width, height: image.height, objects: nil, masks: nil)
}
