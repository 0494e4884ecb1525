import Foundation
import Kernels
import SafeTensors

/// Rewrites a checkpoint with its decoder matrices (and the tied embedding / output matrix)
/// quantized to 8 or 4 bits, and the vision tower's attention and MLP matrices to 8 bits, in
/// groups of 32 inputs with an f16 scale each.
///
/// Layout (loadable by `PaliGemmaModel` directly): each quantized `X.weight` becomes
/// `X.weight` — I8 [rows, cols] for 8 bits, U8 [rows, cols/2] for 4 bits (byte j of each 16-byte
/// group holds element j in its low nibble and element j+16 in its high one, value = nibble − 8)
/// — plus `X.weight_scales`, F16 [rows, ⌈cols/32⌉]; value = q × scale. With 8 bits the last group
/// of a row may be short (So400m's `fc2` has 4304 = 134·32 + 16 inputs: 135 scales per row).
/// Everything else (patch and position embeddings, projector, norms, biases) is copied unchanged.
/// config.json gains `quantization_config`.
public enum Quantizer {
    public enum Format: String, Sendable, CaseIterable {
        case q8, q4

        /// How the decoder's matrices are stored in this format.
        var weightFormat: WeightFormat { self == .q8 ? .q8 : .q4 }
    }

    /// The two safetensors entries of a matrix stored quantized: `name` (I8 or U8 codes) and
    /// `name_scales` (F16, one per group of 32 inputs).
    public static func entries(_ name: String, rows: Int, columns: Int, stored: WeightFormat) -> [SafeTensorsStreamWriter.Entry] {
        [.init(name: name, dtype: stored == .q8 ? .i8 : .u8, shape: [rows, stored.rowBytes(columns: columns)]),
         .init(name: name + "_scales", dtype: .f16, shape: [rows, WeightFormat.groups(columns: columns)])]
    }

    /// The stored format of a tensor, or nil to copy it unchanged: the Gemma 2 matrices and the
    /// token embedding in `format`; the SigLIP attention and MLP matrices in 8 bits for either
    /// format (So400m's `fc2`, 4304 inputs, with a short last group), so that the image encoder's
    /// products run on int8 too. They are 15% of a 3B model's weights and read once per image, so
    /// 4 bits would save little memory and no decode time there, at 18× the rounding step.
    public static func storedFormat(_ name: String, shape: [Int], format: Format) -> WeightFormat? {
        guard shape.count == 2 else { return nil }
        if name.contains("language_model") {
            let suffixes = ["q_proj.weight", "k_proj.weight", "v_proj.weight", "o_proj.weight", "gate_proj.weight",
                            "up_proj.weight", "down_proj.weight", "embed_tokens.weight", "lm_head.weight"]
            let stored = format.weightFormat
            return suffixes.contains { name.hasSuffix($0) } && stored.accepts(columns: shape[1]) ? stored : nil
        }
        if name.contains("vision_tower") && name.contains(".layers.") {
            let suffixes = ["self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight",
                            "self_attn.out_proj.weight", "mlp.fc1.weight", "mlp.fc2.weight"]
            return suffixes.contains { name.hasSuffix($0) } && WeightFormat.q8.accepts(columns: shape[1]) ? .q8 : nil
        }
        return nil
    }

    /// Quantizes `source` into the new directory `destination`. `progress` gets the fraction done.
    public static func quantize(source: URL, destination: URL, format: Format,
                                progress: ((Double) -> Void)? = nil) throws {
        let location = try CheckpointLocation(source)
        var (config, checkpoint) = try location.open()
        guard config.quantization == nil else {
            throw CheckpointError.unsupportedModel(file: source.path, reason: "already quantized (\(config.quantization!.format))")
        }
        try CheckpointDirectory.prepareNew(destination)

        var entries: [SafeTensorsStreamWriter.Entry] = []
        var plan: [(name: String, stored: WeightFormat?)] = []
        var sourceDType = "bf16"
        for name in checkpoint.names {
            let t = try checkpoint.tensor(name)
            if let stored = storedFormat(name, shape: t.shape, format: format) {
                guard [.f32, .bf16, .f16].contains(t.dtype) else {
                    throw CheckpointError.unsupportedDType(name: name, file: t.file, dtype: t.dtype.rawValue)
                }
                sourceDType = t.dtype == .f32 ? "f32" : (t.dtype == .f16 ? "f16" : "bf16")
                entries += Self.entries(name, rows: t.shape[0], columns: t.shape[1], stored: stored)
                plan.append((name, stored))
            } else {
                entries.append(.init(name: name, dtype: t.dtype, shape: t.shape))
                plan.append((name, nil))
            }
        }
        let writer = try SafeTensorsStreamWriter(url: destination.appendingPathComponent("model.safetensors"),
                                                 entries: entries, metadata: ["format": "pt", "quantization": format.rawValue])
        for (name, stored) in plan {
            let t = try checkpoint.tensor(name)
            guard let stored else {
                try writer.write(UnsafeRawBufferPointer(start: t.data, count: t.byteCount))
                progress?(Double(writer.bytesWritten) / Double(max(writer.totalBytes, 1)))
                continue
            }
            let (rows, cols) = (t.shape[0], t.shape[1])
            let sourceFormat: WeightFormat = t.dtype == .f32 ? .f32 : (t.dtype == .f16 ? .f16 : .bf16)
            let matrix = WeightMatrix(format: sourceFormat, rows: rows, columns: cols, data: t.data)
            let rowBytes = stored.rowBytes(columns: cols)
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
                    stored.quantizeRow(floats, columns: cols, codes: out + i * rowBytes, scales: scales + (r + i) * groups)
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
        try CheckpointDirectory.copyCompanionFiles(from: location.directory, to: destination)
    }
}

/// Writing a derived checkpoint (quantized, merged) beside its source.
enum CheckpointDirectory {
    /// Never writes over something: the destination is a new or empty directory, created here.
    static func prepareNew(_ destination: URL) throws {
        let fm = FileManager.default
        var isDirectory: ObjCBool = false
        if fm.fileExists(atPath: destination.path, isDirectory: &isDirectory) {
            guard isDirectory.boolValue else {
                throw InputError.option("\(destination.path) is an existing file; the destination is a new directory to write the checkpoint into")
            }
            let contents = try fm.contentsOfDirectory(atPath: destination.path).filter { !$0.hasPrefix(".") }
            guard contents.isEmpty else {
                throw InputError.option("\(destination.path) already holds \(contents.count) file\(contents.count == 1 ? "" : "s"); choose a new or empty directory")
            }
        }
        try fm.createDirectory(at: destination, withIntermediateDirectories: true)
    }

    /// Tokenizer and processor files travel along unchanged.
    static func copyCompanionFiles(from source: URL, to destination: URL) throws {
        let fm = FileManager.default
        for file in ["tokenizer.json", "tokenizer.model", "tokenizer_config.json", "special_tokens_map.json",
                     "preprocessor_config.json", "processor_config.json", "generation_config.json", "added_tokens.json",
                     "vae-oid.npz"] {
            let from = source.appendingPathComponent(file), to = destination.appendingPathComponent(file)
            if fm.fileExists(atPath: from.path) {
                if fm.fileExists(atPath: to.path) { try fm.removeItem(at: to) }
                try fm.copyItem(at: from, to: to)
            }
        }
        // Beside a big_vision tree the tokenizer is `paligemma_tokenizer.model` (or another
        // *.model); the written checkpoint is Hugging Face's layout, which names it tokenizer.model.
        let spm = destination.appendingPathComponent("tokenizer.model")
        if !fm.fileExists(atPath: spm.path), !fm.fileExists(atPath: destination.appendingPathComponent("tokenizer.json").path) {
            let models = ((try? fm.contentsOfDirectory(atPath: source.path)) ?? []).filter { $0.hasSuffix(".model") }.sorted()
            if let name = models.first(where: { $0 == "paligemma_tokenizer.model" }) ?? (models.count == 1 ? models.first : nil) {
                try fm.copyItem(at: source.appendingPathComponent(name), to: spm)
            }
        }
    }
}
