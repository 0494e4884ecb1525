import Foundation
import Kernels
import SafeTensors

/// Bad input to the model: ids, token types, pixels or lengths that do not fit it.
public enum InputError: Error, CustomStringConvertible, Sendable, Equatable {
    case tokenOutOfRange(id: Int, vocabularySize: Int)
    case imageTokenCount(found: Int, expected: Int)
    case tokenTypes(String)
    case pixelCount(found: Int, expected: Int, imageSize: Int)
    case tooLong(tokens: Int, capacity: Int)
    /// The prompt leaves no room to generate in the model's context.
    case contextExceeded(promptTokens: Int, context: Int)
    case empty
    case option(String)

    public var description: String {
        switch self {
        case let .tokenOutOfRange(id, v):
            return "token id \(id) is outside the vocabulary (0..<\(v))"
        case let .imageTokenCount(found, expected):
            return "the prompt holds \(found) <image> tokens but the model expects \(expected) (one per patch); build prompts with the PaliGemma prompt builder"
        case let .tokenTypes(reason):
            return "token types: \(reason)"
        case let .pixelCount(found, expected, size):
            return "pixel array has \(found) values; a \(size)×\(size) RGB image needs \(expected) (3×\(size)×\(size), channels first)"
        case let .tooLong(tokens, capacity):
            return "\(tokens) tokens do not fit the session's capacity of \(capacity); create the session with a larger maxTokens"
        case let .contextExceeded(tokens, context):
            return "the prompt takes \(tokens) tokens (image tokens included) but the model's context is \(context) "
                + "(max_position_embeddings), leaving no room for an answer; shorten the prompt"
        case .empty:
            return "the prompt is empty"
        case let .option(reason):
            return reason
        }
    }
}

/// Projected image features: one row per image token, ready to be placed in a prompt. Encode an
/// image once and reuse it for several prompts.
// @unchecked Sendable: `Matrix` is a mutable buffer, but this one is written only while
// `encodeImage` creates it; afterwards sessions only read it (copying its rows into their own
// buffers), so any number of threads may share it.
public struct ImageEmbedding: @unchecked Sendable {
    /// [numImageTokens × images, text hidden size]
    public let rows: Matrix

    public init(rows: Matrix) { self.rows = rows }

    /// Several images' rows one after the other, as the processor places several images' tokens
    /// before the prompt.
    public init(concatenating parts: [ImageEmbedding]) {
        let columns = parts.first?.rows.columns ?? 0
        precondition(parts.allSatisfy { $0.rows.columns == columns }, "embeddings of one model have one width")
        let out = Matrix(rows: parts.reduce(0) { $0 + $1.rows.rows }, columns: columns)
        var row = 0
        for part in parts {
            out.copyRows(from: part.rows, count: part.rows.rows, to: row)
            row += part.rows.rows
        }
        rows = out
    }
}

/// A loaded PaliGemma 2 checkpoint: SigLIP vision tower → linear projector → Gemma 2 decoder.
///
/// ```swift
/// let model = try PaliGemmaModel(directory: URL(fileURLWithPath: "paligemma2-3b-pt-224"))
/// let image = try model.encodeImage(pixels: pixels)          // 3×224×224 floats in [-1, 1]
/// let result = try model.generate(prompt: ids, tokenTypes: types, image: image,
///                                  options: GenerationOptions(maxNewTokens: 32))
/// ```
public final class PaliGemmaModel: Sendable {
    public let config: PaliGemmaConfig
    public let directory: URL
    public let backend: ComputeBackend
    let vision: SigLIPVisionTower
    let projector: WeightMatrix     // multi_modal_projector.linear.weight  [H, Dv]
    let projectorBias: [Float]      // multi_modal_projector.linear.bias  [H]
    let decoder: Gemma2Decoder
    private let checkpoint: SafeTensorsCheckpoint
    private let batchingBox = BatchingBox()
    /// The big_vision `.npz` tree the weights were read from; nil for a Hugging Face checkpoint.
    public let bigVisionTree: URL?

    /// Loads `config.json` and the safetensors weights (single file or sharded) from `directory`,
    /// or a big_vision `.npz` tree (Kaggle's files) given as the file or its folder.
    /// Weights stay memory-mapped (a tree's input-major kernels are transposed once into memory).
    /// Throws `CheckpointError`/`SafeTensorsError`/`NpzError` naming the problem.
    /// - Parameter adapter: LoRA weights applied at inference (and trained in place by ``LoRATrainer``).
    public init(directory: URL, backend: ComputeBackend = FastBackend(), adapter: LoRAAdapter? = nil) throws {
        let location = try CheckpointLocation(directory)
        self.directory = location.directory
        bigVisionTree = location.bigVisionTree
        self.backend = backend
        (config, checkpoint) = try location.open()
        let reader = CheckpointReader(checkpoint: checkpoint)
        vision = try SigLIPVisionTower(config: config.vision, reader: reader)
        let p = try reader.prefix(among: ["multi_modal_projector.", "model.multi_modal_projector."], probe: "linear.weight")
        projector = try reader.matrix(p + "linear.weight", shape: [config.text.hiddenSize, config.vision.hiddenSize])
        projectorBias = try reader.vector(p + "linear.bias", count: config.text.hiddenSize)
        let source: WeightFormat? = config.quantization.map {
            switch $0.sourceDType { case "f32": return .f32; case "f16": return .f16; default: return .bf16 }
        }
        var decoder = try Gemma2Decoder(config: config.text, reader: reader, sourceFormat: source)
        if let adapter {
            guard adapter.visionPairs.isEmpty || adapter.visionPairs.count == config.vision.numHiddenLayers else {
                throw LoRAError.invalid("the adapter has \(adapter.visionPairs.count) vision layers; the model has \(config.vision.numHiddenLayers)")
            }
            guard adapter.layerCount == config.text.numHiddenLayers else {
                throw LoRAError.invalid("the adapter has \(adapter.layerCount) layers; the model has \(config.text.numHiddenLayers)")
            }
            adapter.tokens?.fillIfNeeded(from: decoder.embedTokens)
            decoder.adapter = adapter
        }
        self.decoder = decoder
        try reader.checkNothingLeft()
    }

    /// Image tokens per prompt, `(image_size / patch_size)²`.
    public var numImageTokens: Int { config.numImageTokens }
    /// Pixels per side the vision tower takes.
    public var imageSize: Int { config.vision.imageSize }

    /// The vision tower's output for one image: [numImageTokens, vision hidden].
    public func visionFeatures(pixels: [Float]) throws -> Matrix {
        let s = config.vision.imageSize
        let expected = config.vision.numChannels * s * s
        guard pixels.count == expected else {
            throw InputError.pixelCount(found: pixels.count, expected: expected, imageSize: s)
        }
        let batching = batchedDecoding
        return alone {
            vision.encode(pixels: pixels, backend: backend, adapter: decoder.adapter,
                          betweenLayers: { batching?.interleave() })
        }
    }

    /// Vision tower + projector: the rows that replace the `<image>` tokens.
    public func encodeImage(pixels: [Float]) throws -> ImageEmbedding {
        try alone {
            let features = try visionFeatures(pixels: pixels)
            let out = Matrix(rows: features.rows, columns: config.text.hiddenSize)
            backend.linear(features, projector, bias: projectorBias, into: out)
            return ImageEmbedding(rows: out)
        }
    }

    // MARK: Concurrent generations

    /// Lets generations running at the same time on this model (one per thread, each with its
    /// own session) share every decode step: one read of the weights serves all the sequences
    /// ready for a token, up to `maxSequences` (see ``BatchedDecoding``). Image encoding and
    /// prefill then take the model in turn. Call once, before the concurrent work starts; later
    /// calls return the first coordinator. With a LoRA adapter, its low-rank terms are computed
    /// per sequence inside each shared step.
    @discardableResult
    public func enableBatchedDecoding(maxSequences: Int) -> BatchedDecoding {
        batchingBox.lock.lock()
        defer { batchingBox.lock.unlock() }
        if let existing = batchingBox.value { return existing }
        let made = BatchedDecoding(model: self, maxSequences: maxSequences)
        batchingBox.value = made
        return made
    }

    /// The coordinator of concurrent generations, once enabled.
    public var batchedDecoding: BatchedDecoding? {
        batchingBox.lock.lock()
        defer { batchingBox.lock.unlock() }
        return batchingBox.value
    }

    /// Model work outside a shared decode step, run alone when concurrent generations are on.
    func alone<T>(_ body: () throws -> T) rethrows -> T {
        if let batching = batchedDecoding { return try batching.exclusive(body) }
        return try body()
    }

    /// The decoder's input rows for `prompt`: `embed_tokens[id] · embed_scale` for text, the
    /// image's rows, in order, at the `<image>` positions. Validates ids and the image token count.
    func embedPrompt(_ prompt: [Int], image: ImageEmbedding?, into x: Matrix) throws {
        let c = config
        let imagePositions = prompt.indices.filter { prompt[$0] == c.imageTokenIndex }
        let vocab = c.text.vocabSize
        for id in prompt where id != c.imageTokenIndex && (id < 0 || id >= vocab) {
            throw InputError.tokenOutOfRange(id: id, vocabularySize: vocab)
        }
        if let image {
            guard imagePositions.count == image.rows.rows else {
                throw InputError.imageTokenCount(found: imagePositions.count, expected: image.rows.rows)
            }
        } else if !imagePositions.isEmpty {
            throw InputError.imageTokenCount(found: imagePositions.count, expected: 0)
        }

        // Text rows: embed_tokens[id] · embed_scale (the image token, out of the table when
        // image_token_index ≥ vocab, looks up pad instead); image rows: projected features, unscaled.
        let lookup = prompt.map { $0 == c.imageTokenIndex && $0 >= vocab ? c.text.padTokenID : $0 }
        backend.embed(lookup, table: decoder.embedTokens, scale: decoder.embedScale, into: x)
        decoder.replaceTokenRows(lookup, in: x)
        if let image {
            for (i, position) in imagePositions.enumerated() {
                x.copyRows(from: image.rows, sourceRow: i, count: 1, to: position)
            }
        }
    }

    /// The context: prompt and answer together never exceed it.
    public var contextLength: Int { config.text.maxPositionEmbeddings }

    /// `options` with `maxNewTokens` cut to what the context leaves after `promptTokens`, so the
    /// KV cache is never sized past the context; throws when the prompt alone fills it.
    public func fitToContext(_ options: GenerationOptions, promptTokens: Int) throws -> GenerationOptions {
        try options.validate()
        guard promptTokens < contextLength else { throw InputError.contextExceeded(promptTokens: promptTokens, context: contextLength) }
        var fitted = options
        fitted.maxNewTokens = min(options.maxNewTokens, contextLength - promptTokens)
        return fitted
    }

    /// A decoding session with room for `maxTokens` tokens (prompt + generated).
    public func makeSession(maxTokens: Int) -> InferenceSession {
        InferenceSession(model: self, capacity: maxTokens)
    }

    /// Greedy (or custom-sampled) generation from a prompt, stopping at an end-of-sequence token
    /// or after `maxNewTokens`.
    public func generate(prompt: [Int], tokenTypes: [Int]? = nil, image: ImageEmbedding?,
                         options: GenerationOptions = GenerationOptions(), stopTokens: Set<Int>? = nil,
                         keepLogits: Bool = false) throws -> GenerationResult {
        let options = try fitToContext(options, promptTokens: prompt.count)
        let session = makeSession(maxTokens: prompt.count + options.maxNewTokens)
        return try session.generate(prompt: prompt, tokenTypes: tokenTypes, image: image, options: options,
                                    stopTokens: stopTokens ?? Set(config.text.eosTokenIDs), keepLogits: keepLogits)
    }
}

/// Holds the model's coordinator of concurrent generations once it is made.
// @unchecked Sendable: `value` is only touched under `lock`.
final class BatchingBox: @unchecked Sendable {
    let lock = NSLock()
    var value: BatchedDecoding?
}

/// What generation produced.
public struct GenerationResult: Sendable {
    /// Generated ids, including the stop token when one ended generation.
    public var tokens: [Int]
    /// Natural-log probability the model gave each token (softmax of its logits).
    public var logProbs: [Float]
    /// Logits of every step (only when asked for), `tokens.count × vocab`.
    public var logits: [[Float]]
    /// Why generation ended.
    public var finishReason: FinishReason
    public enum FinishReason: String, Sendable, Codable {
        case stopToken = "stop", maxTokens = "length", cancelled = "cancelled"
    }
}

/// One sequence being decoded: the KV cache and every activation buffer, allocated once.
/// Not thread-safe; use one session per concurrent request.
public final class InferenceSession {
    public let model: PaliGemmaModel
    let state: Gemma2State
    private let lastHidden: Matrix   // [1, H]
    private let lastNormed: Matrix   // [1, H]
    /// The one id a decode step embeds, reused so a step allocates nothing.
    var stepToken = [0]
    /// Shares decode steps with the model's other sessions (``PaliGemmaModel/enableBatchedDecoding(maxSequences:)``).
    let batching: BatchedDecoding?

    init(model: PaliGemmaModel, capacity: Int) {
        self.model = model
        batching = model.batchedDecoding
        state = Gemma2State(config: model.config.text, capacity: max(1, capacity), loraRank: model.decoder.adapter?.config.rank)
        lastHidden = Matrix(rows: 1, columns: model.config.text.hiddenSize)
        lastNormed = Matrix(rows: 1, columns: model.config.text.hiddenSize)
    }

    /// Tokens in the cache.
    public var length: Int { state.length }
    public var capacity: Int { state.capacity }

    /// Forgets the sequence (keeps the buffers).
    public func reset() {
        state.length = 0
        state.prefixLength = 0
    }

    /// Which prefill positions to compute logits for.
    public enum LogitsRows: Sendable { case last, all }

    /// Runs the prompt through the decoder. `tokenTypes` (default all 0) marks the bidirectional
    /// prefix (0: image + prompt) and the causal suffix (1); the zeros must come first. The
    /// `<image>` positions take the rows of `image`, in order.
    /// - Returns: logits [1 or prompt.count, vocab].
    @discardableResult
    public func prefill(prompt: [Int], tokenTypes: [Int]? = nil, image: ImageEmbedding?,
                        logits rows: LogitsRows = .last) throws -> Matrix {
        try model.alone {
            // Concurrent generations reuse a prefill of the same image encoding and prompt.
            guard let batching, let image, rows == .last else {
                return try prefillAlone(prompt: prompt, tokenTypes: tokenTypes, image: image, logits: rows)
            }
            let types = tokenTypes ?? [Int](repeating: 0, count: prompt.count)
            guard state.length == 0 else { throw InputError.tokenTypes("prefill must start a sequence; call reset() first") }
            if batching.prefills.restore(image: image.rows, ids: prompt, types: types, into: state) { return state.lastLogits }
            let logits = try prefillAlone(prompt: prompt, tokenTypes: tokenTypes, image: image, logits: rows)
            batching.prefills.store(image: image.rows, ids: prompt, types: types, from: state)
            return logits
        }
    }

    private func prefillAlone(prompt: [Int], tokenTypes: [Int]?, image: ImageEmbedding?, logits rows: LogitsRows) throws -> Matrix {
        let c = model.config
        guard !prompt.isEmpty else { throw InputError.empty }
        let types = tokenTypes ?? [Int](repeating: 0, count: prompt.count)
        guard types.count == prompt.count else {
            throw InputError.tokenTypes("\(types.count) token types for \(prompt.count) tokens")
        }
        guard types.allSatisfy({ $0 == 0 || $0 == 1 }) else { throw InputError.tokenTypes("only 0 and 1 are allowed") }
        let prefixLength = types.firstIndex(of: 1) ?? types.count
        guard types[prefixLength...].allSatisfy({ $0 == 1 }) else {
            throw InputError.tokenTypes("the prefix (0) must precede the suffix (1)")
        }
        guard state.length == 0 else {
            throw InputError.tokenTypes("prefill must start a sequence; call reset() first")
        }
        guard prompt.count <= state.capacity else { throw InputError.tooLong(tokens: prompt.count, capacity: state.capacity) }
        try model.embedPrompt(prompt, image: image, into: state.x)
        state.prefixLength = prefixLength
        model.decoder.forward(state, backend: model.backend, lastRowOnly: rows == .last,
                              betweenLayers: { [batching] in batching?.interleave() })
        switch rows {
        case .last:
            lastHidden.copyRows(from: state.x, sourceRow: state.x.rows - 1, count: 1, to: 0)
            model.decoder.logits(hidden: lastHidden, into: state.lastLogits, scratch: lastNormed, backend: model.backend)
            return state.lastLogits
        case .all:
            let out = Matrix(rows: prompt.count, columns: c.text.vocabSize)
            let scratch = Matrix(rows: prompt.count, columns: c.text.hiddenSize)
            model.decoder.logits(hidden: state.x, into: out, scratch: scratch, backend: model.backend)
            return out
        }
    }

    /// Feeds one generated token (causal, type 1) and returns the next logits [1, vocab].
    /// Allocates nothing: the returned matrix is reused by the next call.
    public func step(token: Int) throws -> Matrix {
        let vocab = model.config.text.vocabSize
        guard token >= 0 && token < vocab else { throw InputError.tokenOutOfRange(id: token, vocabularySize: vocab) }
        guard state.length + 1 <= state.capacity else {
            throw InputError.tooLong(tokens: state.length + 1, capacity: state.capacity)
        }
        stepToken[0] = token
        if let batching { return try batching.step(self) }
        model.backend.embed(stepToken, table: model.decoder.embedTokens, scale: model.decoder.embedScale, into: state.x)
        model.decoder.replaceTokenRows(stepToken, in: state.x)
        model.decoder.forward(state, backend: model.backend)
        model.decoder.logits(hidden: state.x, into: state.lastLogits, scratch: lastNormed, backend: model.backend)
        return state.lastLogits
    }

    /// Prefill, then pick tokens (greedy unless `options` says otherwise) until a stop token or
    /// `options.maxNewTokens`. `onToken` sees each token and its log-probability as it is picked;
    /// returning false stops.
    public func generate(prompt: [Int], tokenTypes: [Int]? = nil, image: ImageEmbedding?,
                         options: GenerationOptions = GenerationOptions(), stopTokens: Set<Int>,
                         keepLogits: Bool = false, onToken: ((_ token: Int, _ logProb: Float) -> Bool)? = nil) throws -> GenerationResult {
        try options.validate()
        reset()
        var logits = try prefill(prompt: prompt, tokenTypes: tokenTypes, image: image, logits: .last)
        batching?.enter()
        defer { batching?.leave() }
        var sampler = Sampler(options: options, vocabularySize: logits.columns)
        var result = GenerationResult(tokens: [], logProbs: [], logits: [], finishReason: .maxTokens)
        result.tokens.reserveCapacity(options.maxNewTokens)
        result.logProbs.reserveCapacity(options.maxNewTokens)
        while result.tokens.count < options.maxNewTokens {
            let (next, logProb) = sampler.pick(logits)
            result.tokens.append(next)
            result.logProbs.append(logProb)
            if keepLogits { result.logits.append(logits.row(0)) }
            if stopTokens.contains(next) {
                result.finishReason = .stopToken
                break
            }
            if let onToken, !onToken(next, logProb) {
                result.finishReason = .cancelled
                break
            }
            if result.tokens.count == options.maxNewTokens { break }
            logits = try step(token: next)
        }
        return result
    }

    /// Index of the largest value in row 0 (first on ties, like torch.argmax).
    static func argmax(_ logits: Matrix) -> Int { logits.argmax(row: 0) }
}

extension PaliGemmaModel {
    /// Weight formats in use and their total size, e.g. "bf16 (6.06 GB)".
    public var weightSummary: String {
        var bytes: [String: Int] = [:]
        for t in checkpoint.tensors { bytes[t.dtype.rawValue.lowercased(), default: 0] += t.byteCount }
        return bytes.sorted { $0.value > $1.value }
            .map { String(format: "%@ (%.2f GB)", $0.key, Double($0.value) / 1e9) }.joined(separator: ", ")
    }

    /// Bytes of weights (mapped from disk, or rearranged in memory from a big_vision tree).
    public var weightBytes: Int { checkpoint.tensors.reduce(0) { $0 + $1.byteCount } }
}

extension PaliGemmaModel {
    /// Bytes per element of the decoder's matrices (what a decode step streams).
    public var decoderBytesPerWeight: Double { decoder.layers.first?.gate.format.bytesPerWeight ?? 2 }

    /// Bytes of weights one decode step reads: every decoder matrix and the output projection.
    public var decodeBytesPerToken: Double {
        let layerBytes = decoder.layers.reduce(0) { sum, l in
            sum + [l.q, l.k, l.v, l.o, l.gate, l.up, l.down].reduce(0) { $0 + $1.byteCount }
        }
        return Double(layerBytes + decoder.lmHead.byteCount)
    }
}
