import ArgumentParser
import Foundation
import GemmaTokenizer
import Kernels
import PaliGemma
import PaliGemmaTools

struct Bench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Measure image encoding, prefill and decode speed on a named configuration.",
        discussion: """
        With a preset (3b-224 … 28b-896) a random-weight checkpoint of the published shapes is written once to the cache directory and memory-mapped like a real one; --model measures a real checkpoint instead. Reports time to first token, tokens/s, peak RSS and the fraction of this machine's bandwidth and FLOP ceilings reached.

        Examples:
          paligemma bench 3b-224
          paligemma bench 3b-448 --decode-tokens 8 --json
          paligemma bench --model ~/models/paligemma2-3b-pt-224 --threads 2
          paligemma bench 3b-224 --weights q8 --isa avx2     # this CPU's AVX2 kernels

        The kernels run at the best instruction-set level this CPU has (see `paligemma info`); --isa (or PALIGEMMA_ISA for any command) caps them at a lower one, and the ceilings are probed with the instructions of the level that runs.
        """)

    @Argument(help: "Configuration: 3b|10b|28b - 224|448|896 (ignored with --model).")
    var preset: String = "3b-224"

    @Option(name: .shortAndLong, help: "Benchmark this checkpoint directory instead of random weights.")
    var model: String?

    @Option(help: "Random weights' format: bf16, q8 (decoder and vision matrices) or q4 (4-bit decoder, 8-bit vision matrices).")
    var weights = "bf16"

    @Option(help: "Prompt tokens after the image tokens (bos + text + newline).")
    var promptTokens = 10

    @Option(help: "Tokens to decode after the first.")
    var decodeTokens = 32

    @Option(help: "Worker threads (default: all cores).")
    var threads: Int?

    @Option(help: "Where random checkpoints are kept (default: ~/.cache/paligemma/bench).")
    var cacheDir: String?

    @Option(name: .customLong("bandwidth"), help: "Memory read ceiling in GB/s for the bandwidth fraction (default: measured in this run).")
    var bandwidthOption: Double?

    @Option(name: .customLong("peak-gflops"), help: "Matrix-product ceiling in GFLOP/s for the compute fraction (default: measured in this run, per instruction the products use).")
    var peakGFLOPs: Double?

    @Option(help: "Kernel level to run at: one this CPU supports, e.g. generic, avx2, avx-vnni, avx512, neon, neon-dotprod, neon-i8mm (default: the best; PALIGEMMA_ISA sets it for any command).")
    var isa: String?

    @Flag(help: "Print one JSON object instead of a table.")
    var json = false

    @Flag(help: "Also print where the time goes, per kernel and phase.")
    var profile = false

    @Flag(help: "Time LoRA training steps (rank 16 on q,k,v,o,gate,up,down, float32 products) instead of inference.")
    var train = false

    @Option(name: .customLong("train-steps"), help: "Training steps to time with --train (the first includes one-time setup and is reported apart).")
    var trainSteps = 2

    @Option(name: .customLong("answer-tokens"), help: "Answer tokens per training example with --train.")
    var answerTokens = 16

    @Option(help: "What to measure: all, model, image (4000×3000 JPEG decode + preprocess), tokenizer (encode MB/s), kernels (matrix products at 3B shapes).")
    var only = "all"

    struct Report: Codable {
        var configuration: String
        var backend: String
        /// The kernel level that ran, and every level this CPU supports.
        var isa: String
        var isaAvailable: [String]
        var threads: Int
        var weightFormat: String
        var weightGB: Double
        var loadSeconds: Double
        var imageTokens: Int
        var promptTokens: Int
        var imageEncodeSeconds: Double
        var prefillSeconds: Double
        var prefillTokensPerSecond: Double
        var timeToFirstTokenSeconds: Double
        var decodeTokens: Int
        var decodeTokensPerSecond: Double
        var peakRSSGB: Double
        var jpegDecodeSeconds: Double?
        var jpegPreprocessSeconds: Double?
        var tokenizerEncodeMBs: Double?
        var prefixTFLOP: Double
        var prefixGFLOPs: Double
        /// The time the prefix would take at the measured ceilings of the instructions it uses
        /// (float weights: FMA or bf16 dot products; quantized checkpoints, whose vision tower is
        /// 8-bit: int8 products, the 4-bit decoder's as 4-bit weights use them), divided by the
        /// time it took.
        var computeFraction: Double
        var measuredFMAGFLOPs: Double
        var measuredBF16GFLOPs: Double?
        var measuredInt8GOPs: Double?
        /// Int8 products as 4-bit weights use them (avx2: twice the multiply-adds per instruction
        /// of the 8-bit ones; elsewhere the same instruction as measuredInt8GOPs).
        var measuredInt8FourBitGOPs: Double?
        var ceiling: String
        var decodeGBPerToken: Double
        var decodeGBs: Double
        var measuredReadGBs: Double
        var bandwidthFraction: Double
    }

    func run() async throws {
        do {
            try execute()
        } catch let e as ExitCode {
            throw e
        } catch {
            throw fail(error)
        }
    }

    /// Matrix products at 3B shapes, each weight format's line printed as it is measured.
    func benchKernels() {
        let backend = FastBackend(threads: threads)
        print("kernels at 3B shapes, \(backend.name)")
        Benchmarks.kernels(on: backend) { r in
            print(String(format: "  %@  prefill %d×%d×%d: %6.1f GFLOP/s   decode %d×%d: %6.1f GB/s of weights",
                         r.format as NSString, r.prefillShape.m, r.prefillShape.k, r.prefillShape.n, r.prefillGFLOPs,
                         r.prefillShape.k, r.prefillShape.n, r.decodeGBs))
        }
    }

    func execute() throws {
        warnAboutIgnoredKernelLevel()
        if let isa {
            do {
                KernelLevel.activate(try KernelLevel.named(isa))
            } catch let error as KernelLevelError {
                throw ValidationError("--isa: \(error)")
            }
        }
        if only != "all" && only != "model" {
            guard ["image", "tokenizer", "kernels"].contains(only) else {
                throw ValidationError("--only must be all, model, image, tokenizer or kernels")
            }
        }
        if only == "kernels" {
            benchKernels()
            return
        }
        var extras: (jpeg: (Double, Double)?, tokenizer: Double?) = (nil, nil)
        if (only == "all" && !train) || only == "image" {
            status("decoding and preprocessing a 4000×3000 JPEG…")
            extras.jpeg = try Benchmarks.imageDecode(size: ModelPreset(preset)?.resolution ?? 224)
        }
        if (only == "all" && !train) || only == "tokenizer" {
            let dirs = [model.map { URL(fileURLWithPath: $0) }, try? ModelOptions.demoDirectory()].compactMap { $0 }
            if let tokenizer = dirs.lazy.compactMap({ try? GemmaTokenizer.load(directory: $0) }).first {
                status("encoding 2 MB of prompts…")
                extras.tokenizer = Benchmarks.tokenizerEncode(tokenizer)
            } else {
                status("no tokenizer found (pass --model); skipping the tokenizer measurement")
            }
        }
        if only == "image" || only == "tokenizer" {
            if let j = extras.jpeg { print(String(format: "4000×3000 JPEG       decode %.3f s + preprocess %.3f s", j.0, j.1)) }
            if let t = extras.tokenizer { print(String(format: "tokenizer encode     %.1f MB/s", t)) }
            return
        }
        let directory: URL
        var name: String
        if let model {
            directory = URL(fileURLWithPath: model)
            name = directory.lastPathComponent
        } else {
            guard let p = ModelPreset(preset) else {
                throw ValidationError("unknown configuration '\(preset)'; use one of \(ModelPreset.all.map(\.description).joined(separator: ", "))")
            }
            name = "\(p) \(weights)"
            guard weights == "bf16" || Quantizer.Format(rawValue: weights) != nil else {
                throw ValidationError("--weights must be bf16, q8 or q4")
            }
            let root = cacheDir.map { URL(fileURLWithPath: $0) } ?? FileManager.default.homeDirectoryForCurrentUser
                .appendingPathComponent(".cache/paligemma/bench")
            // Layout 3: vision matrices in 8 bits for q8 and q4 alike; older cached copies are not reused.
            directory = root.appendingPathComponent(weights == "bf16" ? "\(p)-bf16-random" : "\(p)-\(weights)-v3-random")
            if !FileManager.default.fileExists(atPath: directory.appendingPathComponent("model.safetensors").path) {
                status("writing random \(weights) weights for \(p) to \(directory.path) (once)…")
                let bar = ProgressBar(label: "weights")
                try RandomCheckpoint.write(config: p.config, to: directory, bf16: true,
                                           quantize: Quantizer.Format(rawValue: weights)) { bar.update($0) }
                bar.finish()
            }
        }
        if train {
            try benchTraining(directory: directory, name: name)
            return
        }
        let fast = FastBackend(threads: threads)
        let profiler = profile ? ProfilingBackend(fast) : nil
        let backend: ComputeBackend = profiler ?? fast
        var clock = Stopwatch()
        let m = try PaliGemmaModel(directory: directory, backend: backend)
        let loadSeconds = clock.lap()
        let c = m.config

        // A fixed pseudo-random image and prompt.
        var seed: UInt64 = 7
        func next() -> UInt64 { seed = seed &* 6364136223846793005 &+ 1442695040888963407; return seed >> 33 }
        let pixels = (0..<(3 * m.imageSize * m.imageSize)).map { _ in Float(next() % 2001) / 1000 - 1 }
        let textTokens = max(2, promptTokens)
        // Text ids inside the vocabulary (ordinary Gemma pieces when it is Gemma's), never the
        // image token; 108 is Gemma's "\n".
        let vocab = c.text.vocabSize
        func textID() -> Int {
            let id = vocab > 6000 ? 1000 + Int(next() % 5000) : Int(next() % UInt64(vocab))
            return id == c.imageTokenIndex ? (id + 1) % vocab : id
        }
        let prompt = [Int](repeating: c.imageTokenIndex, count: m.numImageTokens) + [c.text.bosTokenID]
            + (0..<(textTokens - 2)).map { _ in textID() } + [vocab > 6000 ? 108 : textID()]

        status("encoding the image…")
        clock.reset()
        let image = try m.encodeImage(pixels: pixels)
        let imageSeconds = clock.lap()
        printProfile(profiler, "image encode")
        let session = m.makeSession(maxTokens: prompt.count + decodeTokens + 1)
        status("prefilling \(prompt.count) tokens…")
        var logits = try session.prefill(prompt: prompt, image: image)
        let prefillSeconds = clock.lap()
        printProfile(profiler, "prefill")
        status("decoding \(decodeTokens) tokens…")
        var token = logits.argmax(row: 0)
        for _ in 0..<decodeTokens {
            logits = try session.step(token: token)
            token = logits.argmax(row: 0)
        }
        let decodeSeconds = clock.lap()
        printProfile(profiler, "decode")

        // Peak RSS is taken before the bandwidth probe allocates its buffer.
        let peakRSS = peakResidentBytes()
        let bandwidthGBs = bandwidthOption ?? MachineCeilings.readBandwidth(threads: fast.threads)
        let (visionFLOPs, decoderFLOPs) = Benchmarks.prefixFLOPs(c, promptLength: prompt.count)
        let flops = visionFLOPs + decoderFLOPs
        let ceilings = MachineCeilings.compute(threads: fast.threads)
        // Which instruction each part's products run on (FastBackend's choice for this CPU).
        let floatPeak = fast.bf16Products && fast.prefersBF16DotProducts ? (ceilings.bf16 ?? ceilings.fma) : ceilings.fma
        let floatName = fast.bf16Products && fast.prefersBF16DotProducts ? "bf16 dot" : "float32 FMA"
        // A quantized checkpoint keeps SigLIP's matrices in 8 bits and the decoder's in its
        // format; with int8 activations both run on int8 products.
        var ceiling = String(format: "%@ %.0f GFLOP/s", floatName, floatPeak)
        var (visionPeak, decoderPeak) = (floatPeak, floatPeak)
        if let quantization = m.config.quantization, fast.int8Activations, let int8 = ceilings.int8 {
            let fourBit = quantization.format == "q4" ? (ceilings.int8FourBit ?? int8) : int8
            (visionPeak, decoderPeak) = (int8, fourBit)
            ceiling = fourBit == int8
                ? String(format: "vision and decoder int8 dot %.0f GOPS", int8)
                : String(format: "vision int8 dot %.0f GOPS, decoder 4-bit int8 %.0f GOPS", int8, fourBit)
        }
        var idealSeconds = visionFLOPs / (visionPeak * 1e9) + decoderFLOPs / (decoderPeak * 1e9)
        if let peakGFLOPs {
            idealSeconds = flops / (peakGFLOPs * 1e9)
            ceiling = String(format: "%.0f GFLOP/s given", peakGFLOPs)
        }
        let stepBytes = m.decodeBytesPerToken
        let decodeRate = decodeTokens > 0 ? Double(decodeTokens) / decodeSeconds : 0
        let report = Report(
            configuration: name, backend: backend.name,
            isa: KernelLevel.active.name, isaAvailable: KernelLevel.available.map(\.name), threads: fast.threads, weightFormat: m.weightSummary,
            weightGB: Double(m.weightBytes) / 1e9, loadSeconds: loadSeconds,
            imageTokens: m.numImageTokens, promptTokens: prompt.count,
            imageEncodeSeconds: imageSeconds, prefillSeconds: prefillSeconds,
            prefillTokensPerSecond: Double(prompt.count) / prefillSeconds,
            timeToFirstTokenSeconds: imageSeconds + prefillSeconds,
            decodeTokens: decodeTokens, decodeTokensPerSecond: decodeRate,
            peakRSSGB: Double(peakRSS) / 1e9,
            jpegDecodeSeconds: extras.jpeg?.0, jpegPreprocessSeconds: extras.jpeg?.1, tokenizerEncodeMBs: extras.tokenizer,
            prefixTFLOP: flops / 1e12, prefixGFLOPs: flops / (imageSeconds + prefillSeconds) / 1e9,
            computeFraction: idealSeconds / (imageSeconds + prefillSeconds),
            measuredFMAGFLOPs: ceilings.fma, measuredBF16GFLOPs: ceilings.bf16, measuredInt8GOPs: ceilings.int8,
            measuredInt8FourBitGOPs: ceilings.int8FourBit,
            ceiling: ceiling,
            decodeGBPerToken: stepBytes / 1e9, decodeGBs: stepBytes * decodeRate / 1e9, measuredReadGBs: bandwidthGBs,
            bandwidthFraction: stepBytes * decodeRate / 1e9 / bandwidthGBs)
        if json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            print(String(decoding: try encoder.encode(report), as: UTF8.self))
        } else {
            print(String(format: """
            configuration         %@ (%@)
            backend               %@
            kernel level          %@ (this CPU: %@)
            weights               %@, loaded in %.2f s
            image encode          %.2f s (%d image tokens)
            prefill               %.2f s for %d tokens (%.0f tok/s)
            time to first token   %.2f s   (%.3f TFLOP, %.0f GFLOP/s = %.0f%% of the ceiling: %@)
            decode                %.2f tok/s over %d tokens (%.2f GB/token, %.1f GB/s = %.0f%% of %.0f measured)
            peak RSS              %.2f GB
            4000×3000 JPEG        %@
            tokenizer encode      %@
            """, report.configuration, model == nil ? "random weights" : "checkpoint", report.backend,
                  report.isa, report.isaAvailable.joined(separator: ", "),
                  report.weightFormat, report.loadSeconds, report.imageEncodeSeconds, report.imageTokens,
                  report.prefillSeconds, report.promptTokens, report.prefillTokensPerSecond,
                  report.timeToFirstTokenSeconds, report.prefixTFLOP, report.prefixGFLOPs,
                  report.computeFraction * 100, report.ceiling,
                  report.decodeTokensPerSecond, report.decodeTokens, report.decodeGBPerToken, report.decodeGBs,
                  report.bandwidthFraction * 100, bandwidthGBs, report.peakRSSGB,
                  extras.jpeg.map { String(format: "decode %.3f s + preprocess %.3f s", $0.0, $0.1) } ?? "not measured",
                  extras.tokenizer.map { String(format: "%.1f MB/s", $0) } ?? "not measured"))
        }
    }

    struct TrainReport: Codable {
        var configuration: String
        var backend: String
        var isa: String
        var threads: Int
        var loraParameters: Int
        var sequenceTokens: Int
        var answerTokens: Int
        var loadSeconds: Double
        var imageEncodeSeconds: Double
        var setupSeconds: Double
        var firstStepSeconds: Double
        var stepSeconds: Double
        var stepTFLOP: Double
        var stepGFLOPs: Double
        var peakRSSGB: Double
    }

    /// LoRA training steps on a synthetic example: the image's tokens, a prompt, an answer.
    func benchTraining(directory: URL, name: String) throws {
        guard trainSteps >= 1 && trainSteps <= 100 else { throw ValidationError("--train-steps must be within 1...100") }
        guard answerTokens >= 1 && answerTokens <= 4096 else { throw ValidationError("--answer-tokens must be within 1...4096") }
        var clock = Stopwatch()
        let config = try PaliGemmaConfig.load(from: directory.appendingPathComponent("config.json"))
        var options = FinetuneOptions()
        options.lora.dropout = 0
        let adapter = try LoRAAdapter(config: options.lora, text: config.text, seed: 1)
        let backend = LoRATrainer.backend(threads: threads)
        let m = try PaliGemmaModel(directory: directory, backend: backend, adapter: adapter)
        let loadSeconds = clock.lap()
        status("preparing the frozen weights' transposes…")
        let trainer = try LoRATrainer(model: m, options: options)
        let setupSeconds = clock.lap()
        var seed: UInt64 = 11
        func next() -> UInt64 { seed = seed &* 6364136223846793005 &+ 1442695040888963407; return seed >> 33 }
        let pixels = (0..<(3 * m.imageSize * m.imageSize)).map { _ in Float(next() % 2001) / 1000 - 1 }
        let vocab = config.text.vocabSize
        func textID() -> Int {
            let id = vocab > 6000 ? 1000 + Int(next() % 5000) : Int(next() % UInt64(vocab))
            return id == config.imageTokenIndex ? (id + 1) % vocab : id
        }
        status("encoding the image…")
        let image = try m.encodeImage(pixels: pixels)
        let imageSeconds = clock.lap()
        let prefix = [Int](repeating: config.imageTokenIndex, count: m.numImageTokens) + [config.text.bosTokenID]
            + (0..<max(0, promptTokens - 2)).map { _ in textID() } + [vocab > 6000 ? 108 : textID()]
        let ids = prefix + (0..<answerTokens).map { _ in textID() }
        var times: [Double] = []
        for i in 0..<trainSteps {
            status("training step \(i + 1) of \(trainSteps) (\(ids.count) tokens)…")
            let r = try trainer.step(on: [(ids, prefix.count, image)], learningRate: 1e-4)
            times.append(clock.lap())
            status(String(format: "  loss %.4f, gradient norm %.4g, %.2f s", r.loss, r.gradientNorm, times.last!))
        }
        // Forward products plus the input gradients through every frozen matrix (the same
        // count again); LoRA's own products and the attention scores are small beside them.
        let (_, decoderFLOPs) = Benchmarks.prefixFLOPs(config, promptLength: ids.count, allRows: true)
        let steady = times.count > 1 ? times.dropFirst().reduce(0, +) / Double(times.count - 1) : times[0]
        let report = TrainReport(configuration: name, backend: backend.name, isa: KernelLevel.active.name, threads: backend.threads,
                                 loraParameters: adapter.parameterCount, sequenceTokens: ids.count, answerTokens: answerTokens,
                                 loadSeconds: loadSeconds, imageEncodeSeconds: imageSeconds, setupSeconds: setupSeconds,
                                 firstStepSeconds: times[0], stepSeconds: steady, stepTFLOP: 2 * decoderFLOPs / 1e12,
                                 stepGFLOPs: 2 * decoderFLOPs / steady / 1e9, peakRSSGB: Double(peakResidentBytes()) / 1e9)
        if json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            print(String(decoding: try encoder.encode(report), as: UTF8.self))
        } else {
            print(String(format: """
            configuration         %@ (LoRA rank %d, %d parameters)
            backend               %@
            sequence              %d tokens (%d in the answer)
            load + setup          %.2f s + %.2f s (transposed frozen weights)
            image encode          %.2f s (once per image; the vision tower is frozen)
            training step         %.2f s (first %.2f s)   %.3f TFLOP, %.0f GFLOP/s
            peak RSS              %.2f GB
            """, report.configuration, options.lora.rank, report.loraParameters, report.backend, report.sequenceTokens,
                  report.answerTokens, report.loadSeconds, report.setupSeconds, report.imageEncodeSeconds, report.stepSeconds,
                  report.firstStepSeconds, report.stepTFLOP, report.stepGFLOPs, report.peakRSSGB))
        }
    }

    func printProfile(_ profiler: ProfilingBackend?, _ phase: String) {
        guard let profiler else { return }
        let rows = profiler.breakdown
        let total = rows.reduce(0) { $0 + $1.seconds }
        status("  \(phase): \(String(format: "%.2f", total)) s in kernels")
        for r in rows {
            status(String(format: "    %-20@ %8.3f s %6d calls", r.op as NSString, r.seconds, r.calls))
        }
        profiler.reset()
    }
}

/// A one-line progress bar on a terminal; silent when stderr is not a terminal.
// @unchecked Sendable: `last` is only touched under `lock` (downloads report from their own threads).
final class ProgressBar: @unchecked Sendable {
    let label: String
    let enabled = isatty(2) != 0
    private let lock = NSLock()
    private var last = -1
    init(label: String) { self.label = label }
    func update(_ fraction: Double) {
        guard enabled else { return }
        let pct = Int(fraction * 100)
        lock.withLock {
            guard pct != last else { return }
            last = pct
            let width = 30, filled = width * pct / 100
            let bar = String(repeating: "█", count: filled) + String(repeating: "·", count: width - filled)
            FileHandle.standardError.write(Data("\r\(label) [\(bar)] \(pct)%".utf8))
        }
    }
    func finish() { if enabled { FileHandle.standardError.write(Data("\n".utf8)) } }
}
