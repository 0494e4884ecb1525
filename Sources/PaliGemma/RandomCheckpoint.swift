import Foundation
import SafeTensors

/// Writes a random-weight checkpoint of a given configuration in the hub layout, streaming the
/// tensors to disk (a 3B model never sits in memory). Used by `paligemma bench` and by tests.
public enum RandomCheckpoint {
    /// Writes config.json and model.safetensors (bf16 or f32) into `directory`.
    /// `progress` receives the fraction written.
    public static func write(config: PaliGemmaConfig, to directory: URL, bf16: Bool = true, seed: UInt64 = 42,
                             progress: ((Double) -> Void)? = nil) throws {
        let fm = FileManager.default
        try fm.createDirectory(at: directory, withIntermediateDirectories: true)
        let configData = try JSONEncoder().encode(config)
        try configData.write(to: directory.appendingPathComponent("config.json"))

        let tensors = checkpointTensorShapes(config)
        let elementSize = bf16 ? 2 : 4
        var header = "{\"__metadata__\":{\"format\":\"pt\"}"
        var offset = 0
        for t in tensors {
            let bytes = t.shape.reduce(1, *) * elementSize
            header += ",\"\(t.name)\":{\"dtype\":\"\(bf16 ? "BF16" : "F32")\",\"shape\":[\(t.shape.map(String.init).joined(separator: ","))],\"data_offsets\":[\(offset),\(offset + bytes)]}"
            offset += bytes
        }
        header += "}"
        while header.utf8.count % 8 != 0 { header += " " }

        let path = directory.appendingPathComponent("model.safetensors")
        let tmp = directory.appendingPathComponent("model.safetensors.partial")
        fm.createFile(atPath: tmp.path, contents: nil)
        let handle = try FileHandle(forWritingTo: tmp)
        defer { try? handle.close() }
        var length = UInt64(header.utf8.count).littleEndian
        try handle.write(contentsOf: withUnsafeBytes(of: &length) { Data($0) })
        try handle.write(contentsOf: Data(header.utf8))

        var state = seed | 1
        let chunk = 1 << 22
        var buffer = [UInt8](repeating: 0, count: chunk * elementSize)
        var written = 0
        for t in tensors {
            let count = t.shape.reduce(1, *)
            // Scale like a trained network: unit-variance activations through every product.
            let isNorm = t.name.hasSuffix("layernorm.weight") || t.name.hasSuffix("norm.weight") || t.name.contains("layer_norm")
            let isBias = t.name.hasSuffix(".bias")
            let fanIn = t.shape.count > 1 ? t.shape.dropFirst().reduce(1, *) : 1
            let scale: Float = isNorm || isBias ? 0.05 : (t.name.contains("embed") ? 1 : 1.7 / Float(fanIn).squareRoot())
            var done = 0
            while done < count {
                let n = min(chunk, count - done)
                buffer.withUnsafeMutableBytes { raw in
                    for i in 0..<n {
                        // xorshift64*: uniform in [-1, 1) — fast enough for gigabytes.
                        state ^= state >> 12; state ^= state << 25; state ^= state >> 27
                        let r = state &* 0x2545F4914F6CDD1D
                        let u = Float(Int32(truncatingIfNeeded: r >> 32)) * 0x1p-31
                        let value = u * scale
                        if bf16 {
                            raw.storeBytes(of: UInt16(value.bitPattern >> 16), toByteOffset: i * 2, as: UInt16.self)
                        } else {
                            raw.storeBytes(of: value, toByteOffset: i * 4, as: Float.self)
                        }
                    }
                }
                try handle.write(contentsOf: Data(buffer[0..<(n * elementSize)]))
                done += n
                written += n * elementSize
                progress?(Double(written) / Double(max(offset, 1)))
            }
        }
        try handle.close()
        if fm.fileExists(atPath: path.path) { try fm.removeItem(at: path) }
        try fm.moveItem(at: tmp, to: path)
    }
}
