import Kernels

/// One Gemma decoder layer's weights (`layers.{i}`). Gemma 2 has four norms; Gemma 1 has the two
/// before attention and the MLP, and names the second `post_attention_layernorm`.
struct Gemma2Layer {
    var inputNorm: [Float]            // input_layernorm.weight  [H]
    var postAttentionNorm: [Float]?   // Gemma 2: post_attention_layernorm.weight  [H]
    var preFeedforwardNorm: [Float]   // Gemma 2: pre_feedforward_layernorm.weight; Gemma 1: post_attention_layernorm.weight  [H]
    var postFeedforwardNorm: [Float]? // Gemma 2: post_feedforward_layernorm.weight  [H]
    var q: WeightMatrix               // self_attn.q_proj.weight  [heads·hd, H]
    var k: WeightMatrix               // self_attn.k_proj.weight  [kv·hd, H]
    var v: WeightMatrix               // self_attn.v_proj.weight  [kv·hd, H]
    var o: WeightMatrix               // self_attn.o_proj.weight  [H, heads·hd]
    var gate: WeightMatrix            // mlp.gate_proj.weight  [I, H]
    var up: WeightMatrix              // mlp.up_proj.weight  [I, H]
    var down: WeightMatrix            // mlp.down_proj.weight  [H, I]
    var sliding: Bool                 // layer_types[i] == "sliding_attention"
}

/// Activations and the KV cache of one decoding sequence, allocated once for `capacity` tokens.
final class Gemma2State {
    let capacity: Int
    /// Tokens already in the cache.
    var length = 0
    /// Leading tokens that attend bidirectionally (image + prompt prefix).
    var prefixLength = 0
    /// Per layer [kv·capacity, hd], head-major: KV head h's token t is row h·capacity + t.
    var keys: [Matrix]
    var values: [Matrix]
    // Scratch, each with `capacity` rows; the active row count follows the chunk being processed.
    let x, normed, attnOut, sublayerOut: Matrix   // [·, H]
    let q, attended: Matrix                       // [·, heads·hd]
    let k, v: Matrix                              // [·, kv·hd]
    let gate, up: Matrix                          // [·, I]
    let lastLogits: Matrix                        // [1, vocab]
    /// LoRA's scratch when the decoder has an adapter: `x·Aᵀ` [·, rank] and each target's `(x·Aᵀ)·Bᵀ`.
    let loraLow: Matrix?
    let loraOut: [LoRATarget: Matrix]

    init(config: TextConfig, capacity: Int, loraRank: Int? = nil) {
        self.capacity = capacity
        let h = config.hiddenSize, qd = config.numAttentionHeads * config.headDim
        let kvd = config.numKeyValueHeads * config.headDim
        let cacheRows = config.numKeyValueHeads * capacity
        keys = (0..<config.numHiddenLayers).map { _ in Matrix(rows: cacheRows, columns: config.headDim) }
        values = (0..<config.numHiddenLayers).map { _ in Matrix(rows: cacheRows, columns: config.headDim) }
        x = Matrix(rows: 0, columns: h, rowCapacity: capacity)
        normed = Matrix(rows: 0, columns: h, rowCapacity: capacity)
        attnOut = Matrix(rows: 0, columns: h, rowCapacity: capacity)
        sublayerOut = Matrix(rows: 0, columns: h, rowCapacity: capacity)
        q = Matrix(rows: 0, columns: qd, rowCapacity: capacity)
        attended = Matrix(rows: 0, columns: qd, rowCapacity: capacity)
        k = Matrix(rows: 0, columns: kvd, rowCapacity: capacity)
        v = Matrix(rows: 0, columns: kvd, rowCapacity: capacity)
        gate = Matrix(rows: 0, columns: config.intermediateSize, rowCapacity: capacity)
        up = Matrix(rows: 0, columns: config.intermediateSize, rowCapacity: capacity)
        lastLogits = Matrix(rows: 1, columns: config.vocabSize)
        loraLow = loraRank.map { Matrix(rows: 0, columns: $0, rowCapacity: capacity) }
        loraOut = loraRank == nil ? [:] : Dictionary(uniqueKeysWithValues: LoRATarget.allCases.map {
            ($0, Matrix(rows: 0, columns: config.shape(of: $0).out, rowCapacity: capacity))
        })
    }

    /// Copies of the cache's first `count` tokens, per layer [kv·count, hd] (head-major).
    func cachedPrefix(_ count: Int) -> (keys: [Matrix], values: [Matrix]) {
        func copy(_ m: Matrix) -> Matrix {
            let heads = m.rows / capacity, c = Matrix(rows: heads * count, columns: m.columns)
            for h in 0..<heads { c.copyRows(from: m, sourceRow: h * capacity, count: count, to: h * count) }
            return c
        }
        return (keys.map(copy), values.map(copy))
    }

    /// Puts a prefix that `cachedPrefix(count)` copied back as the cache's first `count` tokens.
    func restorePrefix(keys prefixKeys: [Matrix], values prefixValues: [Matrix], count: Int) {
        for (cache, prefix) in zip(keys + values, prefixKeys + prefixValues) {
            for h in 0..<(cache.rows / capacity) {
                cache.copyRows(from: prefix, sourceRow: h * count, count: count, to: h * capacity)
            }
        }
        length = count
    }
}

/// The Gemma 2 decoder: scaled token embeddings, layers with four RMSNorms each, GeGLU MLP,
/// grouped-query attention with softcapped scores and alternating sliding windows, a final
/// norm and the tied output projection with an optional final softcap. With a Gemma 1 config
/// (PaliGemma 1) the same code runs without the post norms, softcaps and windows.
struct Gemma2Decoder {
    let config: TextConfig
    var embedTokens: WeightMatrix     // embed_tokens.weight  [V, H]
    var layers: [Gemma2Layer]
    var finalNorm: [Float]            // norm.weight  [H]
    var lmHead: WeightMatrix          // lm_head.weight [V, H], tied to embed_tokens when absent
    /// `sqrt(hidden)` rounded to the embedding weights' dtype, as transformers'
    /// `embed_scale.to(weight.dtype)` does (48 for 2304, 59.75 for 3584 and 68 for 4608 in bf16).
    let embedScale: Float
    /// Whether lm_head is embed_tokens (tie_word_embeddings), so trained token rows serve both.
    let lmHeadTied: Bool
    /// LoRA applied unmerged at inference (`--adapter`): `y = x·Wᵀ + s·(x·Aᵀ)·Bᵀ`, as PEFT computes it.
    var adapter: LoRAAdapter?

    /// - Parameter sourceFormat: for quantized embeddings, the dtype they were quantized from.
    init(config: TextConfig, reader: CheckpointReader, sourceFormat: WeightFormat? = nil) throws {
        self.config = config
        let p = try reader.prefix(among: ["language_model.model.", "model.language_model.", "language_model."],
                                  probe: "embed_tokens.weight")
        let h = config.hiddenSize, hd = config.headDim, i = config.intermediateSize
        let qd = config.numAttentionHeads * hd, kvd = config.numKeyValueHeads * hd
        embedTokens = try reader.matrix(p + "embed_tokens.weight", shape: [config.vocabSize, h])
        layers = try (0..<config.numHiddenLayers).map { l in
            let b = p + "layers.\(l)."
            let post = config.postNorms
            return Gemma2Layer(
                inputNorm: try reader.vector(b + "input_layernorm.weight", count: h),
                postAttentionNorm: post ? try reader.vector(b + "post_attention_layernorm.weight", count: h) : nil,
                preFeedforwardNorm: try reader.vector(b + (post ? "pre_feedforward_layernorm.weight" : "post_attention_layernorm.weight"), count: h),
                postFeedforwardNorm: post ? try reader.vector(b + "post_feedforward_layernorm.weight", count: h) : nil,
                q: try reader.matrix(b + "self_attn.q_proj.weight", shape: [qd, h]),
                k: try reader.matrix(b + "self_attn.k_proj.weight", shape: [kvd, h]),
                v: try reader.matrix(b + "self_attn.v_proj.weight", shape: [kvd, h]),
                o: try reader.matrix(b + "self_attn.o_proj.weight", shape: [h, qd]),
                gate: try reader.matrix(b + "mlp.gate_proj.weight", shape: [i, h]),
                up: try reader.matrix(b + "mlp.up_proj.weight", shape: [i, h]),
                down: try reader.matrix(b + "mlp.down_proj.weight", shape: [h, i]),
                sliding: config.slidingLayers[l])
        }
        finalNorm = try reader.vector(p + "norm.weight", count: h)
        let headName = ["language_model.lm_head.weight", "lm_head.weight"].first(where: reader.has)
        lmHead = try headName.map { try reader.matrix($0, shape: [config.vocabSize, h]) } ?? embedTokens
        lmHeadTied = headName == nil
        let scale = Float(Double(h).squareRoot())
        switch embedTokens.format.isQuantized ? (sourceFormat ?? .bf16) : embedTokens.format {
        case .bf16: embedScale = scale.roundedToBFloat16
        case .f16: embedScale = scale.roundedToFloat16
        default: embedScale = scale
        }
    }

    /// Runs the layers over `state.x` (the embeddings of the next `state.x.rows` tokens), appending
    /// their keys and values to the cache. Leaves the final hidden states (pre-norm) in `state.x`:
    /// of every token, or with `lastRowOnly` of the last one alone (then `state.x` has one row).
    /// Generation needs no more: the final layer's other rows feed only their own logits, so it
    /// computes keys and values for all rows and the rest of the layer for the last, each row's
    /// products being independent of the others. `betweenLayers` runs after each layer but the
    /// last (other sequences' decode steps, while this prefill is under way; it must not touch
    /// `state`).
    func forward(_ state: Gemma2State, backend: ComputeBackend, lastRowOnly: Bool = false,
                 betweenLayers: () -> Void = {}) {
        let rows = state.x.rows
        let start = state.length
        precondition(start + rows <= state.capacity, "sequence exceeds the state's capacity")
        let c = config
        for (l, layer) in layers.enumerated() {
            // h = x + post_attention_layernorm(attn(input_layernorm(x)))  (Gemma 1: x + attn(input_layernorm(x)))
            backend.rmsNorm(state.x, weight: layer.inputNorm, weightOffset: 1, eps: c.rmsNormEps, into: state.normed)
            project(state.normed, l, .k, layer.k, into: state.k, state, backend)
            project(state.normed, l, .v, layer.v, into: state.v, state, backend)
            appendKeysValues(state, layer: l, start: start, rows: rows, backend: backend)
            var queryStart = start
            if lastRowOnly && l + 1 == layers.count && rows > 1 {
                state.normed.copyRows(from: state.normed, sourceRow: rows - 1, count: 1, to: 0)
                state.normed.setRows(1)
                state.x.copyRows(from: state.x, sourceRow: rows - 1, count: 1, to: 0)
                state.x.setRows(1)
                queryStart = start + rows - 1
            }
            project(state.normed, l, .q, layer.q, into: state.q, state, backend)
            attend(state, layer: l, queryStart: queryStart, keyCount: start + rows, backend: backend)
            project(state.attended, l, .o, layer.o, into: state.attnOut, state, backend)
            addSublayer(state.attnOut, norm: layer.postAttentionNorm, scratch: state.sublayerOut, into: state.x, backend)
            // out = h + post_feedforward_layernorm(down(gelu_tanh(gate(n)) · up(n))), n = pre_feedforward_layernorm(h)
            // (Gemma 1: no post_feedforward_layernorm)
            backend.rmsNorm(state.x, weight: layer.preFeedforwardNorm, weightOffset: 1, eps: c.rmsNormEps, into: state.normed)
            project(state.normed, l, .gate, layer.gate, into: state.gate, state, backend)
            project(state.normed, l, .up, layer.up, into: state.up, state, backend)
            backend.geluTanh(state.gate, times: state.up, into: state.gate)
            project(state.gate, l, .down, layer.down, into: state.attnOut, state, backend)
            addSublayer(state.attnOut, norm: layer.postFeedforwardNorm, scratch: state.sublayerOut, into: state.x, backend)
            if l + 1 < layers.count { betweenLayers() }
        }
        state.length = start + rows
    }

    /// Layer `l`'s keys and values of the `rows` new tokens in `state.k/v` (positions `start`…):
    /// RoPE, then appended to the cache.
    func appendKeysValues(_ state: Gemma2State, layer l: Int, start: Int, rows: Int, backend: ComputeBackend) {
        // transformers' PaliGemma positions are 1-based: position = index + 1.
        let hd = config.headDim
        backend.rope(state.k, headDim: hd, firstPosition: start + 1, theta: config.ropeTheta)
        for h in 0..<config.numKeyValueHeads {
            state.keys[l].copyRows(from: state.k, columnsFrom: h * hd, count: rows, to: h * state.capacity + start)
            state.values[l].copyRows(from: state.v, columnsFrom: h * hd, count: rows, to: h * state.capacity + start)
        }
    }

    /// Layer `l`'s attention of the queries in `state.q` (positions `queryStart`…) over the first
    /// `keyCount` cached keys, into `state.attended`.
    func attend(_ state: Gemma2State, layer l: Int, queryStart: Int, keyCount: Int, backend: ComputeBackend) {
        let c = config
        backend.rope(state.q, headDim: c.headDim, firstPosition: queryStart + 1, theta: c.ropeTheta)
        let shape = AttentionShape(heads: c.numAttentionHeads, kvHeads: c.numKeyValueHeads, headDim: c.headDim,
                                   scale: 1 / c.queryPreAttnScalar.squareRoot(), softcap: c.attnLogitSoftcapping,
                                   queryStart: queryStart, keyCount: keyCount, headRows: state.capacity)
        let mask = AttentionMask.prefixLM(prefixLength: state.prefixLength, window: layers[l].sliding ? c.slidingWindow : nil)
        backend.attention(queries: state.q, keys: state.keys[l], values: state.values[l], shape: shape,
                          mask: mask, into: state.attended)
    }

    /// `x += norm(out)` (Gemma 2's post-norms), or `x += out` without one (Gemma 1).
    func addSublayer(_ out: Matrix, norm: [Float]?, scratch: Matrix, into x: Matrix, _ backend: ComputeBackend) {
        if let norm {
            backend.rmsNorm(out, weight: norm, weightOffset: 1, eps: config.rmsNormEps, into: scratch)
            backend.add(scratch, into: x)
        } else {
            backend.add(out, into: x)
        }
    }

    /// `out = x·Wᵀ`, plus the adapter's low-rank term for this layer and target when there is one.
    private func project(_ x: Matrix, _ l: Int, _ target: LoRATarget, _ w: WeightMatrix, into out: Matrix,
                         _ state: Gemma2State, _ backend: ComputeBackend) {
        backend.linear(x, w, bias: nil, into: out)
        guard let adapter, let pair = adapter.pairs[l][target], let low = state.loraLow, let high = state.loraOut[target] else { return }
        let products = Gradients(backend: backend)
        products.product(x, pair.a, into: low)
        products.product(low, pair.b, into: high)
        out.add(high, scale: adapter.config.scale)
    }

    /// Logits for the given hidden-state rows: final norm → lm_head → optional softcap.
    func logits(hidden: Matrix, into out: Matrix, scratch: Matrix, backend: ComputeBackend) {
        backend.rmsNorm(hidden, weight: finalNorm, weightOffset: 1, eps: config.rmsNormEps, into: scratch)
        backend.linear(scratch, lmHead, bias: nil, into: out)
        patchTokenLogits(normed: scratch, logits: out)
        if let cap = config.finalLogitSoftcapping { backend.softcap(out, cap: cap) }
    }

    /// Rows `0..<ids.count` of `x` hold `ids`' embeddings: those of tokens the adapter trains take
    /// its rows (scaled like any text row), as PEFT's trainable tokens replace them.
    func replaceTokenRows(_ ids: [Int], in x: Matrix) {
        guard let tokens = adapter?.tokens else { return }
        for (r, id) in ids.enumerated() {
            guard let j = tokens.index[id] else { continue }
            let src = tokens.rows.rowPointer(j), dst = x.rowPointer(r)
            for c in 0..<x.columns { dst[c] = src[c] * embedScale }
        }
    }

    /// With tied embeddings, the logits of trained tokens use the trained rows: `normed · row`.
    func patchTokenLogits(normed: Matrix, logits: Matrix) {
        guard lmHeadTied, let tokens = adapter?.tokens else { return }
        for r in 0..<normed.rows {
            let h = normed.rowPointer(r), out = logits.rowPointer(r)
            for (j, id) in tokens.ids.enumerated() {
                let w = tokens.rows.rowPointer(j)
                var dot: Float = 0
                for c in 0..<normed.columns { dot += h[c] * w[c] }
                out[id] = dot
            }
        }
    }
}
