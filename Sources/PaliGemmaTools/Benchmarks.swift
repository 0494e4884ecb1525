import Foundation
import GemmaTokenizer
import Imaging
import Kernels
import PaliGemma

/// The parts of `paligemma bench` that measure something other than a whole model run.
public enum Benchmarks {
    /// Seconds to decode and to preprocess (to `size`×`size`) a 4000×3000 JPEG (a phone photo),
    /// best of three.
    public static func imageDecode(size: Int) throws -> (decode: Double, preprocess: Double) {
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

    /// Encode throughput in MB/s over a multilingual corpus of prompt-sized lines.
    public static func tokenizerEncode(_ tokenizer: GemmaTokenizer) -> Double {
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

    /// One weight format's matrix-product speeds at 3B-224 shapes.
    public struct KernelResult: Sendable {
        /// bf16, q8 or q4.
        public var format: String
        /// (rows of x, inputs, outputs) of the prefill product, and its GFLOP/s.
        public var prefillShape: (m: Int, k: Int, n: Int)
        public var prefillGFLOPs: Double
        /// GB/s of weights streamed by the one-row (decode) product.
        public var decodeGBs: Double
    }

    /// Matrix products at 3B-224 shapes on random bf16 / q8 / q4 weights: prefill GEMM GFLOP/s
    /// and decode GEMV GB/s (weights streamed), each the best of a few runs. `report` gets each
    /// format's result as soon as it is measured.
    public static func kernels(on backend: FastBackend, report: (KernelResult) -> Void) {
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
                format.quantizeRow(floats + r * k, columns: k, codes: data + r * rowBytes, scales: scales + r * k / 32)
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
            report(KernelResult(format: name, prefillShape: (m, k, n), prefillGFLOPs: 2 * Double(m * k * n) / best / 1e9,
                                decodeGBs: Double(w.byteCount) / bestV / 1e9))
        }
    }

    /// Floating-point operations of the prefix (multiply-adds × 2): the vision tower with the
    /// projector, and the decoder's prefill up to the last row's logits, whose final layer
    /// computes keys and values for every row and the rest for the last row only (generation);
    /// with `allRows`, every layer for every row (a training step's forward pass).
    public static func prefixFLOPs(_ c: PaliGemmaConfig, promptLength t: Int, allRows: Bool = false) -> (vision: Double, decoder: Double) {
        let v = c.vision, x = c.text
        let n = Double(v.numPatches), d = Double(v.hiddenSize), i = Double(v.intermediateSize)
        var f = 2 * n * d * Double(v.numChannels * v.patchSize * v.patchSize)
        f += Double(v.numHiddenLayers) * (2 * n * (4 * d * d + 2 * d * i) + 4 * n * n * d)
        f += 2 * n * d * Double(x.hiddenSize)
        let h = Double(x.hiddenSize), qd = Double(x.numAttentionHeads * x.headDim), kvd = Double(x.numKeyValueHeads * x.headDim)
        let tt = Double(t)
        // per row: q and o, k and v, the MLP; attention: scores and sums over tt keys
        let perRow = 2 * (2 * h * qd + 3 * h * Double(x.intermediateSize)), keysValues = 2 * 2 * h * kvd
        let fullLayers = Double(allRows ? x.numHiddenLayers : x.numHiddenLayers - 1)
        var g = fullLayers * (tt * (perRow + keysValues) + 4 * tt * tt * qd)
        if !allRows { g += tt * keysValues + perRow + 4 * tt * qd }
        g += 2 * h * Double(x.vocabSize)
        return (f, g)
    }
}
