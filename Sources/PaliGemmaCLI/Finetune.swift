import ArgumentParser
import Foundation
import GemmaTokenizer
import PaliGemma

struct Finetune: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Teach a model a new task with LoRA: train an adapter on image, prompt and answer examples.",
        discussion: """
        Each line of --data is {"image": "a.jpg", "prefix": "caption es", "suffix": "un círculo rojo"} (image paths \
        relative to the file). The prompt is laid out as at inference (<image>…, <bos>, prefix, newline), the answer \
        follows with <eos>, and the loss is taken on the answer only. The base weights stay frozen (bf16 or quantized \
        checkpoints both work); LoRA matrices are trained on the decoder's matrices named by --targets. AdamW with \
        decoupled weight decay, linear warm-up then cosine decay, gradient clipping.

        The adapter is written in PEFT's format (adapter_config.json + adapter_model.safetensors): apply it with \
        --adapter on any command, load it in Python with PeftModel.from_pretrained, or fold it into a new checkpoint \
        with `paligemma merge`. A checkpoint (adapter + optimiser state) is written into OUT/checkpoint-STEP every \
        --save-every steps and after each epoch; after an interruption, the same command with --resume continues \
        from it and follows the same loss curve.

        Examples:
          paligemma finetune --data es/train.jsonl --out es-adapter \\
              --val es/val.jsonl --lr 3e-3 --batch 4 --warmup 100 \\
              --epochs 5 --dropout 0 --train-tokens answers
          paligemma caption scene.png --lang es --adapter es-adapter
          paligemma merge --adapter es-adapter --out demo-es
          (tools/demo/finetune_data.py writes that Spanish dataset; docs/finetune.md)
        """)

    @Option(name: .shortAndLong, help: ArgumentHelp("The base checkpoint: a directory, a hub id in the Hugging Face cache, or 'demo' (default: as for every command)."))
    var model: String?
    @Option(parsing: .unconditional, help: "Worker threads (default: all cores; one for models under 1024 wide, like the demo, whose products are too small to split).") var threads: Int?
    @Option(help: ArgumentHelp("Training examples, one JSON object per line.", valueName: "file.jsonl")) var data: String
    @Option(help: ArgumentHelp("Validation examples, scored (loss, exact answers, detection recall) after each epoch.", valueName: "file.jsonl")) var val: String?
    @Option(help: ArgumentHelp("Directory for the adapter and checkpoints.", valueName: "dir")) var out: String
    @Option(help: "LoRA rank.") var rank = 16
    @Option(help: "LoRA alpha (the update is scaled by alpha / rank).") var alpha: Float = 32
    @Option(help: "Dropout on LoRA's input while training.") var dropout: Float = 0.05
    @Option(help: "Matrices to adapt, from q,k,v,o,gate,up,down (or all).") var targets = "q,k,v,o,gate,up,down"
    @Option(name: .customLong("train-tokens"), help: ArgumentHelp(
        "Embedding rows to train too: none, answers (every token of the training answers) or a comma-separated id list.",
        discussion: "Needed when the answers use tokens the model never learnt to produce (a new language for a small model); the tied output projection uses the same rows."))
    var trainTokens = "none"
    @Flag(name: .customLong("train-vision"), help: "Also put LoRA on the vision tower's q,k,v,out,fc1,fc2 (images are then encoded at every step).")
    var trainVision = false
    @Option(help: "Peak learning rate.") var lr: Float = 2e-4
    @Option(parsing: .unconditional, help: "Passes over the data.") var epochs = 1
    @Option(parsing: .unconditional, help: "Examples per batch.") var batch = 1
    @Option(name: .customLong("grad-accum"), parsing: .unconditional, help: "Batches per optimiser step.") var gradAccum = 1
    @Option(parsing: .unconditional, help: "Warm-up steps (learning rate rising linearly from 0).") var warmup = 0
    @Option(name: .customLong("weight-decay"), help: "AdamW's decoupled weight decay.") var weightDecay: Float = 0.01
    @Option(name: .customLong("max-grad-norm"), help: "Clip the gradients' 2-norm to this.") var maxGradNorm: Float = 1
    @Option(parsing: .unconditional, help: "Seed for the adapter's initialisation, the example order and dropout.") var seed: UInt64 = 0
    @Option(name: .customLong("save-every"), parsing: .unconditional, help: "Checkpoint every this many optimiser steps (0: at each epoch's end only).") var saveEvery = 0
    @Flag(help: "Continue from the newest checkpoint in --out.") var resume = false
    @Flag(help: "Print each step and validation as a JSON line on stdout.") var json = false

    /// The ids `--train-tokens` names for these answers.
    func tokenIDs(answers: [String], tokenizer: GemmaTokenizer, imageToken: Int) throws -> [Int] {
        switch trainTokens {
        case "none": return []
        case "answers":
            var ids = Set<Int>()
            for a in answers { ids.formUnion(tokenizer.encode(a).map(Int.init)) }
            ids.insert(Int(tokenizer.eosID))
            ids.remove(imageToken)
            return ids.sorted()
        default:
            let parts = trainTokens.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
            let ids = parts.compactMap { Int($0) }
            guard ids.count == parts.count, !ids.isEmpty else {
                throw ValidationError("--train-tokens must be none, answers, or token ids separated by commas")
            }
            return Array(Set(ids)).sorted()
        }
    }

    func options() throws -> FinetuneOptions {
        var o = FinetuneOptions()
        o.lora = LoRAConfig(rank: rank, alpha: alpha, dropout: dropout, targets: try LoRATarget.parseList(targets),
                            visionTargets: trainVision ? VisionTarget.allCases : [])
        o.learningRate = lr
        o.epochs = epochs
        o.batchSize = batch
        o.gradientAccumulation = gradAccum
        o.warmupSteps = warmup
        o.weightDecay = weightDecay
        o.maxGradNorm = maxGradNorm
        o.seed = seed
        o.saveEvery = saveEvery
        try o.validate()
        return o
    }

    static func loadExamples(_ path: String, role: String) throws -> [TrainingExample] {
        let (examples, skipped) = try TrainingExample.load(jsonl: URL(fileURLWithPath: path))
        for message in skipped.prefix(20) { status("skipped \(message)") }
        if skipped.count > 20 { status("skipped \(skipped.count - 20) more lines") }
        guard !examples.isEmpty else {
            throw LoRAError.invalid("\(path) holds no usable \(role) example (\(skipped.count) line\(skipped.count == 1 ? "" : "s") skipped); "
                + "each line needs {\"image\": PATH, \"prefix\": PROMPT, \"suffix\": ANSWER}")
        }
        return examples
    }

    func run() throws {
        try wrap {
            var source = ModelOptions()
            source.model = model
            source.threads = threads
            var options = try options()
            let train = try Self.loadExamples(data, role: "training")
            let validation = try val.map { try Self.loadExamples($0, role: "validation") } ?? []
            let directory = try source.resolveDirectory()
            let output = URL(fileURLWithPath: out)
            var isDirectory: ObjCBool = false
            if FileManager.default.fileExists(atPath: output.path, isDirectory: &isDirectory) {
                guard isDirectory.boolValue else { throw ValidationError("--out \(out) is a file; give a directory") }
                if !resume, FileManager.default.fileExists(atPath: output.appendingPathComponent("adapter_model.safetensors").path)
                    || ((try? FileManager.default.contentsOfDirectory(atPath: output.path)) ?? []).contains(where: { $0.hasPrefix("checkpoint-") }) {
                    throw ValidationError("--out \(out) already holds an adapter or checkpoints; add --resume to continue, or choose a new directory")
                }
            }
            if trainTokens != "none" {
                let tokenizer = try GemmaTokenizer.load(directory: directory)
                let config = try PaliGemmaConfig.load(from: directory.appendingPathComponent("config.json"))
                options.lora.trainableTokens = try tokenIDs(answers: train.map(\.suffix), tokenizer: tokenizer,
                                                            imageToken: config.imageTokenIndex)
                try options.validate()
            }
            status("loading \(directory.path)")
            let trainer = try LoRATrainer(modelDirectory: directory, options: options, threads: try source.checkedThreads())
            let (perEpoch, total) = trainer.schedule(examples: train.count)
            var rows = options.lora.trainableTokens.isEmpty ? "" : " and \(options.lora.trainableTokens.count) token rows"
            if trainVision { rows += ", and the vision tower's q,k,v,out,fc1,fc2" }
            status("training \(trainer.adapter.parameterCount) parameters (LoRA rank \(options.lora.rank) on "
                + "\(options.lora.targets.map(\.rawValue).joined(separator: ","))\(rows)) on \(train.count) examples: "
                + "\(options.epochs) epoch\(options.epochs == 1 ? "" : "s") × \(perEpoch) steps of \(options.examplesPerStep) examples")
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys]
            let start = Date()
            var firstStep: Int?
            try trainer.train(train, validation: validation, output: output, resume: resume, baseModel: directory.path) { event in
                switch event {
                case let .step(r):
                    if firstStep == nil { firstStep = r.step - 1 }
                    let elapsed = Date().timeIntervalSince(start)
                    let done = r.step - firstStep!
                    let left = elapsed / Double(max(1, done)) * Double(total - r.step)
                    if json, let line = try? encoder.encode(r) { print(String(decoding: line, as: UTF8.self)); flushStandardOutput() }
                    status(String(format: "step %d/%d  epoch %d  loss %.4f  lr %.2e  %.0f tokens/s  %@ left",
                                  r.step, total, r.epoch, r.loss, r.learningRate, Double(r.tokens) / max(r.seconds, 1e-9),
                                  Self.duration(left)))
                case let .validation(v):
                    if json, let line = try? encoder.encode(v) { print(String(decoding: line, as: UTF8.self)); flushStandardOutput() }
                    let metrics = v.metrics.sorted { $0.key < $1.key }.map { String(format: "%@ %.1f%%", $0.key, $0.value * 100) }
                    status(String(format: "validation after epoch %d: loss %.4f  ", v.epoch, v.loss) + metrics.joined(separator: "  "))
                case let .checkpoint(step, dir):
                    status("checkpoint at step \(step): \(dir.path)")
                case let .resumed(step, dir):
                    status("resuming after step \(step) from \(dir.path)")
                }
            }
            status("wrote the adapter to \(output.path) (\(Self.duration(Date().timeIntervalSince(start)))); "
                + "use it with --adapter \(out), or `paligemma merge --adapter \(out) --out DIR`")
        }
    }

    static func duration(_ seconds: Double) -> String {
        let s = Int(seconds.rounded())
        return s >= 3600 ? "\(s / 3600)h\(String(format: "%02d", s % 3600 / 60))m" : (s >= 60 ? "\(s / 60)m\(String(format: "%02d", s % 60))s" : "\(s)s")
    }
}

struct Merge: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Fold a LoRA adapter into a new checkpoint directory.",
        discussion: """
        Each adapted matrix becomes W + (alpha / rank) · B·A, stored in the checkpoint's dtype; every other tensor and \
        the tokenizer files are copied. The result loads like any checkpoint (and can be quantized).
        Example: paligemma merge --model ~/models/paligemma2-3b-pt-224 --adapter my-adapter --out ~/models/mine
        """)

    @OptionGroup var model: ModelOptions
    @Option(help: ArgumentHelp("New directory to write.", valueName: "dir")) var out: String

    func run() throws {
        try wrap {
            guard let adapterPath = model.adapter else { throw ValidationError("give --adapter DIR, the adapter to fold in") }
            let source = try model.resolveDirectory()
            let destination = URL(fileURLWithPath: out)
            if source.standardizedFileURL == destination.standardizedFileURL { throw ValidationError("--out must differ from the model's directory") }
            let config = try PaliGemmaConfig.load(from: source.appendingPathComponent("config.json"))
            let adapter = try LoRAAdapter.load(from: URL(fileURLWithPath: adapterPath), text: config.text, vision: config.vision)
            let bar = ProgressBar(label: "merging")
            try adapter.merge(source: source, destination: destination) { bar.update($0) }
            bar.finish()
            status("wrote \(destination.path)")
        }
    }
}
