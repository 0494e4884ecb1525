import Dispatch
import Foundation
import SafeTensors

/// big_vision's PaliGemma parameter tree, as Google publishes it on Kaggle
/// (`paligemma2-3b-pt-224.b16.npz`, `paligemma-3b-mix-448.npz` …), read without a conversion step.
///
/// The archive is memory-mapped. Arrays are renamed to Hugging Face's tensor names and reshaped
/// as transformers' `convert_paligemma2_weights_to_hf.py` states the mapping; arrays used as they
/// are (embedding, norms, biases, position embedding) stay in the map, and kernels stored
/// input-major (every linear layer, the patch convolution) are transposed once into memory.
///
/// The model's settings come from a `config.json` beside the archive when there is one, else from
/// the tree's shapes and the published PaliGemma / Gemma constants.
struct BigVisionTree {
    let checkpoint: SafeTensorsCheckpoint
    let config: PaliGemmaConfig

    /// Arrays by name without the `params/` prefix.
    private let arrays: [String: TensorInfo]
    private let file: String

    init(npz url: URL, config given: PaliGemmaConfig?) throws {
        let size = (try? FileManager.default.attributesOfItem(atPath: url.path)[.size] as? Int) ?? 0
        let populate = Double(size) < 0.5 * Double(ProcessInfo.processInfo.physicalMemory)
        let archive = try MappedNpzArchive(path: url.path, populate: populate)
        var arrays: [String: TensorInfo] = [:]
        for (key, t) in archive.arrays {
            arrays[key.hasPrefix("params/") ? String(key.dropFirst(7)) : key] = t
        }
        self.arrays = arrays
        file = url.lastPathComponent
        var config = try given ?? Self.inferConfig(arrays, file: file)
        // The tree's embedding has the tokenizer's vocabulary; Hugging Face's conversion appends
        // `<image>` and padding rows (257152 → 257216), which never win a logit. The tree's rows
        // are the vocabulary here.
        let rows = try Self.need(arrays, "llm/embedder/input_embedding", file: file).shape.first ?? 0
        if rows < config.text.vocabSize { config.text.vocabSize = rows }
        try config.validate(file: url.path)
        self.config = config
        let (tensors, storages) = try Self.map(arrays, config: config, file: file)
        checkpoint = try SafeTensorsCheckpoint(tensors: tensors, owners: [archive] + storages)
    }

    static func need(_ arrays: [String: TensorInfo], _ key: String, file: String, rank: Int? = nil) throws -> TensorInfo {
        guard let t = arrays[key] else {
            throw CheckpointError.badTree(file: file, reason: "array 'params/\(key)' is missing; the file is not a complete big_vision PaliGemma tree")
        }
        if let rank, t.shape.count != rank {
            throw CheckpointError.badTree(file: file, reason: "array 'params/\(key)' has shape \(t.shape); \(rank) dimensions were expected")
        }
        return t
    }

    /// The settings of the published configurations, read off the shapes: sizes from the arrays,
    /// the rest from Gemma 2 (PaliGemma 2) or Gemma (PaliGemma 1), told apart by Gemma 2's
    /// post-norms.
    static func inferConfig(_ arrays: [String: TensorInfo], file: String) throws -> PaliGemmaConfig {
        func shape(_ key: String, rank: Int) throws -> [Int] { try need(arrays, key, file: file, rank: rank).shape }
        let embedding = try shape("llm/embedder/input_embedding", rank: 2)
        let (vocab, hidden) = (embedding[0], embedding[1])
        let (layers, heads, headDim) = try queryShape(arrays, file: file)
        let kv = try shape("llm/layers/attn/kv_einsum/w", rank: 5)
        let gating = try shape("llm/layers/mlp/gating_einsum", rank: 4)
        let patch = try shape("img/embedding/kernel", rank: 4)          // [P, P, C, Dv]
        let positions = try shape("img/pos_embedding", rank: 3)         // [1, T, Dv]
        let query = try shape("img/Transformer/encoderblock/MultiHeadDotProductAttention_0/query/kernel", rank: 4)
        let mlp = try shape("img/Transformer/encoderblock/MlpBlock_0/Dense_0/kernel", rank: 3)

        var c = PaliGemmaConfig()
        let gemma2 = arrays["llm/layers/post_attention_norm/scale"] != nil
        var t = gemma2 ? TextConfig() : TextConfig.gemma1Defaults
        (t.vocabSize, t.hiddenSize, t.numHiddenLayers) = (vocab, hidden, layers)
        (t.numAttentionHeads, t.numKeyValueHeads, t.headDim, t.intermediateSize) = (heads, kv[2], headDim, gating[3])
        if gemma2 {
            t.slidingLayers = TextConfig.defaultSlidingLayers(layers)
            t.queryPreAttnScalar = queryScale(hidden: hidden, heads: heads, headDim: headDim)
        } else {
            t.queryPreAttnScalar = Float(headDim)
            t.slidingLayers = Array(repeating: false, count: layers)
        }
        c.text = t
        let side = Int(Double(positions[1]).squareRoot().rounded())
        guard side * side == positions[1], patch[0] == patch[1] else {
            throw CheckpointError.badTree(file: file, reason: "img/pos_embedding has \(positions[1]) positions, not a square grid")
        }
        c.vision.hiddenSize = patch[3]
        c.vision.numChannels = patch[2]
        c.vision.patchSize = patch[0]
        c.vision.imageSize = side * patch[0]
        c.vision.numHiddenLayers = query[0]
        c.vision.numAttentionHeads = query[2]
        c.vision.intermediateSize = mlp[2]
        c.vision.visionUseHead = false
        c.projectionDim = hidden
        // PaliGemmaProcessor gives `<image>` the first id after the tokenizer's vocabulary.
        c.imageTokenIndex = vocab
        return c
    }

    /// Gemma 2's `query_pre_attn_scalar`: queries are scaled by head_dim^-0.5, except in the 27B
    /// (hidden 4608), which uses (hidden / heads)^-0.5 (the conversion script's variant table).
    static func queryScale(hidden: Int, heads: Int, headDim: Int) -> Float {
        Float(hidden == 4608 ? hidden / heads : headDim)
    }

    /// Layers, heads and head size of the decoder's query kernel (`q_einsum`, or the fused
    /// `qkv_einsum` of trees whose keys and values have as many heads as the queries).
    private static func queryShape(_ arrays: [String: TensorInfo], file: String) throws -> (Int, Int, Int) {
        if arrays["llm/layers/attn/q_einsum/w"] == nil, let qkv = arrays["llm/layers/attn/qkv_einsum/w"], qkv.shape.count == 5 { return (qkv.shape[0], qkv.shape[2], qkv.shape[4]) }
        let q = try need(arrays, "llm/layers/attn/q_einsum/w", file: file, rank: 4)
        return (q.shape[0], q.shape[1], q.shape[3])
    }

    // MARK: - The mapping

    private static func map(_ arrays: [String: TensorInfo], config: PaliGemmaConfig, file: String)
        throws -> ([TensorInfo], [TensorStorage]) {
        var used = Set<String>()
        func get(_ key: String, _ expected: [Int]) throws -> TensorInfo {
            let t = try need(arrays, key, file: file)
            guard t.shape == expected else {
                throw CheckpointError.badTree(file: file, reason: "array 'params/\(key)' has shape \(t.shape); the model needs \(expected)")
            }
            guard [.f32, .bf16, .f16].contains(t.dtype) else {
                throw CheckpointError.unsupportedDType(name: "params/" + key, file: file, dtype: t.dtype.rawValue)
            }
            used.insert(key)
            return t
        }
        let v = config.vision, x = config.text
        let (d, iv, lv, nv) = (v.hiddenSize, v.intermediateSize, v.numHiddenLayers, v.numAttentionHeads)
        let (h, i, l, n, k, hd) = (x.hiddenSize, x.intermediateSize, x.numHiddenLayers, x.numAttentionHeads, x.numKeyValueHeads, x.headDim)
        let p = v.patchSize, c = v.numChannels, positions = v.numPatches
        let out = Output(file: file)

        // Vision tower. HF: vision_tower.vision_model.*
        let vp = "vision_tower.vision_model."
        let kernel = try get("img/embedding/kernel", [p, p, c, d])
        out.permutedPatchKernel(vp + "embeddings.patch_embedding.weight", kernel, p: p, channels: c, width: d)
        out.view(vp + "embeddings.patch_embedding.bias", try get("img/embedding/bias", [d]), shape: [d])
        out.view(vp + "embeddings.position_embedding.weight", try get("img/pos_embedding", [1, positions, d]), shape: [positions, d])
        let block = "img/Transformer/encoderblock/"
        let ln0s = try get(block + "LayerNorm_0/scale", [lv, d]), ln0b = try get(block + "LayerNorm_0/bias", [lv, d])
        let ln1s = try get(block + "LayerNorm_1/scale", [lv, d]), ln1b = try get(block + "LayerNorm_1/bias", [lv, d])
        let fc1 = try get(block + "MlpBlock_0/Dense_0/kernel", [lv, d, iv]), fc1b = try get(block + "MlpBlock_0/Dense_0/bias", [lv, iv])
        let fc2 = try get(block + "MlpBlock_0/Dense_1/kernel", [lv, iv, d]), fc2b = try get(block + "MlpBlock_0/Dense_1/bias", [lv, d])
        let attention = block + "MultiHeadDotProductAttention_0/"
        let qkv = try [("q_proj", "query"), ("k_proj", "key"), ("v_proj", "value")].map { ours, theirs in
            (ours, try get(attention + theirs + "/kernel", [lv, d, nv, d / nv]), try get(attention + theirs + "/bias", [lv, nv, d / nv]))
        }
        let outKernel = try get(attention + "out/kernel", [lv, nv, d / nv, d]), outBias = try get(attention + "out/bias", [lv, d])
        out.layers(lv) { j, o in
            let b = vp + "encoder.layers.\(j)."
            o.view(b + "layer_norm1.weight", ln0s, layer: j, shape: [d]); o.view(b + "layer_norm1.bias", ln0b, layer: j, shape: [d])
            o.view(b + "layer_norm2.weight", ln1s, layer: j, shape: [d]); o.view(b + "layer_norm2.bias", ln1b, layer: j, shape: [d])
            o.transposed(b + "mlp.fc1.weight", fc1, layer: j, rows: d, columns: iv); o.view(b + "mlp.fc1.bias", fc1b, layer: j, shape: [iv])
            o.transposed(b + "mlp.fc2.weight", fc2, layer: j, rows: iv, columns: d); o.view(b + "mlp.fc2.bias", fc2b, layer: j, shape: [d])
            for (ours, w, bias) in qkv {
                // kernel[j] is [D, heads, D/heads]: as a [D, D] matrix, transposed.
                o.transposed(b + "self_attn.\(ours).weight", w, layer: j, rows: d, columns: d)
                o.view(b + "self_attn.\(ours).bias", bias, layer: j, shape: [d])
            }
            o.transposed(b + "self_attn.out_proj.weight", outKernel, layer: j, rows: d, columns: d)
            o.view(b + "self_attn.out_proj.bias", outBias, layer: j, shape: [d])
        }
        out.view(vp + "post_layernorm.weight", try get("img/Transformer/encoder_norm/scale", [d]), shape: [d])
        out.view(vp + "post_layernorm.bias", try get("img/Transformer/encoder_norm/bias", [d]), shape: [d])

        // Projector: img/head maps the vision width to the decoder's.
        out.transposed("multi_modal_projector.linear.weight", try get("img/head/kernel", [d, h]), layer: 0, rows: d, columns: h)
        out.view("multi_modal_projector.linear.bias", try get("img/head/bias", [h]), shape: [h])

        // Decoder. HF: language_model.model.*; the output projection is the tied embedding.
        let lp = "language_model.model."
        out.view(lp + "embed_tokens.weight", try get("llm/embedder/input_embedding", [x.vocabSize, h]), shape: [x.vocabSize, h])
        let layer = "llm/layers/"
        let q: TensorInfo, kvw: TensorInfo, fused: Bool
        if arrays[layer + "attn/q_einsum/w"] == nil, arrays[layer + "attn/qkv_einsum/w"] != nil {
            guard k == n else {
                throw CheckpointError.badTree(file: file, reason: "a fused qkv_einsum needs as many key/value heads as query heads")
            }
            (q, kvw, fused) = (try get(layer + "attn/qkv_einsum/w", [l, 3, n, h, hd]), try get(layer + "attn/qkv_einsum/w", [l, 3, n, h, hd]), true)
        } else {
            (q, kvw, fused) = (try get(layer + "attn/q_einsum/w", [l, n, h, hd]), try get(layer + "attn/kv_einsum/w", [l, 2, k, h, hd]), false)
        }
        let o = try get(layer + "attn/attn_vec_einsum/w", [l, n, hd, h])
        let gating = try get(layer + "mlp/gating_einsum", [l, 2, h, i]), down = try get(layer + "mlp/linear", [l, i, h])
        let preAttention = try get(layer + "pre_attention_norm/scale", [l, h]), preFFW = try get(layer + "pre_ffw_norm/scale", [l, h])
        let post = x.postNorms
        let postAttention = post ? try get(layer + "post_attention_norm/scale", [l, h]) : nil
        let postFFW = post ? try get(layer + "post_ffw_norm/scale", [l, h]) : nil
        let (qElements, kvElements) = (n * h * hd, k * h * hd)
        out.layers(l) { j, w in
            let b = lp + "layers.\(j)."
            // q_einsum[j] is [heads, H, head_dim]: each head's [H, head_dim] block transposed,
            // heads stacked: [heads·head_dim, H]. kv_einsum[j] is [2, kv heads, H, head_dim].
            if fused {
                let base = j * 3 * qElements
                w.transposed(b + "self_attn.q_proj.weight", q, element: base, rows: h, columns: hd, blocks: n)
                w.transposed(b + "self_attn.k_proj.weight", q, element: base + qElements, rows: h, columns: hd, blocks: n)
                w.transposed(b + "self_attn.v_proj.weight", q, element: base + 2 * qElements, rows: h, columns: hd, blocks: n)
            } else {
                w.transposed(b + "self_attn.q_proj.weight", q, element: j * qElements, rows: h, columns: hd, blocks: n)
                w.transposed(b + "self_attn.k_proj.weight", kvw, element: j * 2 * kvElements, rows: h, columns: hd, blocks: k)
                w.transposed(b + "self_attn.v_proj.weight", kvw, element: (j * 2 + 1) * kvElements, rows: h, columns: hd, blocks: k)
            }
            // attn_vec_einsum[j] is [heads, head_dim, H]: as [heads·head_dim, H], transposed.
            w.transposed(b + "self_attn.o_proj.weight", o, layer: j, rows: n * hd, columns: h)
            w.transposed(b + "mlp.gate_proj.weight", gating, element: j * 2 * h * i, rows: h, columns: i)
            w.transposed(b + "mlp.up_proj.weight", gating, element: (j * 2 + 1) * h * i, rows: h, columns: i)
            w.transposed(b + "mlp.down_proj.weight", down, layer: j, rows: i, columns: h)
            w.view(b + "input_layernorm.weight", preAttention, layer: j, shape: [h])
            if let postAttention, let postFFW {
                w.view(b + "post_attention_layernorm.weight", postAttention, layer: j, shape: [h])
                w.view(b + "pre_feedforward_layernorm.weight", preFFW, layer: j, shape: [h])
                w.view(b + "post_feedforward_layernorm.weight", postFFW, layer: j, shape: [h])
            } else {
                // Gemma 1 has one norm before the MLP, which transformers calls post_attention_layernorm.
                w.view(b + "post_attention_layernorm.weight", preFFW, layer: j, shape: [h])
            }
        }
        out.view(lp + "norm.weight", try get("llm/final_norm/scale", [h]), shape: [h])

        // Anything else under the model's branches means a layout this mapping does not know:
        // running without it would answer wrongly, so it is refused.
        if let extra = arrays.keys.sorted().first(where: { ($0.hasPrefix("img/") || $0.hasPrefix("llm/")) && !used.contains($0) }) {
            throw CheckpointError.badTree(file: file, reason: "array 'params/\(extra)' is not part of the PaliGemma layout this reader knows")
        }
        return (out.tensors, out.storages)
    }

    /// Collects the renamed tensors and the memory made for them; `layers` fills layers in
    /// parallel.
    // @unchecked Sendable: `tensors` and `storages` are only touched under `lock`.
    private final class Output: @unchecked Sendable {
        let file: String
        private let lock = NSLock()
        private(set) var tensors: [TensorInfo] = []
        private(set) var storages: [TensorStorage] = []

        init(file: String) { self.file = file }

        private func add(_ t: TensorInfo, _ storage: TensorStorage?) {
            lock.lock()
            tensors.append(t)
            if let storage { storages.append(storage) }
            lock.unlock()
        }

        /// `source`'s layer `layer` (or from element `element`) as it is, reshaped: in place in
        /// the map, or copied when the archive left it unaligned for its element type.
        func view(_ name: String, _ source: TensorInfo, layer: Int = 0, shape: [Int]) {
            let count = shape.reduce(1, *)
            let size = source.dtype.size
            let start = source.data + layer * count * size
            if Int(bitPattern: start) % size == 0 {
                add(TensorInfo(name: name, dtype: source.dtype, shape: shape, data: start, byteCount: count * size, file: file), nil)
            } else {
                let storage = TensorStorage(count: count * size)
                storage.bytes.copyMemory(from: start, byteCount: count * size)
                add(storage.tensor(name: name, dtype: source.dtype, shape: shape, file: file), storage)
            }
        }

        /// The transpose of `blocks` consecutive `rows × columns` matrices of `source` starting at
        /// layer `layer`'s block (or at element `element`), stacked: `[blocks·columns, rows]`.
        func transposed(_ name: String, _ source: TensorInfo, layer: Int? = nil, element: Int? = nil,
                        rows: Int, columns: Int, blocks: Int = 1) {
            let size = source.dtype.size
            let first = element ?? (layer ?? 0) * blocks * rows * columns
            let storage = TensorStorage(count: blocks * rows * columns * size)
            for b in 0..<blocks {
                transposeElements(source.data + (first + b * rows * columns) * size, rows: rows, columns: columns,
                                  elementSize: size, into: storage.bytes + b * rows * columns * size)
            }
            add(storage.tensor(name: name, dtype: source.dtype, shape: [blocks * columns, rows], file: file), storage)
        }

        /// The patch convolution's kernel, [P, P, C, D] (height, width, in, out) to PyTorch's
        /// [D, C, P, P]: `kernel.transpose(3, 2, 0, 1)` in the conversion script.
        func permutedPatchKernel(_ name: String, _ source: TensorInfo, p: Int, channels: Int, width: Int) {
            let size = source.dtype.size
            let storage = TensorStorage(count: p * p * channels * width * size)
            for y in 0..<p {
                for x in 0..<p {
                    for c in 0..<channels {
                        for o in 0..<width {
                            let from = ((y * p + x) * channels + c) * width + o
                            let to = ((o * channels + c) * p + y) * p + x
                            storage.bytes.advanced(by: to * size).copyMemory(from: source.data + from * size, byteCount: size)
                        }
                    }
                }
            }
            add(storage.tensor(name: name, dtype: source.dtype, shape: [width, channels, p, p], file: file), storage)
        }

        /// Runs `body` for each layer on every core.
        func layers(_ count: Int, _ body: @Sendable (Int, Output) -> Void) {
            DispatchQueue.concurrentPerform(iterations: count) { body($0, self) }
        }
    }
}

/// Where a checkpoint's files are: a Hugging Face directory (config.json + *.safetensors), or a
/// big_vision `.npz` tree, given as the file or as the directory holding it.
struct CheckpointLocation {
    /// The folder of the checkpoint's other files (tokenizer, config.json, vae-oid.npz).
    let directory: URL
    /// The big_vision tree, when the checkpoint is one.
    let bigVisionTree: URL?

    init(_ url: URL) throws {
        let fm = FileManager.default
        var isDirectory: ObjCBool = false
        guard fm.fileExists(atPath: url.path, isDirectory: &isDirectory) else {
            throw CheckpointError.missingFile(path: url.path,
                hint: "Pass the directory of a PaliGemma checkpoint (config.json + *.safetensors) or a big_vision .npz file.")
        }
        if !isDirectory.boolValue {
            guard url.pathExtension.lowercased() == "npz" else {
                throw CheckpointError.missingFile(path: url.path + " (a file)",
                    hint: "Pass the checkpoint's directory (config.json + *.safetensors), or a big_vision .npz file.")
            }
            directory = url.deletingLastPathComponent()
            bigVisionTree = url
            return
        }
        directory = url
        let names = (try? fm.contentsOfDirectory(atPath: url.path)) ?? []
        // A Hugging Face checkpoint wins; vae-oid.npz (the mask decoder) is never a model tree.
        let trees = names.filter { $0.lowercased().hasSuffix(".npz") && $0 != "vae-oid.npz" }.sorted()
        if names.contains(where: { $0.hasSuffix(".safetensors") }) || trees.isEmpty {
            bigVisionTree = nil
        } else if trees.count == 1 {
            bigVisionTree = url.appendingPathComponent(trees[0])
        } else {
            throw CheckpointError.invalidConfig(file: url.path,
                reason: "holds several big_vision trees (\(trees.joined(separator: ", "))); pass the .npz file to use")
        }
    }

    /// The configuration and the tensors, under Hugging Face's names whatever the layout.
    func open() throws -> (PaliGemmaConfig, SafeTensorsCheckpoint) {
        let configFile = directory.appendingPathComponent("config.json")
        guard let tree = bigVisionTree else {
            return (try PaliGemmaConfig.load(from: configFile), try SafeTensorsCheckpoint(directory: directory))
        }
        let given = FileManager.default.fileExists(atPath: configFile.path) ? try PaliGemmaConfig.load(from: configFile) : nil
        let loaded = try BigVisionTree(npz: tree, config: given)
        return (loaded.config, loaded.checkpoint)
    }

    /// Bytes of weights on disk.
    var weightFileBytes: Int {
        let fm = FileManager.default
        if let tree = bigVisionTree { return (try? fm.attributesOfItem(atPath: tree.path)[.size] as? Int) ?? 0 }
        let names = (try? fm.contentsOfDirectory(atPath: directory.path)) ?? []
        return names.filter { $0.hasSuffix(".safetensors") }.reduce(0) {
            $0 + ((try? fm.attributesOfItem(atPath: directory.appendingPathComponent($1).path)[.size] as? Int) ?? 0)
        }
    }
}
