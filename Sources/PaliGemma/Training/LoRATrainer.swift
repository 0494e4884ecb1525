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
    /// The image's rows, when the vision tower is frozen.
    var image: ImageEmbedding?
    /// The preprocessed image, when LoRA adapts the tower (its rows change as it trains).
    var pixels: [Float]?
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
    /// The vision tower's pass, when LoRA adapts it.
    let vision: SigLIPTrainer?
    let gradients: LoRAGradients
    var optimizer: AdamW
    private var imageCache: [URL: ImageEmbedding] = [:]
    private var pixelCache: [URL: [Float]] = [:]
    private var cachedFloats = 0
    /// Bound on cached image embeddings (floats): past it images are re-encoded each time.
    private let cacheBudget = 512 << 20

    /// Optimiser steps taken.
    public var step: Int { optimizer.steps }

    /// - Parameters:
    ///   - adapter: continue from these weights (nil: a fresh adapter, seeded by `options.seed`).
    ///   - threads: workers (nil: every core, or one for decoders under 1024 wide).
    public convenience init(modelDirectory: URL, options: FinetuneOptions, adapter: LoRAAdapter? = nil, threads: Int? = nil) throws {
        try options.validate()
        let config = try PaliGemmaConfig.load(from: modelDirectory.appendingPathComponent("config.json"))
        let adapter = try adapter ?? LoRAAdapter(config: options.lora, text: config.text, vision: config.vision, seed: options.seed)
        // A small decoder's products are too small to split: waking a second worker for each
        // costs more than it saves (the demo model trains 1.7× faster on one thread than on two).
        let threads = threads ?? (config.text.hiddenSize < 1024 ? 1 : nil)
        let pipeline = try PaliGemmaPipeline(directory: modelDirectory, backend: Self.backend(threads: threads), adapter: adapter)
        try self.init(model: pipeline.model, pipeline: pipeline, options: options)
    }

    /// The kernels training uses: float32 products throughout, for gradients within the parity
    /// bound of PyTorch float32.
    public static func backend(threads: Int?) -> FastBackend { FastBackend(threads: threads, bf16Products: false, int8Activations: false) }

    /// Trains the adapter of `model`, which must have been loaded with one (and, for gradients
    /// within the parity bound, with ``backend(threads:)``). Without a tokenizer it trains on
    /// token ids only: ``step(on:learningRate:)``.
    public convenience init(model: PaliGemmaModel, options: FinetuneOptions) throws {
        guard model.decoder.adapter != nil else { throw LoRAError.invalid("load the model with an adapter to train") }
        try self.init(model: model, pipeline: nil, options: options)
    }

    /// Trains `model`'s adapter (the model must have been loaded with one). Without a pipeline
    /// (no tokenizer), only prepared sequences can be trained on.
    init(model: PaliGemmaModel, pipeline: PaliGemmaPipeline?, options: FinetuneOptions) throws {
        precondition(model.decoder.adapter != nil, "the model has no adapter to train")
        let adapter = model.decoder.adapter!
        if adapter.tokens?.index[model.config.imageTokenIndex] != nil {
            throw LoRAError.invalid("the image token \(model.config.imageTokenIndex) cannot be a trainable token: its positions hold the image's features")
        }
        self.model = model
        self.pipeline = pipeline
        self.adapter = adapter
        self.options = options
        core = Gemma2Trainer(decoder: model.decoder, adapter: adapter,
                             transposed: TransposedWeights(decoder: model.decoder), backend: model.backend)
        vision = adapter.adaptsVision ? SigLIPTrainer(model: model, adapter: adapter) : nil
        gradients = LoRAGradients(like: adapter)
        optimizer = AdamW(parameters: adapter.parameters, weightDecay: options.weightDecay)
    }

    private var gradientMatrices: [Matrix] { gradients.matrices(for: adapter) }

    func prepare(_ example: TrainingExample) throws -> PreparedSequence {
        guard let pipeline else { preconditionFailure("a trainer built on a bare model takes prepared sequences only") }
        var sequence = PreparedSequence(ids: [], prefixLength: 0)
        if vision != nil {
            // The tower trains: keep the pixels, encode at every step.
            if let cached = pixelCache[example.image] {
                sequence.pixels = cached
            } else {
                let pixels = pipeline.preprocessor.pixelValues(try pipeline.loadImage(example.image))
                if cachedFloats + pixels.count <= cacheBudget {
                    pixelCache[example.image] = pixels
                    cachedFloats += pixels.count
                }
                sequence.pixels = pixels
            }
        } else if let cached = imageCache[example.image] {
            sequence.image = cached
        } else {
            let image = try pipeline.encode(image: pipeline.loadImage(example.image)).embedding
            let floats = image.rows.rows * image.rows.columns
            if cachedFloats + floats <= cacheBudget {
                imageCache[example.image] = image
                cachedFloats += floats
            }
            sequence.image = image
        }
        let prompt = pipeline.tokenizer.paliGemmaPrompt(prefix: example.prefix, imageTokens: model.numImageTokens, suffix: example.suffix)
        let ids = prompt.ids.map(Int.init)
        let prefixLength = prompt.tokenTypes.firstIndex(of: 1) ?? ids.count
        guard prefixLength < ids.count else { throw LoRAError.invalid("line \(example.line): the answer is empty") }
        guard ids.count <= model.contextLength else {
            throw InputError.contextExceeded(promptTokens: ids.count, context: model.contextLength)
        }
        return PreparedSequence(ids: ids, prefixLength: prefixLength, image: sequence.image, pixels: sequence.pixels)
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
            var towerPass: (rows: Matrix, layers: [SigLIPLayerActivations], beforePostNorm: Matrix, features: Matrix)?
            var image = s.image
            if let vision {
                guard let pixels = s.pixels else { throw LoRAError.invalid("training the vision tower needs each example's pixels") }
                towerPass = vision.forward(pixels: pixels)
                image = ImageEmbedding(rows: towerPass!.rows)
            }
            try model.embedPrompt(s.ids, image: image, into: x)
            let keep = LayerActivations.floats(rows: s.ids.count, config: core.config) * core.decoder.layers.count <= 512 << 20
            let dInput = towerPass == nil ? nil : Matrix(rows: s.ids.count, columns: x.columns)
            total += core.lossAndGradients(ids: s.ids, embeddings: x, prefixLength: s.prefixLength, firstTarget: s.prefixLength,
                                           targets: s.targets, gradScale: 1 / Float(tokens), dropout: dropout,
                                           stream: dropoutStream &* 4096 &+ UInt64(i), grads: gradients, keepAll: keep,
                                           inputGradient: dInput)
            if let vision, let pass = towerPass, let dInput {
                // The image tokens' rows, in order, carry the gradient into the tower.
                let dRows = Matrix(rows: pass.rows.rows, columns: pass.rows.columns)
                var row = 0
                for (p, id) in s.ids.enumerated() where id == model.config.imageTokenIndex {
                    dRows.copyRows(from: dInput, sourceRow: p, count: 1, to: row)
                    row += 1
                }
                vision.backward(dRows: dRows, layers: pass.layers, beforePostNorm: pass.beforePostNorm, grads: gradients.visionPairs)
            }
        }
        return (total / Float(tokens), tokens)
    }

    /// One optimiser step on tokenized sequences: `ids` hold the image tokens, `<bos>`, the prompt
    /// and `\n` (the first `prefixLength`), then the answer and `<eos>`; `image` gives the image
    /// tokens' rows. Returns the mean loss over the answers' tokens and the gradient norm.
    public func step(on sequences: [(ids: [Int], prefixLength: Int, image: ImageEmbedding)],
                     learningRate: Float) throws -> (loss: Float, tokens: Int, gradientNorm: Float) {
        for s in sequences where !(1..<s.ids.count).contains(s.prefixLength) {
            throw LoRAError.invalid("prefix length \(s.prefixLength) leaves no answer in \(s.ids.count) tokens")
        }
        guard vision == nil else { throw LoRAError.invalid("step(on:) takes encoded images; with LoRA on the vision tower, train on examples") }
        let (loss, tokens) = try lossAndGradients(sequences.map { PreparedSequence(ids: $0.ids, prefixLength: $0.prefixLength, image: $0.image) })
        return (loss, tokens, applyGradients(learningRate: learningRate))
    }

    /// Clips the gradients and takes one AdamW step at `learningRate`. Returns the norm before clipping.
    func applyGradients(learningRate: Float) -> Float {
        let norm = AdamW.clip(gradientMatrices, maxNorm: options.maxGradNorm)
        optimizer.step(parameters: adapter.parameters, gradients: gradientMatrices, learningRate: learningRate)
        return norm
    }
}

extension PaliGemmaPipeline {
    /// Loads the checkpoint with a LoRA adapter applied (see ``PaliGemmaModel/init(directory:backend:adapter:)``).
    public convenience init(directory: URL, backend: ComputeBackend? = nil, adapterDirectory: URL) throws {
        let config = try PaliGemmaConfig.load(from: directory.appendingPathComponent("config.json"))
        let adapter = try LoRAAdapter.load(from: adapterDirectory, text: config.text, vision: config.vision)
        try self.init(directory: directory, backend: backend, adapter: adapter)
    }
}

/// What validation measured after an epoch.
public struct ValidationReport: Sendable, Codable {
    public var epoch: Int
    /// Mean cross-entropy over the validation answers' tokens.
    public var loss: Float
    /// Per task of the prompt's first word ("caption es exact", "detect recall@0.5", …), as `eval` names them.
    public var metrics: [String: Double]
    public var examples: Int
}

/// Progress of a run, for a progress line or a log.
public enum TrainingEvent: Sendable {
    case step(StepReport)
    case validation(ValidationReport)
    case checkpoint(step: Int, directory: URL)
    case resumed(step: Int, directory: URL)
}

/// The state saved beside a checkpoint's adapter.
struct TrainerState: Codable {
    var step: Int
    var totalSteps: Int
    var options: FinetuneOptions
    var examples: Int
    var losses: [Float]
}

extension LoRATrainer {
    /// Optimiser steps per epoch and in all, for `count` examples.
    public func schedule(examples count: Int) -> (perEpoch: Int, total: Int) {
        let perEpoch = (count + options.examplesPerStep - 1) / options.examplesPerStep
        return (perEpoch, perEpoch * options.epochs)
    }

    /// The examples of optimiser step `step` (0-based): each epoch visits every example once, in
    /// an order drawn from the seed and the epoch, so a resumed run sees what an uninterrupted one would.
    func batch(step: Int, of examples: [TrainingExample]) -> [TrainingExample] {
        let (perEpoch, _) = schedule(examples: examples.count)
        let epoch = step / perEpoch, within = step % perEpoch
        var rng = SplitMix64(seed: options.seed ^ (UInt64(0xE90C) &* UInt64(epoch + 1)))
        var order = Array(examples.indices)
        for i in stride(from: order.count - 1, to: 0, by: -1) { order.swapAt(i, Int(rng.next() % UInt64(i + 1))) }
        let start = within * options.examplesPerStep
        return order[start..<min(order.count, start + options.examplesPerStep)].map { examples[$0] }
    }

    /// Fine-tunes on `examples` for `options.epochs` epochs, validating on `validation` after each,
    /// checkpointing (adapter + optimiser state, written atomically) into `output/checkpoint-STEP`
    /// every `options.saveEvery` steps and at each epoch's end, and writing the final adapter into
    /// `output`. With `resume`, continues from the newest checkpoint in `output`.
    public func train(_ examples: [TrainingExample], validation: [TrainingExample] = [], output: URL, resume: Bool = false,
                      baseModel: String, onEvent: (TrainingEvent) -> Void = { _ in }) throws {
        guard !examples.isEmpty else { throw LoRAError.invalid("no usable training examples") }
        let (perEpoch, total) = schedule(examples: examples.count)
        var losses: [Float] = []
        var first = 0
        if resume, let (directory, state) = try latestCheckpoint(in: output) {
            guard state.options == options, state.examples == examples.count else {
                throw LoRAError.invalid("\(directory.path) was written with other options or data (\(state.examples) examples); "
                    + "resume with the same command, or choose a new --out")
            }
            try restore(from: directory)
            first = state.step
            losses = state.losses
            onEvent(.resumed(step: first, directory: directory))
        }
        for step in first..<total {
            let start = DispatchTime.now().uptimeNanoseconds
            let sequences = try batch(step: step, of: examples).map(prepare)
            let (loss, tokens) = try lossAndGradients(sequences, dropoutStream: UInt64(step))
            let lr = cosineSchedule(step: step, warmup: options.warmupSteps, total: total, peak: options.learningRate)
            let norm = applyGradients(learningRate: lr)
            losses.append(loss)
            onEvent(.step(StepReport(step: step + 1, totalSteps: total, epoch: step / perEpoch + 1, loss: loss, learningRate: lr,
                                     gradientNorm: norm, tokens: tokens,
                                     seconds: Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9)))
            let endOfEpoch = (step + 1) % perEpoch == 0
            if endOfEpoch && !validation.isEmpty {
                onEvent(.validation(try validate(validation, epoch: (step + 1) / perEpoch)))
            }
            if (options.saveEvery > 0 && (step + 1) % options.saveEvery == 0) || endOfEpoch {
                let state = TrainerState(step: step + 1, totalSteps: total, options: options, examples: examples.count, losses: losses)
                onEvent(.checkpoint(step: step + 1, directory: try saveCheckpoint(state, in: output, baseModel: baseModel)))
            }
        }
        try adapter.save(to: output, baseModel: baseModel)
    }

    /// Loss and task metrics on `examples` with the current adapter (greedy answers, no dropout).
    public func validate(_ examples: [TrainingExample], epoch: Int = 0, maxNewTokens: Int = 128) throws -> ValidationReport {
        guard let pipeline else { throw LoRAError.invalid("validation needs a tokenizer") }
        var lossSum: Float = 0, tokens = 0
        var scores: [String: [Double]] = [:]
        for example in examples {
            let s = try prepare(example)
            let (loss, n) = try lossAndGradients([s], training: false)
            lossSum += loss * Float(n)
            tokens += n
            let embedding = try s.image ?? model.encodeImage(pixels: s.pixels ?? [])
            let answer = try pipeline.generate(prompt: example.prefix, image: EncodedImage(embedding: embedding, width: 1, height: 1, seconds: 0),
                                               options: GenerationOptions(maxNewTokens: maxNewTokens)).text
            let words = example.prefix.split(separator: " ")
            let task = words.first.map(String.init)?.lowercased() ?? "answer"
            if task == "detect" {
                // Boxes compared in the unit square (1×1 frame), as <loc> tokens encode them.
                func boxes(_ text: String) -> [([Double], String)] {
                    LocationParser.parse(text, imageWidth: 1024, imageHeight: 1024).map { ([$0.x0, $0.y0, $0.x1, $0.y1], $0.label) }
                }
                let ious = Evaluator.matchBoxes(truth: boxes(example.suffix), predicted: boxes(answer))
                scores["detect recall@0.5", default: []] += ious.map { $0 >= 0.5 ? 1 : 0 }
            }
            let key = task == "caption" && words.count > 1 ? "caption \(words[1]) exact" : "\(task) exact"
            scores[key, default: []].append(answer.trimmingCharacters(in: .whitespaces) == example.suffix ? 1 : 0)
        }
        gradients.zero()
        return ValidationReport(epoch: epoch, loss: lossSum / Float(max(1, tokens)),
                                metrics: scores.mapValues { $0.reduce(0, +) / Double(max(1, $0.count)) }, examples: examples.count)
    }

    private func saveCheckpoint(_ state: TrainerState, in output: URL, baseModel: String) throws -> URL {
        let fm = FileManager.default
        try fm.createDirectory(at: output, withIntermediateDirectories: true)
        let final = output.appendingPathComponent("checkpoint-\(state.step)")
        let partial = output.appendingPathComponent(".checkpoint-\(state.step).partial")
        try? fm.removeItem(at: partial)
        try adapter.save(to: partial, baseModel: baseModel)
        try optimizer.save(to: partial.appendingPathComponent("optimizer.safetensors"))
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        try encoder.encode(state).write(to: partial.appendingPathComponent("trainer_state.json"), options: .atomic)
        try? fm.removeItem(at: final)
        try fm.moveItem(at: partial, to: final)
        // Older checkpoints are superseded once the new one is complete.
        for old in (try? fm.contentsOfDirectory(atPath: output.path)) ?? [] where old.hasPrefix("checkpoint-") && old != final.lastPathComponent {
            try? fm.removeItem(at: output.appendingPathComponent(old))
        }
        return final
    }

    private func latestCheckpoint(in output: URL) throws -> (URL, TrainerState)? {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: output.path)) ?? []
        let steps = names.compactMap { $0.hasPrefix("checkpoint-") ? Int($0.dropFirst("checkpoint-".count)) : nil }.sorted(by: >)
        for step in steps {
            let dir = output.appendingPathComponent("checkpoint-\(step)")
            if let data = try? Data(contentsOf: dir.appendingPathComponent("trainer_state.json")),
               let state = try? JSONDecoder().decode(TrainerState.self, from: data) {
                return (dir, state)
            }
        }
        return nil
    }

    private func restore(from directory: URL) throws {
        let saved = try LoRAAdapter.load(from: directory, text: model.config.text, vision: model.config.vision)
        // The run's options equal the checkpoint's (checked by the caller), so the order matches.
        let ours = adapter.parameters, theirs = saved.parameters
        guard saved.tokens?.ids == adapter.tokens?.ids, ours.count == theirs.count,
              zip(ours, theirs).allSatisfy({ $0.rows == $1.rows && $0.columns == $1.columns }) else {
            throw LoRAError.adapterFile(path: directory.path, reason: "does not match the adapter being trained")
        }
        for (o, t) in zip(ours, theirs) { o.setValues(t.values) }
        try optimizer.load(from: directory.appendingPathComponent("optimizer.safetensors"))
    }
}
