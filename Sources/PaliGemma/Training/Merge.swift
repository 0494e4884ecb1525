import Foundation
import Kernels
import SafeTensors

extension LoRAAdapter {
    /// Writes a copy of the checkpoint in `source` into the new directory `destination` with this
    /// adapter folded in, `W' = W + scale · B·A`, computed in float32 and stored in each matrix's
    /// own dtype (as PEFT's `merge_and_unload` then `save_pretrained` does). Everything else is
    /// copied unchanged. Quantized checkpoints are refused: merge into the original, then quantize.
    public func merge(source: URL, destination: URL, progress: ((Double) -> Void)? = nil) throws {
        let location = try CheckpointLocation(source)
        let (model, checkpoint) = try location.open()
        guard model.quantization == nil else {
            throw CheckpointError.unsupportedModel(file: source.path, reason:
                "is quantized (\(model.quantization!.format)); merge the adapter into the bf16 checkpoint it came from, then quantize the result")
        }
        guard layerCount == model.text.numHiddenLayers else {
            throw LoRAError.invalid("the adapter has \(layerCount) layers; the model has \(model.text.numHiddenLayers)")
        }
        // Which tensor each pair adapts: "<prefix>layers.L.self_attn.q_proj.weight" of the language model.
        var targets: [String: LoRAPair] = [:]
        for (l, t, pair) in orderedPairs {
            let suffix = "layers.\(l).\(t.path).weight"
            guard let name = checkpoint.names.first(where: { $0.hasSuffix("." + suffix) && $0.contains("language_model") }) else {
                throw CheckpointError.missingTensor(name: "language_model…" + suffix, files: checkpoint.fileNames)
            }
            targets[name] = pair
        }
        for (l, t, pair) in orderedVisionPairs {
            let suffix = "encoder.layers.\(l).\(t.path).weight"
            guard let name = checkpoint.names.first(where: { $0.hasSuffix("." + suffix) && $0.contains("vision_tower") }) else {
                throw CheckpointError.missingTensor(name: "vision_tower…" + suffix, files: checkpoint.fileNames)
            }
            targets[name] = pair
        }
        // Trained token rows replace embed_tokens' rows (and so, tied, lm_head's).
        var embedName: String?
        if tokens != nil {
            embedName = checkpoint.names.first { $0.hasSuffix("embed_tokens.weight") && $0.contains("language_model") }
            guard embedName != nil else {
                throw CheckpointError.missingTensor(name: "language_model…embed_tokens.weight", files: checkpoint.fileNames)
            }
        }
        try CheckpointDirectory.prepareNew(destination)
        let entries = try checkpoint.names.map { name -> SafeTensorsStreamWriter.Entry in
            let t = try checkpoint.tensor(name)
            return .init(name: name, dtype: t.dtype, shape: t.shape)
        }
        let writer = try SafeTensorsStreamWriter(url: destination.appendingPathComponent("model.safetensors"),
                                                 entries: entries, metadata: ["format": "pt"])
        let s = config.scale
        for name in checkpoint.names {
            let t = try checkpoint.tensor(name)
            let pair = targets[name]
            guard pair != nil || name == embedName else {
                try writer.write(UnsafeRawBufferPointer(start: t.data, count: t.byteCount))
                progress?(Double(writer.bytesWritten) / Double(max(writer.totalBytes, 1)))
                continue
            }
            let format: WeightFormat
            switch t.dtype {
            case .f32: format = .f32
            case .bf16: format = .bf16
            case .f16: format = .f16
            default: throw CheckpointError.unsupportedDType(name: name, file: t.file, dtype: t.dtype.rawValue)
            }
            let (rows, cols) = (t.shape[0], t.shape[1])
            let w = WeightMatrix(format: format, rows: rows, columns: cols, data: t.data)
            let row = UnsafeMutablePointer<Float>.allocate(capacity: cols)
            defer { row.deallocate() }
            var out = Data(capacity: rows * cols * format.rowBytes(columns: 1))
            for i in 0..<rows {
                if let tokens, name == embedName, let j = tokens.index[i] {
                    row.update(from: tokens.rows.rowPointer(j), count: cols)
                } else {
                    w.convertRow(i, into: row)
                }
                if let pair {
                    // row += s · Σ_k B[i,k] · A[k,:]
                    for k in 0..<pair.a.rows {
                        let coefficient = s * pair.b[i, k]
                        let a = pair.a.rowPointer(k)
                        for j in 0..<cols { row[j] += coefficient * a[j] }
                    }
                }
                switch format {
                case .f32:
                    out.append(UnsafeBufferPointer(start: row, count: cols))
                case .bf16:
                    let bits = (0..<cols).map { UInt16(truncatingIfNeeded: row[$0].roundedToBFloat16.bitPattern >> 16) }
                    bits.withUnsafeBufferPointer { out.append($0) }
                default:
                    let bits = (0..<cols).map { row[$0].float16Bits }
                    bits.withUnsafeBufferPointer { out.append($0) }
                }
            }
            try writer.write(out)
            progress?(Double(writer.bytesWritten) / Double(max(writer.totalBytes, 1)))
        }
        try writer.finish()
        let configFile = location.directory.appendingPathComponent("config.json")
        if location.bigVisionTree == nil || FileManager.default.fileExists(atPath: configFile.path) {
            try FileManager.default.copyItem(at: configFile, to: destination.appendingPathComponent("config.json"))
        } else {
            // A big_vision tree's settings were read off its shapes: written out, they make the
            // merged copy a Hugging Face checkpoint.
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            try encoder.encode(model).write(to: destination.appendingPathComponent("config.json"))
        }
        try CheckpointDirectory.copyCompanionFiles(from: location.directory, to: destination)
    }
}
