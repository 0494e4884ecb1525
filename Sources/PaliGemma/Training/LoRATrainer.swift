import Foundation
import GemmaTokenizer
import Imaging
import Kernels

/// One training pair: an image, the prompt (`prefix`, e.g. "caption es") and the answer to learn.
public struct TrainingExample: Sendable, Codable, Equatable {
    public var image: URL
    public var prefix: String
    public var suffix: String
    /// Line in the data file (1-based), for messages.
    public var line: Int

    public init(image: URL, prefix: String, suffix: String, line: Int = 0) {
        self.image = image
        self.prefix = prefix
        self.suffix = suffix
        self.line = line
    }

    /// Reads a JSONL file of `{"image": "a.jpg", "prefix": "caption es", "suffix": "…"}`, image
    /// paths relative to the file. Returns the usable examples and one message per skipped line.
    public static func load(jsonl url: URL) throws -> (examples: [TrainingExample], skipped: [String]) {
        let data: Data
        do { data = try Data(contentsOf: url) } catch {
            throw LoRAError.invalid("cannot read the data file \(url.path): \(error.localizedDescription)")
        }
        guard let text = String(data: data, encoding: .utf8) else {
            throw LoRAError.invalid("the data file \(url.path) is not UTF-8 text")
        }
        let base = url.deletingLastPathComponent()
        var examples: [TrainingExample] = [], skipped: [String] = []
        for (i, raw) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let line = raw.trimmingCharacters(in: .whitespacesAndNewlines)
            if line.isEmpty { continue }
            let where_ = "\(url.lastPathComponent):\(i + 1)"
            guard let object = (try? JSONSerialization.jsonObject(with: Data(line.utf8))) as? [String: Any] else {
                skipped.append("\(where_): not a JSON object"); continue
            }
            guard let image = object["image"] as? String, !image.isEmpty else { skipped.append("\(where_): no \"image\" path"); continue }
            guard let prefix = object["prefix"] as? String else { skipped.append("\(where_): no \"prefix\" string"); continue }
            guard let suffix = object["suffix"] as? String, !suffix.isEmpty else { skipped.append("\(where_): no \"suffix\" string"); continue }
            let imageURL = image.hasPrefix("/") ? URL(fileURLWithPath: image) : base.appendingPathComponent(image)
            guard FileManager.default.isReadableFile(atPath: imageURL.path) else {
                skipped.append("\(where_): image \(imageURL.path) does not exist or is not readable"); continue
            }
            examples.append(TrainingExample(image: imageURL, prefix: prefix, suffix: suffix, line: i + 1))
        }
        return (examples, skipped)
    }
}

/// How to fine-tune: LoRA's shape and the optimiser's schedule.
public struct FinetuneOptions: Codable, Sendable, Equatable {
    public var lora = LoRAConfig()
    public var learningRate: Float = 2e-4
    public var epochs = 1
    /// Examples per forward/backward batch.
    public var batchSize = 1
    /// Batches accumulated per optimiser step.
    public var gradientAccumulation = 1
    public var warmupSteps = 0
    public var weightDecay: Float = 0.01
    public var maxGradNorm: Float = 1.0
    public var seed: UInt64 = 0
    /// Checkpoint every this many optimiser steps (0: only at the end of each epoch).
    public var saveEvery = 0

    public init() {}

    public func validate() throws {
        try lora.validate()
        guard learningRate.isFinite && learningRate > 0 && learningRate < 1 else { throw LoRAError.invalid("--lr \(learningRate) must be within (0, 1)") }
        guard (1...1000).contains(epochs) else { throw LoRAError.invalid("--epochs \(epochs) must be within 1...1000") }
        guard (1...1024).contains(batchSize) else { throw LoRAError.invalid("--batch \(batchSize) must be within 1...1024") }
        guard (1...1024).contains(gradientAccumulation) else { throw LoRAError.invalid("--grad-accum \(gradientAccumulation) must be within 1...1024") }
        guard warmupSteps >= 0 else { throw LoRAError.invalid("--warmup must not be negative") }
        guard weightDecay >= 0 && weightDecay < 1 else { throw LoRAError.invalid("--weight-decay \(weightDecay) must be within 0 ..< 1") }
        guard maxGradNorm > 0 else { throw LoRAError.invalid("--max-grad-norm must be positive") }
        guard saveEvery >= 0 else { throw LoRAError.invalid("--save-every must not be negative") }
    }

    /// Examples per optimiser step.
    public var examplesPerStep: Int { batchSize * gradientAccumulation }
}

/// A training example tokenized, its image encoded (the vision tower is frozen, so once).
struct PreparedSequence {
    let ids: [Int]
    let prefixLength: Int
    let image: ImageEmbedding
    var targets: [Int] { Array(ids[prefixLength...]) }
}

/// What one optimiser step did.
public struct StepReport: Sendable, Codable {
    public var step: Int
    public var totalSteps: Int
    public var epoch: Int
    /// Mean cross-entropy over the step's answer tokens (before the update).
    public var loss: Float
    public var learningRate: Float
    /// Gradient 2-norm before clipping.
    public var gradientNorm: Float
    public var tokens: Int
    public var seconds: Double
}

/// LoRA fine-tuning of the Gemma decoder of a PaliGemma model. The base weights stay frozen and
/// memory-mapped; the adapter (shared with the model, so generation uses it) is trained in place.
///
/// ```swift
/// let trainer = try LoRATrainer(modelDirectory: url, options: options)
/// let reports = try trainer.train(examples) { print($0.loss) }
/// try trainer.adapter.save(to: out, baseModel: "Models/demo")
/// ```
public final class LoRATrainer {
    public let model: PaliGemmaModel
    /// The tokenizer and image pipeline for examples (nil when built on a bare model).
    public let pipeline: PaliGemmaPipeline?
    public let adapter: LoRAAdapter
    public let options: FinetuneOptions
    let core: Gemma2Trainer
    let gradients: LoRAGradients
    var optimizer: AdamW
    private var imageCache: [URL: ImageEmbedding] = [:]
    private var cachedFloats = 0
    /// Bound on cached image embeddings (floats): past it images are re-encoded each time.
    private let cacheBudget = 512 << 20

    /// Optimiser steps taken.
    public var step: Int { optimizer.steps }

    /// - Parameter adapter: continue from these weights (nil: a fresh adapter, seeded by `options.seed`).
    public convenience init(modelDirectory: URL, options: FinetuneOptions, adapter: LoRAAdapter? = nil, threads: Int? = nil) throws {
        try options.validate()
        let config = try PaliGemmaConfig.load(from: modelDirectory.appendingPathComponent("config.json"))
        let adapter = try adapter ?? LoRAAdapter(config: options.lora, text: config.text, seed: options.seed)
        let pipeline = try PaliGemmaPipeline(directory: modelDirectory, backend: Self.backend(threads: threads), adapter: adapter)
        self.init(model: pipeline.model, pipeline: pipeline, options: options)
    }

    /// float32 products throughout: gradients within the parity bound of PyTorch float32.
    static func backend(threads: Int?) -> FastBackend { FastBackend(threads: threads, bf16Products: false, int8Activations: false) }

    /// Trains `model`'s adapter (the model must have been loaded with one). Without a pipeline
    /// (no tokenizer), only prepared sequences can be trained on.
    init(model: PaliGemmaModel, pipeline: PaliGemmaPipeline?, options: FinetuneOptions) {
        precondition(model.decoder.adapter != nil, "the model has no adapter to train")
        let adapter = model.decoder.adapter!
        self.model = model
        self.pipeline = pipeline
        self.adapter = adapter
        self.options = options
        core = Gemma2Trainer(decoder: model.decoder, adapter: adapter,
                             transposed: TransposedWeights(decoder: model.decoder), backend: model.backend)
        gradients = LoRAGradients(like: adapter)
        optimizer = AdamW(parameters: Self.parameters(adapter), weightDecay: options.weightDecay)
    }

    static func parameters(_ adapter: LoRAAdapter) -> [Matrix] { adapter.orderedPairs.flatMap { [$0.pair.a, $0.pair.b] } }
    private var gradientMatrices: [Matrix] {
        adapter.orderedPairs.flatMap { [gradients.pairs[$0.layer][$0.target]!.a, gradients.pairs[$0.layer][$0.target]!.b] }
    }

    func prepare(_ example: TrainingExample) throws -> PreparedSequence {
        guard let pipeline else { preconditionFailure("a trainer built on a bare model takes prepared sequences only") }
        let image: ImageEmbedding
        if let cached = imageCache[example.image] {
            image = cached
        } else {
            image = try pipeline.encode(image: pipeline.loadImage(example.image)).embedding
            let floats = image.rows.rows * image.rows.columns
            if cachedFloats + floats <= cacheBudget {
                imageCache[example.image] = image
                cachedFloats += floats
            }
        }
        let prompt = pipeline.tokenizer.paliGemmaPrompt(prefix: example.prefix, imageTokens: image.rows.rows, suffix: example.suffix)
        let ids = prompt.ids.map(Int.init)
        let prefixLength = prompt.tokenTypes.firstIndex(of: 1) ?? ids.count
        guard prefixLength < ids.count else { throw LoRAError.invalid("line \(example.line): the answer is empty") }
        guard ids.count <= model.contextLength else {
            throw InputError.contextExceeded(promptTokens: ids.count, context: model.contextLength)
        }
        return PreparedSequence(ids: ids, prefixLength: prefixLength, image: image)
    }

    /// Loss and gradients of a set of sequences, the loss being the mean over all their answer
    /// tokens (transformers' per-token mean over a batch). Gradients are left in `gradients`.
    func lossAndGradients(_ sequences: [PreparedSequence], dropoutStream: UInt64 = 0, training: Bool = true) throws -> (loss: Float, tokens: Int) {
        gradients.zero()
        let tokens = sequences.reduce(0) { $0 + $1.ids.count - $1.prefixLength }
        let dropout = training && adapter.config.dropout > 0 ? DropoutMask(probability: adapter.config.dropout, seed: options.seed) : nil
        var total: Float = 0
        for (i, s) in sequences.enumerated() {
            let x = Matrix(rows: s.ids.count, columns: model.config.text.hiddenSize)
            try model.embedPrompt(s.ids, image: s.image, into: x)
            let keep = LayerActivations.floats(rows: s.ids.count, config: core.config) * core.decoder.layers.count <= 512 << 20
            total += core.lossAndGradients(embeddings: x, prefixLength: s.prefixLength, firstTarget: s.prefixLength,
                                           targets: s.targets, gradScale: 1 / Float(tokens), dropout: dropout,
                                           stream: dropoutStream &* 4096 &+ UInt64(i), grads: gradients, keepAll: keep)
        }
        return (total / Float(tokens), tokens)
    }

    /// Clips the gradients and takes one AdamW step at `learningRate`. Returns the norm before clipping.
    func applyGradients(learningRate: Float) -> Float {
        let norm = AdamW.clip(gradientMatrices, maxNorm: options.maxGradNorm)
        optimizer.step(parameters: Self.parameters(adapter), gradients: gradientMatrices, learningRate: learningRate)
        return norm
    }
}

extension PaliGemmaPipeline {
    /// Loads the checkpoint with a LoRA adapter applied (see ``PaliGemmaModel/init(directory:backend:adapter:)``).
    public convenience init(directory: URL, backend: ComputeBackend? = nil, adapterDirectory: URL) throws {
        let config = try PaliGemmaConfig.load(from: directory.appendingPathComponent("config.json"))
        let adapter = try LoRAAdapter.load(from: adapterDirectory, text: config.text)
        try self.init(directory: directory, backend: backend, adapter: adapter)
    }
}
