import CKernels
import Foundation
import Kernels
import SafeTensors

/// Rewrites a checkpoint with its decoder matrices (and the tied embedding / output matrix; with
/// 8 bits also the vision tower's attention and MLP matrices) quantized to 8 or 4 bits in groups
/// of 32 inputs with an f16 scale each.
///
/// Layout (loadable by `PaliGemmaModel` directly): each quantized `X.weight` becomes
/// `X.weight` — I8 [rows, cols] for q8, U8 [rows, cols/2] for q4 (byte j of each 16-byte group
/// holds element j in its low nibble and element j+16 in its high one, value = nibble − 8) — plus
/// `X.weight_scales`, F16 [rows, ⌈cols/32⌉]; value = q × scale. With q8 the last group of a row
/// may be short (So400m's `fc2` has 4304 = 134·32 + 16 inputs: 135 scales per row). Everything else (patch and position
/// embeddings, projector, norms, biases; the vision tower with 4 bits) is copied unchanged.
/// config.json gains `quantization_config`.
public enum Quantizer {
    public enum Format: String, Sendable, CaseIterable { case q8, q4 }

    /// Which tensors are quantized: the Gemma 2 matrices and the token embedding; with 8 bits
    /// also the SigLIP attention and MLP matrices (So400m's `fc2`, 4304 inputs, with a short last
    /// group), so that the int8 prefill products cover the whole image encoder. 4-bit keeps the
    /// vision tower in the source precision.
    static func shouldQuantize(_ name: String, shape: [Int], format: Format) -> Bool {
        guard shape.count == 2, (format == .q8 ? WeightFormat.q8 : .q4).accepts(columns: shape[1]) else { return false }
        if name.contains("language_model") {
            let suffixes = ["q_proj.weight", "k_proj.weight", "v_proj.weight", "o_proj.weight", "gate_proj.weight",
                            "up_proj.weight", "down_proj.weight", "embed_tokens.weight", "lm_head.weight"]
            return suffixes.contains { name.hasSuffix($0) }
        }
        if format == .q8 && name.contains("vision_tower") && name.contains(".layers.") {
            let suffixes = ["self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight",
                            "self_attn.out_proj.weight", "mlp.fc1.weight", "mlp.fc2.weight"]
            return suffixes.contains { name.hasSuffix($0) }
        }
        return false
    }

    /// Quantizes `source` into the new directory `destination`. `progress` gets the fraction done.
    public static func quantize(source: URL, destination: URL, format: Format,
                                progress: ((Double) -> Void)? = nil) throws {
        var config = try PaliGemmaConfig.load(from: source.appendingPathComponent("config.json"))
        guard config.quantization == nil else {
            throw CheckpointError.unsupportedModel(file: source.path, reason: "already quantized (\(config.quantization!.format))")
        }
        let checkpoint = try SafeTensorsCheckpoint(directory: source)
        let fm = FileManager.default
        try fm.createDirectory(at: destination, withIntermediateDirectories: true)

        var entries: [SafeTensorsStreamWriter.Entry] = []
        var plan: [(name: String, quantize: Bool)] = []
        var sourceDType = "bf16"
        for name in checkpoint.names {
            let t = try checkpoint.tensor(name)
            if shouldQuantize(name, shape: t.shape, format: format) {
                guard [.f32, .bf16, .f16].contains(t.dtype) else {
                    throw CheckpointError.unsupportedDType(name: name, file: t.file, dtype: t.dtype.rawValue)
                }
                sourceDType = t.dtype == .f32 ? "f32" : (t.dtype == .f16 ? "f16" : "bf16")
                let (rows, cols) = (t.shape[0], t.shape[1])
                entries.append(.init(name: name, dtype: format == .q8 ? .i8 : .u8, shape: [rows, format == .q8 ? cols : cols / 2]))
                entries.append(.init(name: name + "_scales", dtype: .f16, shape: [rows, WeightFormat.groups(columns: cols)]))
                plan.append((name, true))
            } else {
                entries.append(.init(name: name, dtype: t.dtype, shape: t.shape))
                plan.append((name, false))
            }
        }
        let writer = try SafeTensorsStreamWriter(url: destination.appendingPathComponent("model.safetensors"),
                                                 entries: entries, metadata: ["format": "pt", "quantization": format.rawValue])
        let cFormat = format == .q8 ? WeightFormat.q8.rawValue : WeightFormat.q4.rawValue
        for (name, quantize) in plan {
            let t = try checkpoint.tensor(name)
            if !quantize {
                try writer.write(UnsafeRawBufferPointer(start: t.data, count: t.byteCount))
                progress?(Double(writer.bytesWritten) / Double(max(writer.totalBytes, 1)))
                continue
            }
            let (rows, cols) = (t.shape[0], t.shape[1])
            let sourceFormat: WeightFormat = t.dtype == .f32 ? .f32 : (t.dtype == .f16 ? .f16 : .bf16)
            let matrix = WeightMatrix(format: sourceFormat, rows: rows, columns: cols, data: t.data)
            let rowBytes = format == .q8 ? cols : cols / 2
            let groups = WeightFormat.groups(columns: cols)
            // Quantize in blocks of rows; scales are collected and written after the data.
            let scales = UnsafeMutablePointer<UInt16>.allocate(capacity: rows * groups)
            defer { scales.deallocate() }
            let block = max(1, (1 << 24) / max(rowBytes, 1))
            let out = UnsafeMutableRawPointer.allocate(byteCount: block * rowBytes, alignment: 64)
            defer { out.deallocate() }
            let floats = UnsafeMutablePointer<Float>.allocate(capacity: cols)
            defer { floats.deallocate() }
            var r = 0
            while r < rows {
                let n = min(block, rows - r)
                for i in 0..<n {
                    matrix.convertRow(r + i, into: floats)
                    ck_quantize_row(floats, Int64(cols), cFormat, out + i * rowBytes, scales + (r + i) * groups)
                }
                try writer.write(UnsafeRawBufferPointer(start: out, count: n * rowBytes))
                r += n
                progress?(Double(writer.bytesWritten) / Double(max(writer.totalBytes, 1)))
            }
            try writer.write(UnsafeRawBufferPointer(start: scales, count: rows * groups * 2))
        }
        try writer.finish()

        config.quantization = QuantizationConfig(format: format.rawValue, sourceDType: sourceDType)
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        try encoder.encode(config).write(to: destination.appendingPathComponent("config.json"))
        // Tokenizer and processor files travel along unchanged.
        for file in ["tokenizer.json", "tokenizer.model", "tokenizer_config.json", "special_tokens_map.json",
                     "preprocessor_config.json", "processor_config.json", "generation_config.json", "added_tokens.json",
                     "vae-oid.npz"] {
            let from = source.appendingPathComponent(file), to = destination.appendingPathComponent(file)
            if fm.fileExists(atPath: from.path) {
                if fm.fileExists(atPath: to.path) { try fm.removeItem(at: to) }
                try fm.copyItem(at: from, to: to)
            }
        }
    }
}
