import Foundation
import SafeTensors

/// Writes a random-weight checkpoint of a given configuration in the hub layout, streaming the
/// tensors to disk (a 3B model never sits in memory). Used by `paligemma bench` and by tests.
public enum RandomCheckpoint {
    /// Writes config.json and model.safetensors (bf16 or f32) into `directory`.
    /// `progress` receives the fraction written.
    public static func write(config: PaliGemmaConfig, to directory: URL, bf16: Bool = true, seed: UInt64 = 42,
                             progress: ((Double) -> Void)? = nil) throws {
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        try JSONEncoder().encode(config).write(to: directory.appendingPathComponent("config.json"))
        let tensors = checkpointTensorShapes(config)
        let writer = try SafeTensorsStreamWriter(
            url: directory.appendingPathComponent("model.safetensors"),
            entries: tensors.map { .init(name: $0.name, dtype: bf16 ? .bf16 : .f32, shape: $0.shape) })
        var rng = SplitMix64(seed: seed)
        let chunk = 1 << 20
        var values = [Float](repeating: 0, count: chunk)
        var halves = [UInt16](repeating: 0, count: chunk)
        for t in tensors {
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
