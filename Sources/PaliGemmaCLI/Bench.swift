import ArgumentParser
import Dispatch
import Foundation
import GemmaTokenizer
import Imaging
import CKernels
import Kernels
import PaliGemma

struct Bench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Measure image encoding, prefill and decode speed on a named configuration.",
        discussion: """
        With a preset (3b-224 … 28b-896) a random-weight checkpoint of the published shapes is
        written once to the cache directory and memory-mapped like a real one; --model measures a
        real checkpoint instead. Reports time to first token, tokens/s, peak RSS and the fraction
        of this machine's bandwidth and FLOP ceilings reached.

        Examples:
          paligemma bench 3b-224
          paligemma bench 3b-448 --decode-tokens 8 --json
          paligemma bench --model ~/models/paligemma2-3b-pt-224 --threads 2
          paligemma bench 3b-224 --weights q8 --isa avx2     # this CPU's AVX2 kernels

        The kernels run at the best instruction-set level this CPU has (see `paligemma info`);
        --isa (or PALIGEMMA_ISA for any command) caps them at a lower one, and the ceilings are
        probed with the instructions of the level that runs.
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
        /// (vision tower and float decoders: FMA or bf16 dot products; quantized decoders: int8
        /// dot products), divided by the time it took.
        var computeFraction: Double
        var measuredFMAGFLOPs: Double
        var measuredBF16GFLOPs: Double?
        var measuredInt8GOPs: Double?
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

    /// Decode + preprocess of a 4000×3000 JPEG (a phone photo), best of three.
    func benchImage(size: Int) throws -> (decode: Double, preprocess: Double) {
        let (w, h) = (4000, 3000)
        var pixels = [UInt8](repeating: 0, count: w * h * 3)
        var seed: UInt32 = 1
        for y in 0..<h {
            for x in 0..<w {
                seed = seed &* 1664525 &+ 1013904223
                let noise = Int(seed >> 28)
                let i = (y * w + x) * 3
                pixels[i] = UInt8((x * 255 / w + noise) & 255)
                pixels[i + 1] = UInt8((y * 255 / h + noise) & 255)
                pixels[i + 2] = UInt8(((x + y) / 31 * 8 + noise) & 255)
            }
        }
        let jpeg = try JPEGEncoder.encode(RGBImage(width: w, height: h, pixels: pixels), quality: 90)
        let loader = ImageLoader(), pre = ImagePreprocessor(size: size)
        var best = (Double.infinity, Double.infinity)
        for _ in 0..<3 {
            var clock = Stopwatch()
            let image = try loader.decode(jpeg, name: "4000x3000.jpg")
            let d = clock.lap()
            _ = pre.pixelValues(image)
            best = (min(best.0, d), min(best.1, clock.lap()))
        }
        return best
    }

    /// Encode throughput over a multilingual corpus of prompt-sized lines.
    func benchTokenizer(_ tokenizer: GemmaTokenizer) -> Double {
        let samples = ["caption en", "answer en how many red circles are there?", "detect cat ; dog ; person",
                       "Der schnelle braune Fuchs springt über den faulen Hund 1234.", "日本語のテキストと中文的句子。",
                       "Привет, как дела? مرحبا بالعالم नमस्ते दुनिया สวัสดีครับ", "emoji 👍🏽 👨‍👩‍👧 and <loc0123><seg045> tokens"]
        var lines: [String] = []
        var total = 0
        var i = 0
        while total < 2_000_000 {
            let line = samples[i % samples.count] + " \(i)"
            lines.append(line)
            total += line.utf8.count
            i += 1
        }
        var clock = Stopwatch()
        var count = 0
        for line in lines { count += tokenizer.encode(line).count }
        let seconds = clock.lap()
        precondition(count > 0)
        return Double(total) / seconds / 1e6
    }

    /// Reads 256 MiB with `threads` workers, best of three: the memory ceiling in this run (the
    /// machine is shared, so a figure measured elsewhere may not hold now).
    func measureReadBandwidth(threads: Int) -> Double {
        let count = 1 << 26  // 256 MiB: far beyond the caches
        let buffer = UnsafeMutablePointer<Float>.allocate(capacity: count)
        defer { buffer.deallocate() }
        buffer.initialize(repeating: 1, count: count)
        var best = Double.infinity
        var sink: Float = 0
        for _ in 0..<3 {
            var clock = Stopwatch()
            DispatchQueue.concurrentPerform(iterations: threads) { w in
                let start = count * w / threads, end = count * (w + 1) / threads
                let s = ck_read_all(buffer + start, Int64(end - start))
                if s == -1 { sink += s }
            }
            best = min(best, clock.lap())
        }
        _ = sink
        return Double(count * 4) / best / 1e9
    }

    /// Peak rates of the active kernel level's product instructions with every worker busy, best
    /// of three: float32 FMA, bf16 dot products and int8 dot products (nil where the level has
    /// none).
    func measureComputeCeilings(threads: Int) -> (fma: Double, bf16: Double?, int8: Double?) {
        func rate(_ probe: (Int64, UnsafeMutablePointer<Float>) -> Double) -> Double {
            // Long enough (about 0.1 s a worker) that the workers' start-up skew is noise: a
            // short probe on two threads ran them one after the other and halved the ceiling.
            var sink: Float = 0
            var clock = Stopwatch()
            guard probe(200_000, &sink) > 0 else { return 0 }
            let iterations = Int64(max(200_000, min(1e9, 200_000 * 0.1 / max(clock.lap(), 1e-6))))
            var best = 0.0
            for _ in 0..<3 {
                var clock = Stopwatch()
                var ops = [Double](repeating: 0, count: threads)
                ops.withUnsafeMutableBufferPointer { out in
                    let base = out.baseAddress!
                    DispatchQueue.concurrentPerform(iterations: threads) { w in
                        var sink: Float = 0
                        base[w] = probe(iterations, &sink)
                        if sink == .infinity { base[w] += 0 }
                    }
                }
                best = max(best, ops.reduce(0, +) / clock.lap() / 1e9)
            }
            return best
        }
        let fma = rate { ck_fma_probe($0, $1) }
        let bf16 = rate { ck_bf16_probe($0, $1) }
        let int8 = rate { ck_int8_probe($0, $1) }
        return (fma, bf16 > 0 ? bf16 : nil, int8 > 0 ? int8 : nil)
    }

    /// Matrix products at 3B-224 shapes on random bf16 / q8 / q4 weights: prefill GEMM GFLOP/s
    /// and decode GEMV GB/s (weights streamed), each the best of a few runs.
    func benchKernels() throws {
        let backend = FastBackend(threads: threads)
        let (k, n, m) = (2304, 9216, 266)
        let count = n * k
        let raw = UnsafeMutableRawPointer.allocate(byteCount: count * 2, alignment: 64)
        defer { raw.deallocate() }
        var seed: UInt64 = 9
        let floats = UnsafeMutablePointer<Float>.allocate(capacity: count)
        defer { floats.deallocate() }
        for i in 0..<count {
            seed = seed &* 6364136223846793005 &+ 1442695040888963407
            floats[i] = Float(Int64(bitPattern: seed) >> 40) * 0x1p-24
            raw.storeBytes(of: UInt16(floats[i].bitPattern >> 16), toByteOffset: i * 2, as: UInt16.self)
        }
        var weights = [("bf16", WeightMatrix(format: .bf16, rows: n, columns: k, data: raw))]
        var keep: [UnsafeMutableRawPointer] = []
        for format in [WeightFormat.q8, .q4] {
            let rowBytes = format.rowBytes(columns: k)
            let data = UnsafeMutableRawPointer.allocate(byteCount: n * rowBytes, alignment: 64)
            let scales = UnsafeMutablePointer<UInt16>.allocate(capacity: n * k / 32)
            for r in 0..<n {
                ck_quantize_row(floats + r * k, Int64(k), format.rawValue, data + r * rowBytes, scales + r * k / 32)
            }
            keep.append(data)
            keep.append(UnsafeMutableRawPointer(scales))
            weights.append((format.description, WeightMatrix(format: format, rows: n, columns: k, data: UnsafeRawPointer(data),
                                                             scales: UnsafePointer(scales))))
        }
        defer { keep.forEach { $0.deallocate() } }
        let x = Matrix(rows: m, columns: k, values: (0..<(m * k)).map { Float($0 % 97) / 97 - 0.5 })
        let x1 = Matrix(rows: 1, columns: k, values: (0..<k).map { Float($0 % 89) / 89 - 0.5 })
        let y = Matrix(rows: m, columns: n), y1 = Matrix(rows: 1, columns: n)
        print("kernels at 3B shapes, \(backend.name)")
        for (name, w) in weights {
            var best = Double.infinity
            for _ in 0..<3 {
                var clock = Stopwatch()
                backend.linear(x, w, bias: nil, into: y)
                best = min(best, clock.lap())
            }
            var bestV = Double.infinity
            for _ in 0..<20 {
                var clock = Stopwatch()
                backend.linear(x1, w, bias: nil, into: y1)
                bestV = min(bestV, clock.lap())
            }
            print(String(format: "  %@  prefill %d×%d×%d: %6.1f GFLOP/s   decode %d×%d: %6.1f GB/s of weights",
                         name as NSString, m, k, n, 2 * Double(m * k * n) / best / 1e9, k, n, Double(w.byteCount) / bestV / 1e9))
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
            try benchKernels()
            return
        }
        var extras: (jpeg: (Double, Double)?, tokenizer: Double?) = (nil, nil)
        if only == "all" || only == "image" {
            status("decoding and preprocessing a 4000×3000 JPEG…")
            extras.jpeg = try benchImage(size: ModelPreset(preset)?.resolution ?? 224)
        }
        if only == "all" || only == "tokenizer" {
            let dirs = [model.map { URL(fileURLWithPath: $0) }, try? ModelOptions.demoDirectory()].compactMap { $0 }
            if let tokenizer = dirs.lazy.compactMap({ try? GemmaTokenizer.load(directory: $0) }).first {
                status("encoding 2 MB of prompts…")
                extras.tokenizer = benchTokenizer(tokenizer)
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
        let bandwidthGBs = bandwidthOption ?? measureReadBandwidth(threads: fast.threads)
        let (visionFLOPs, decoderFLOPs) = prefixFLOPs(c, promptLength: prompt.count)
        let flops = visionFLOPs + decoderFLOPs
        let ceilings = measureComputeCeilings(threads: fast.threads)
        // Which instruction each part's products run on (FastBackend's choice for this CPU).
        let floatPeak = fast.bf16Products && fast.prefersBF16DotProducts ? (ceilings.bf16 ?? ceilings.fma) : ceilings.fma
        let floatName = fast.bf16Products && fast.prefersBF16DotProducts ? "bf16 dot" : "float32 FMA"
        let quantizedDecoder = m.config.quantization != nil && fast.int8Activations && ceilings.int8 != nil
        let decoderPeak = quantizedDecoder ? ceilings.int8! : floatPeak
        var ceiling = String(format: "%@ %.0f GFLOP/s", floatName, floatPeak)
        if quantizedDecoder { ceiling += String(format: ", decoder int8 dot %.0f GOPS", decoderPeak) }
        var idealSeconds = visionFLOPs / (floatPeak * 1e9) + decoderFLOPs / (decoderPeak * 1e9)
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

    /// Floating-point operations of the prefix (multiply-adds × 2): the vision tower with the
    /// projector, and the decoder's prefill up to the last row's logits.
    func prefixFLOPs(_ c: PaliGemmaConfig, promptLength t: Int) -> (vision: Double, decoder: Double) {
        let v = c.vision, x = c.text
        let n = Double(v.numPatches), d = Double(v.hiddenSize), i = Double(v.intermediateSize)
        var f = 2 * n * d * Double(v.numChannels * v.patchSize * v.patchSize)
        f += Double(v.numHiddenLayers) * (2 * n * (4 * d * d + 2 * d * i) + 4 * n * n * d)
        f += 2 * n * d * Double(x.hiddenSize)
        let h = Double(x.hiddenSize), qd = Double(x.numAttentionHeads * x.headDim), kvd = Double(x.numKeyValueHeads * x.headDim)
        let tt = Double(t)
        var g = Double(x.numHiddenLayers) * (2 * tt * (2 * h * qd + 2 * h * kvd + 3 * h * Double(x.intermediateSize)) + 4 * tt * tt * qd)
        g += 2 * h * Double(x.vocabSize)
        return (f, g)
    }

}

/// Wall-clock laps.
struct Stopwatch {
    private var start = DispatchTime.now().uptimeNanoseconds
    mutating func reset() { start = DispatchTime.now().uptimeNanoseconds }
    mutating func lap() -> Double {
        let now = DispatchTime.now().uptimeNanoseconds
        defer { start = now }
        return Double(now - start) / 1e9
    }
}

/// Peak resident set size of this process (VmHWM), in bytes; 0 where unknown.
func peakResidentBytes() -> Int {
    guard let text = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8) else { return 0 }
    for line in text.split(separator: "\n") where line.hasPrefix("VmHWM:") {
        let digits = line.filter(\.isNumber)
        return (Int(digits) ?? 0) * 1024
    }
    return 0
}

/// A one-line progress bar on a terminal; silent when stderr is not a terminal.
final class ProgressBar {
    let label: String
    let enabled = isatty(2) != 0
    var last = -1
    init(label: String) { self.label = label }
    func update(_ fraction: Double) {
        guard enabled else { return }
        let pct = Int(fraction * 100)
        guard pct != last else { return }
        last = pct
        let width = 30, filled = width * pct / 100
        let bar = String(repeating: "█", count: filled) + String(repeating: "·", count: width - filled)
        FileHandle.standardError.write(Data("\r\(label) [\(bar)] \(pct)%".utf8))
    }
    func finish() { if enabled { FileHandle.standardError.write(Data("\n".utf8)) } }
}
