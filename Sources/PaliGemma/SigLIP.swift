import Kernels

/// One pre-LN SigLIP encoder block's weights (`encoder.layers.{i}`).
struct SigLIPLayer {
    var layerNorm1Weight, layerNorm1Bias: [Float]   // layer_norm1.{weight,bias}  [D]
    var q, k, v, out: WeightMatrix                  // self_attn.{q,k,v,out}_proj.weight  [D, D]
    var qBias, kBias, vBias, outBias: [Float]       // self_attn.*_proj.bias  [D]
    var layerNorm2Weight, layerNorm2Bias: [Float]   // layer_norm2.{weight,bias}  [D]
    var fc1: WeightMatrix, fc1Bias: [Float]         // mlp.fc1  [I, D], [I]
    var fc2: WeightMatrix, fc2Bias: [Float]         // mlp.fc2  [D, I], [D]
}

/// The SigLIP vision tower: patch embedding (a stride-P convolution as a matrix product),
/// learned positions, pre-LN transformer blocks, post LayerNorm. No pooling head.
struct SigLIPVisionTower {
    let config: VisionConfig
    var patchEmbedding: WeightMatrix      // embeddings.patch_embedding.weight  [D, C, P, P] → [D, C·P·P]
    var patchBias: [Float]                // embeddings.patch_embedding.bias  [D]
    var positionEmbedding: WeightMatrix   // embeddings.position_embedding.weight  [N, D]
    var layers: [SigLIPLayer]
    var postLayerNormWeight, postLayerNormBias: [Float]  // post_layernorm.{weight,bias}

    init(config: VisionConfig, reader: CheckpointReader) throws {
        self.config = config
        let p = try reader.prefix(among: ["vision_tower.vision_model.", "vision_tower.",
                                          "model.vision_tower.vision_model.", "model.vision_tower."],
                                  probe: "embeddings.patch_embedding.weight")
        let d = config.hiddenSize, i = config.intermediateSize
        patchEmbedding = try reader.matrix(p + "embeddings.patch_embedding.weight",
                                           shape: [d, config.numChannels, config.patchSize, config.patchSize])
        patchBias = try reader.vector(p + "embeddings.patch_embedding.bias", count: d)
        positionEmbedding = try reader.matrix(p + "embeddings.position_embedding.weight", shape: [config.numPatches, d])
        layers = try (0..<config.numHiddenLayers).map { l in
            let b = p + "encoder.layers.\(l)."
            return SigLIPLayer(
                layerNorm1Weight: try reader.vector(b + "layer_norm1.weight", count: d),
                layerNorm1Bias: try reader.vector(b + "layer_norm1.bias", count: d),
                q: try reader.matrix(b + "self_attn.q_proj.weight", shape: [d, d]),
                k: try reader.matrix(b + "self_attn.k_proj.weight", shape: [d, d]),
                v: try reader.matrix(b + "self_attn.v_proj.weight", shape: [d, d]),
                out: try reader.matrix(b + "self_attn.out_proj.weight", shape: [d, d]),
                qBias: try reader.vector(b + "self_attn.q_proj.bias", count: d),
                kBias: try reader.vector(b + "self_attn.k_proj.bias", count: d),
                vBias: try reader.vector(b + "self_attn.v_proj.bias", count: d),
                outBias: try reader.vector(b + "self_attn.out_proj.bias", count: d),
                layerNorm2Weight: try reader.vector(b + "layer_norm2.weight", count: d),
                layerNorm2Bias: try reader.vector(b + "layer_norm2.bias", count: d),
                fc1: try reader.matrix(b + "mlp.fc1.weight", shape: [i, d]),
                fc1Bias: try reader.vector(b + "mlp.fc1.bias", count: i),
                fc2: try reader.matrix(b + "mlp.fc2.weight", shape: [d, i]),
                fc2Bias: try reader.vector(b + "mlp.fc2.bias", count: d))
        }
        postLayerNormWeight = try reader.vector(p + "post_layernorm.weight", count: d)
        postLayerNormBias = try reader.vector(p + "post_layernorm.bias", count: d)
    }

    /// Encodes one preprocessed image (CHW floats, `imageSize`² per channel) into one row per
    /// patch: [numPatches, hiddenSize].
    /// With an adapter that adapts the tower, its LoRA pairs apply (`adapter.visionPairs`).
    /// `betweenLayers` runs after each layer but the last (see `Gemma2Decoder.forward`).
    func encode(pixels: [Float], backend: ComputeBackend, adapter: LoRAAdapter? = nil,
                betweenLayers: () -> Void = {}) -> Matrix {
        let lora = adapter.flatMap { $0.adaptsVision ? $0 : nil }
        func project(_ x: Matrix, _ l: Int, _ t: VisionTarget, _ w: WeightMatrix, _ bias: [Float], into y: Matrix) {
            if let lora {
                LoRALinear(backend: backend, scale: lora.config.scale)
                    .forward(x, w, bias: bias, pair: lora.visionPairs[l][t], dropout: nil, stream: 0, into: y)
            } else {
                backend.linear(x, w, bias: bias, into: y)
            }
        }
        let n = config.numPatches, d = config.hiddenSize, i = config.intermediateSize
        let patches = Matrix.patches(chw: pixels, channels: config.numChannels, height: config.imageSize,
                                     width: config.imageSize, patch: config.patchSize)
        // Activations for the whole tower, allocated once per image.
        let x = Matrix(rows: n, columns: d)        // residual stream
        let normed = Matrix(rows: n, columns: d)
        let q = Matrix(rows: n, columns: d), k = Matrix(rows: n, columns: d), v = Matrix(rows: n, columns: d)
        let attended = Matrix(rows: n, columns: d)
        let projected = Matrix(rows: n, columns: d)
        let hidden = Matrix(rows: n, columns: i)

        // embeddings = conv(pixels) + position_embedding(arange(N))
        backend.linear(patches, patchEmbedding, bias: patchBias, into: x)
        for r in 0..<n { normed.setRow(r, positionEmbedding.row(r)) }
        backend.add(normed, into: x)

        let heads = config.numAttentionHeads, headDim = config.headDim
        let shape = AttentionShape(heads: heads, kvHeads: heads, headDim: headDim,
                                   scale: 1 / Float(headDim).squareRoot(), softcap: nil,
                                   queryStart: 0, keyCount: n)
        for (l, layer) in layers.enumerated() {
            // x += out_proj(attention(LN1(x)))
            backend.layerNorm(x, gamma: layer.layerNorm1Weight, beta: layer.layerNorm1Bias, eps: config.layerNormEps, into: normed)
            project(normed, l, .q, layer.q, layer.qBias, into: q)
            project(normed, l, .k, layer.k, layer.kBias, into: k)
            project(normed, l, .v, layer.v, layer.vBias, into: v)
            backend.attention(queries: q, keys: k, values: v, shape: shape, mask: .bidirectional, into: attended)
            project(attended, l, .out, layer.out, layer.outBias, into: projected)
            backend.add(projected, into: x)
            // x += fc2(gelu_tanh(fc1(LN2(x))))
            backend.layerNorm(x, gamma: layer.layerNorm2Weight, beta: layer.layerNorm2Bias, eps: config.layerNormEps, into: normed)
            project(normed, l, .fc1, layer.fc1, layer.fc1Bias, into: hidden)
            backend.geluTanh(hidden, times: nil, into: hidden)
            project(hidden, l, .fc2, layer.fc2, layer.fc2Bias, into: projected)
            backend.add(projected, into: x)
            if l + 1 < layers.count { betweenLayers() }
        }
        backend.layerNorm(x, gamma: postLayerNormWeight, beta: postLayerNormBias, eps: config.layerNormEps, into: normed)
        return normed
    }
}
