import Foundation
import Kernels
import PaliGemma
import SafeTensors

/// Writes a random-weight checkpoint of a given configuration in the hub layout, streaming the
/// tensors to disk (a 3B model never sits in memory). Used by `paligemma bench` and by tests.
public enum RandomCheckpoint {
    /// Writes config.json and model.safetensors (bf16 or f32) into `directory`; with `quantize`,
    /// the decoder matrices are written directly in that format (random codes and scales), as
    /// `paligemma quantize` would lay them out, without a bf16 copy first.
    /// `progress` receives the fraction written.
    public static func write(config: PaliGemmaConfig, to directory: URL, bf16: Bool = true,
                             quantize: Quantizer.Format? = nil, seed: UInt64 = 42,
                             progress: ((Double) -> Void)? = nil) throws {
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        var config = config
        if let quantize { config.quantization = QuantizationConfig(format: quantize.rawValue, sourceDType: bf16 ? "bf16" : "f32") }
        try JSONEncoder().encode(config).write(to: directory.appendingPathComponent("config.json"))
        let tensors = checkpointTensorShapes(config)
        var entries: [SafeTensorsStreamWriter.Entry] = []
        for t in tensors {
            if let quantize, let stored = Quantizer.storedFormat(t.name, shape: t.shape, format: quantize) {
                entries += Quantizer.entries(t.name, rows: t.shape[0], columns: t.shape[1], stored: stored)
            } else {
                entries.append(.init(name: t.name, dtype: bf16 ? .bf16 : .f32, shape: t.shape))
            }
        }
        let writer = try SafeTensorsStreamWriter(url: directory.appendingPathComponent("model.safetensors"), entries: entries)
        var rng = SplitMix64(seed: seed)
        let chunk = 1 << 20
        var values = [Float](repeating: 0, count: chunk)
        var halves = [UInt16](repeating: 0, count: chunk)
        for t in tensors {
            if let quantize, let stored = Quantizer.storedFormat(t.name, shape: t.shape, format: quantize) {
                // Random codes, and scales that give the same spread as the float weights below.
                let (rows, cols) = (t.shape[0], t.shape[1])
                let codeBytes = rows * stored.rowBytes(columns: cols)
                var bytes = [UInt8](repeating: 0, count: chunk * 4)
                var done = 0
                while done < codeBytes {
                    let n = min(bytes.count, codeBytes - done)
                    for i in stride(from: 0, to: n, by: 8) {
                        let r = rng.next()
                        withUnsafeBytes(of: r) { raw in
                            for j in 0..<min(8, n - i) { bytes[i + j] = stored == .q8 ? raw[j] | 0x01 : raw[j] }
                        }
                    }
                    try bytes.withUnsafeBytes { try writer.write(UnsafeRawBufferPointer(rebasing: $0[0..<n])) }
                    done += n
                    progress?(Double(writer.bytesWritten) / Double(max(writer.totalBytes, 1)))
                }
                let spread = t.name.contains("embed") ? Float(1) : 1.7 / Float(cols).squareRoot()
                let scale = (spread / (stored == .q8 ? 127 : 7)).float16Bits
                let scales = [UInt16](repeating: scale, count: rows * WeightFormat.groups(columns: cols))
                try scales.withUnsafeBytes { try writer.write($0) }
                continue
            }
            let count = t.shape.reduce(1, *)
            // Scale like a trained network: unit-variance activations through every product.
            let isNormOrBias = t.name.hasSuffix("norm.weight") || t.name.contains("layer_norm") || t.name.hasSuffix(".bias")
            let fanIn = t.shape.count > 1 ? t.shape.dropFirst().reduce(1, *) : 1
            let scale: Float = isNormOrBias ? 0.05 : (t.name.contains("embed") ? 1 : 1.7 / Float(fanIn).squareRoot())
            var done = 0
            while done < count {
                let n = min(chunk, count - done)
                for i in 0..<n {
                    // uniform in [-scale, scale): cheap enough for gigabytes
                    values[i] = (Float(Int32(truncatingIfNeeded: rng.next() >> 32)) * 0x1p-31) * scale
                }
                if bf16 {
                    for i in 0..<n { halves[i] = UInt16(values[i].bitPattern >> 16) }
                    try halves.withUnsafeBytes { try writer.write(UnsafeRawBufferPointer(rebasing: $0[0..<(n * 2)])) }
                } else {
                    try values.withUnsafeBytes { try writer.write(UnsafeRawBufferPointer(rebasing: $0[0..<(n * 4)])) }
                }
                done += n
                progress?(Double(writer.bytesWritten) / Double(max(writer.totalBytes, 1)))
            }
        }
        try writer.finish()
    }
}
