import Dispatch
import Foundation
import GemmaTokenizer
import Imaging
import Kernels

/// An image ready for prompting: its projected features (computed once) and its original size,
/// which detection and segmentation results are mapped back to.
public struct EncodedImage: Sendable {
    public let embedding: ImageEmbedding
    /// Size of the image as given, before resizing to the model's square input.
    public let width: Int
    public let height: Int
    /// Seconds spent in the vision tower and projector.
    public let seconds: Double

    /// The same encoding used again: no vision-tower time is spent on it this time.
    public var reused: EncodedImage {
        EncodedImage(embedding: embedding, width: width, height: height, seconds: 0)
    }
}

extension EncodedImage {
    /// Several images for one prompt: their rows one after the other, as transformers' processor
    /// places them; the size is the first image's (boxes in the answer refer to it).
    public init(concatenating parts: [EncodedImage]) {
        precondition(!parts.isEmpty, "at least one image")
        // One image stays the same encoding (caches of prefills recognise it by identity).
        if parts.count == 1 {
            self = parts[0]
            return
        }
        self.init(embedding: ImageEmbedding(concatenating: parts.map(\.embedding)), width: parts[0].width,
                  height: parts[0].height, seconds: parts.reduce(0) { $0 + $1.seconds })
    }
}

/// What one prompt produced.
public struct Generation: Codable, Sendable {
    /// The prompt text (without image tokens).
    public var prompt: String
    /// Decoded output, `<loc>`/`<seg>` tokens kept, control tokens dropped.
    public var text: String
    /// Generated token ids (the stop token included when one ended generation).
    public var tokenIDs: [Int]
    /// Natural-log probability of each generated token.
    public var tokenLogProbs: [Float]
    /// "stop" (end of sequence), "length" (max tokens) or "cancelled".
    public var finishReason: GenerationResult.FinishReason
    public var timings: Timings

    public struct Timings: Codable, Sendable {
        /// Vision tower + projector (0 when the image was encoded before).
        public var imageSeconds: Double
        public var prefillSeconds: Double
        public var decodeSeconds: Double
        public var promptTokens: Int
        public var generatedTokens: Int
        /// Server only: time spent waiting behind other requests.
        public var queueSeconds: Double?
        /// Server only: from the request's arrival to its answer (queue included).
        public var totalSeconds: Double?
        public var decodeTokensPerSecond: Double {
            generatedTokens > 1 ? Double(generatedTokens - 1) / max(decodeSeconds, 1e-9) : 0
        }

        enum CodingKeys: String, CodingKey {
            case imageSeconds = "image_seconds", prefillSeconds = "prefill_seconds", decodeSeconds = "decode_seconds"
            case promptTokens = "prompt_tokens", generatedTokens = "generated_tokens"
            case decodeTokensPerSecond = "decode_tokens_per_second"
            case queueSeconds = "queue_seconds", totalSeconds = "total_seconds"
        }

        public func encode(to encoder: Encoder) throws {
            var c = encoder.container(keyedBy: CodingKeys.self)
            try c.encode(imageSeconds, forKey: .imageSeconds)
            try c.encode(prefillSeconds, forKey: .prefillSeconds)
            try c.encode(decodeSeconds, forKey: .decodeSeconds)
            try c.encode(promptTokens, forKey: .promptTokens)
            try c.encode(generatedTokens, forKey: .generatedTokens)
            try c.encode(decodeTokensPerSecond, forKey: .decodeTokensPerSecond)
            try c.encodeIfPresent(queueSeconds, forKey: .queueSeconds)
            try c.encodeIfPresent(totalSeconds, forKey: .totalSeconds)
        }

        public init(from decoder: Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            imageSeconds = try c.decode(Double.self, forKey: .imageSeconds)
            prefillSeconds = try c.decode(Double.self, forKey: .prefillSeconds)
            decodeSeconds = try c.decode(Double.self, forKey: .decodeSeconds)
            promptTokens = try c.decode(Int.self, forKey: .promptTokens)
            generatedTokens = try c.decode(Int.self, forKey: .generatedTokens)
            queueSeconds = try c.decodeIfPresent(Double.self, forKey: .queueSeconds)
            totalSeconds = try c.decodeIfPresent(Double.self, forKey: .totalSeconds)
        }

        init(imageSeconds: Double, prefillSeconds: Double, decodeSeconds: Double, promptTokens: Int, generatedTokens: Int) {
            self.imageSeconds = imageSeconds
            self.prefillSeconds = prefillSeconds
            self.decodeSeconds = decodeSeconds
            self.promptTokens = promptTokens
            self.generatedTokens = generatedTokens
        }
    }

    enum CodingKeys: String, CodingKey {
        case prompt, text, tokenIDs = "token_ids", tokenLogProbs = "token_logprobs"
        case finishReason = "finish_reason", timings
    }

    init(prompt: String, text: String, tokenIDs: [Int], tokenLogProbs: [Float],
         finishReason: GenerationResult.FinishReason, timings: Timings) {
        self.prompt = prompt
        self.text = text
        self.tokenIDs = tokenIDs
        self.tokenLogProbs = tokenLogProbs
        self.finishReason = finishReason
        self.timings = timings
    }

    /// Log-probabilities that are not finite are written as null, as in `TaskResult`.
    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(prompt, forKey: .prompt)
        try c.encode(text, forKey: .text)
        try c.encode(tokenIDs, forKey: .tokenIDs)
        try c.encode(tokenLogProbs.map { $0.isFinite ? $0 : nil }, forKey: .tokenLogProbs)
        try c.encode(finishReason, forKey: .finishReason)
        try c.encode(timings, forKey: .timings)
    }

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        prompt = try c.decode(String.self, forKey: .prompt)
        text = try c.decode(String.self, forKey: .text)
        tokenIDs = try c.decode([Int].self, forKey: .tokenIDs)
        tokenLogProbs = try c.decode([Float?].self, forKey: .tokenLogProbs).map { $0 ?? -.infinity }
        finishReason = try c.decode(GenerationResult.FinishReason.self, forKey: .finishReason)
        timings = try c.decode(Timings.self, forKey: .timings)
    }
}

/// How the prefill's matrix products round their inputs.
public enum ProductPrecision: String, Sendable, CaseIterable {
    /// float32 for checkpoints under 256 MB (where exactness costs nothing), bf16 otherwise.
    case auto
    /// Exact float32 products: outputs as transformers in float32.
    case float32
    /// The CPU's bf16 dot products (as PyTorch in bfloat16), about twice as fast; float32 where
    /// the CPU has none.
    case bf16

    /// Whether the checkpoint in `directory` gets bf16 products.
    public func usesBF16(directory: URL) -> Bool {
        switch self {
        case .float32: return false
        case .bf16: return true
        case .auto:
            return ((try? CheckpointLocation(directory))?.weightFileBytes ?? 0) >= 256 << 20
        }
    }
}

/// One step of a generation as it happens.
public struct GeneratedToken: Sendable, Equatable {
    /// The token's id; nil for a final piece that only closes an open UTF-8 sequence.
    public var id: Int?
    /// The text the token completed (empty while a UTF-8 sequence is open).
    public var text: String
    /// Natural-log probability the model gave the token (nil with `id`).
    public var logProb: Float?

    public init(id: Int?, text: String, logProb: Float?) {
        self.id = id
        self.text = text
        self.logProb = logProb
    }
}

/// A piece of a streamed generation.
public enum GenerationEvent: Sendable {
    /// A generated token and the text it completed (may be empty while a UTF-8 sequence is open).
    case token(id: Int, text: String)
    /// Generation ended; the full result.
    case finished(Generation)
}

/// Everything needed to go from an image file and a prompt to text: the model, its tokenizer
/// and its image preprocessing.
///
/// ```swift
/// let pipeline = try PaliGemmaPipeline(directory: URL(fileURLWithPath: "Models/demo"))
/// let image = try pipeline.encode(image: try pipeline.loadImage(URL(fileURLWithPath: "cat.jpg")))
/// let caption = try pipeline.generate(prompt: "caption en", image: image)
/// print(caption.text)
/// for try await event in pipeline.stream(prompt: "describe en", image: image) { … }
/// ```
public final class PaliGemmaPipeline: Sendable {
    public let model: PaliGemmaModel
    public let tokenizer: GemmaTokenizer
    public let preprocessor: ImagePreprocessor
    public let imageLoader: ImageLoader

    /// Loads the checkpoint, tokenizer (tokenizer.json, else tokenizer.model) from `directory`.
    /// - Parameter backend: the kernels; nil takes `FastBackend` with `ProductPrecision.auto`'s
    ///   choice for this checkpoint (what the `paligemma` tool uses).
    /// - Parameter adapter: LoRA weights applied at inference (``LoRAAdapter/load(from:text:vision:)``).
    public init(directory: URL, backend: ComputeBackend? = nil, imageLoader: ImageLoader = ImageLoader(),
                resize: ResizeFilter = .bicubicPIL, adapter: LoRAAdapter? = nil) throws {
        model = try PaliGemmaModel(directory: directory,
                                   backend: backend ?? FastBackend(bf16Products: ProductPrecision.auto.usesBF16(directory: directory)),
                                   adapter: adapter)
        tokenizer = try GemmaTokenizer.load(directory: model.directory)
        self.imageLoader = imageLoader
        preprocessor = ImagePreprocessor(size: model.imageSize, filter: resize)
        let imageID = Int(tokenizer.imageTokenID)
        guard imageID == model.config.imageTokenIndex else {
            throw CheckpointError.invalidConfig(file: model.directory.appendingPathComponent("config.json").path,
                reason: "image_token_index \(model.config.imageTokenIndex) differs from the tokenizer's <image> id \(imageID)")
        }
    }

    /// Decodes an image file (JPEG, PNG, WebP), applying EXIF orientation.
    public func loadImage(_ url: URL) throws -> RGBImage { try imageLoader.load(contentsOf: url) }

    /// Resizes, normalises and runs the vision tower + projector once; reuse the result for
    /// several prompts on the same image.
    public func encode(image: RGBImage) throws -> EncodedImage {
        let start = DispatchTime.now().uptimeNanoseconds
        let pixels = preprocessor.pixelValues(image)
        let embedding = try model.encodeImage(pixels: pixels)
        let seconds = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
        return EncodedImage(embedding: embedding, width: image.width, height: image.height, seconds: seconds)
    }

    /// Several images for one prompt (a comparison, frames of a clip): each encoded, their rows
    /// one after the other, as transformers' processor places them. Boxes in the answer refer to
    /// the first image's frame.
    public func encode(images: [RGBImage]) throws -> EncodedImage {
        guard !images.isEmpty else { throw InputError.option("give at least one image") }
        return EncodedImage(concatenating: try images.map { try encode(image: $0) })
    }

    /// The token ids and types of a prompt, as transformers' PaliGemmaProcessor builds them.
    public func promptTokens(_ prompt: String, images: Int = 1) -> PaliGemmaPrompt {
        tokenizer.paliGemmaPrompt(prefix: prompt, imageTokens: model.numImageTokens * images)
    }

    /// Runs one prompt on an encoded image. `onText` receives text as it is produced.
    public func generate(prompt: String, image: EncodedImage, options: GenerationOptions = GenerationOptions(),
                         onText: ((String) -> Void)? = nil) throws -> Generation {
        try run(prompt: prompt, image: image, options: options, onToken: onText.map { onText in
            { _, text, _ in
                if !text.isEmpty { onText(text) }
                return true
            }
        })
    }

    /// Runs one prompt on an encoded image, calling `onToken` with each generated token's id and
    /// the text it completed (empty while a UTF-8 sequence is open), then once with id nil if
    /// the end of generation completes more text. Return false to stop (finish reason
    /// `cancelled`).
    public func generate(prompt: String, image: EncodedImage, options: GenerationOptions = GenerationOptions(),
                         onToken: (_ id: Int?, _ text: String) -> Bool) throws -> Generation {
        try withoutActuallyEscaping(onToken) { onToken in
            try run(prompt: prompt, image: image, options: options, onToken: { id, text, _ in onToken(id, text) })
        }
    }

    /// `generate` reporting each token as a `GeneratedToken` (id, text, log-probability).
    public func generate(prompt: String, image: EncodedImage, options: GenerationOptions = GenerationOptions(),
                         onStep: (GeneratedToken) -> Bool) throws -> Generation {
        try withoutActuallyEscaping(onStep) { onStep in
            try run(prompt: prompt, image: image, options: options, onToken: { id, text, logProb in
                onStep(GeneratedToken(id: id, text: text, logProb: logProb))
            })
        }
    }

    /// The one generation loop behind `generate` and `stream`: prefill and decode timed apart,
    /// text decoded as it comes only when someone listens.
    private func run(prompt: String, image: EncodedImage, options: GenerationOptions,
                     onToken: ((_ id: Int?, _ text: String, _ logProb: Float?) -> Bool)?) throws -> Generation {
        try options.validate()
        // No Gemma piece spans 256 bytes, so a longer prompt than this cannot fit the context;
        // it is refused before the tokenizer spends time on it.
        let byteLimit = model.contextLength * 256
        guard prompt.utf8.count <= byteLimit else {
            throw InputError.option("the prompt has \(prompt.utf8.count) bytes; at most \(byteLimit) can fit the model's context of \(model.contextLength) tokens")
        }
        let p = promptTokens(prompt, images: max(1, image.embedding.rows.rows / max(1, model.numImageTokens)))
        let ids = p.ids.map(Int.init), types = p.tokenTypes.map(Int.init)
        let options = try model.fitToContext(options, promptTokens: ids.count)
        let session = model.makeSession(maxTokens: ids.count + options.maxNewTokens)
        var decoder = tokenizer.streamingDecoder()
        var clock = DispatchTime.now().uptimeNanoseconds
        var prefillSeconds = 0.0
        var first = true
        let result = try session.generate(prompt: ids, tokenTypes: types, image: image.embedding, options: options,
                                          stopTokens: Set(model.config.text.eosTokenIDs)) { token, logProb in
            if first {
                let now = DispatchTime.now().uptimeNanoseconds
                prefillSeconds = Double(now - clock) / 1e9
                clock = now
                first = false
            }
            guard let onToken else { return true }
            return onToken(token, decoder.append(Int32(token)), logProb)
        }
        if first {
            // Stopped on the very first token: all of it was prefill.
            prefillSeconds = Double(DispatchTime.now().uptimeNanoseconds - clock) / 1e9
            clock = DispatchTime.now().uptimeNanoseconds
        }
        if let onToken {
            let rest = decoder.finish()
            if !rest.isEmpty { _ = onToken(nil, rest, nil) }
        }
        let decodeSeconds = Double(DispatchTime.now().uptimeNanoseconds - clock) / 1e9
        return Generation(
            prompt: prompt, text: tokenizer.decode(result.tokens.map(Int32.init), skipSpecialTokens: true),
            tokenIDs: result.tokens, tokenLogProbs: result.logProbs, finishReason: result.finishReason,
            timings: .init(imageSeconds: image.seconds, prefillSeconds: prefillSeconds, decodeSeconds: decodeSeconds,
                           promptTokens: ids.count, generatedTokens: result.tokens.count))
    }

    /// The same as `generate`, as an asynchronous stream of tokens ending with the full result.
    public func stream(prompt: String, image: EncodedImage,
                       options: GenerationOptions = GenerationOptions()) -> AsyncThrowingStream<GenerationEvent, Error> {
        AsyncThrowingStream { continuation in
            let task = Task.detached { [self] in
                do {
                    var last: Int?
                    let generation = try generate(prompt: prompt, image: image, options: options) { id, text in
                        // The closing piece (id nil) is reported with the last token's id.
                        if let id { last = id }
                        continuation.yield(.token(id: id ?? last ?? 0, text: text))
                        return !Task.isCancelled
                    }
                    continuation.yield(.finished(generation))
                    continuation.finish()
                } catch {
                    continuation.finish(throwing: error)
                }
            }
            continuation.onTermination = { _ in task.cancel() }
        }
    }
}
