import Foundation
import PaliGemma

/// The published PaliGemma 2 shapes, as data: 3B / 10B / 28B decoders × 224 / 448 / 896 px.
public struct ModelPreset: Sendable, Hashable, CustomStringConvertible {
    public var size: String        // "3b", "10b", "28b"
    public var resolution: Int     // 224, 448, 896

    public var description: String { "\(size)-\(resolution)" }

    public static let sizes = ["3b", "10b", "28b"]
    public static let resolutions = [224, 448, 896]
    public static var all: [ModelPreset] {
        sizes.flatMap { s in resolutions.map { ModelPreset(size: s, resolution: $0) } }
    }

    /// Parses "3b-224" (also "3B_224", "paligemma2-3b-pt-224").
    public init?(_ text: String) {
        let lower = text.lowercased().replacingOccurrences(of: "_", with: "-")
        guard let size = Self.sizes.first(where: { lower.contains($0 + "-") || lower.hasPrefix($0) }),
              let res = Self.resolutions.first(where: { lower.hasSuffix(String($0)) }) else { return nil }
        self.size = size
        resolution = res
    }

    public init(size: String, resolution: Int) {
        self.size = size
        self.resolution = resolution
    }

    /// The configuration of the hub checkpoint `google/paligemma2-<size>-pt-<resolution>`.
    public var config: PaliGemmaConfig {
        var vision = VisionConfig()
        vision.hiddenSize = 1152
        vision.intermediateSize = 4304
        vision.numHiddenLayers = 27
        vision.numAttentionHeads = 16
        vision.patchSize = 14
        vision.imageSize = resolution
        vision.visionUseHead = false
        var text = TextConfig()
        text.vocabSize = 257216
        // (hidden, layers, heads, kv heads, head_dim, MLP, query_pre_attn_scalar) from the reference note.
        let shape: (Int, Int, Int, Int, Int, Int, Float)
        switch size {
        case "10b": shape = (3584, 42, 16, 8, 256, 14336, 256)
        case "28b": shape = (4608, 46, 32, 16, 128, 36864, 144)
        default: shape = (2304, 26, 8, 4, 256, 9216, 256)
        }
        (text.hiddenSize, text.numHiddenLayers, text.numAttentionHeads, text.numKeyValueHeads,
         text.headDim, text.intermediateSize, text.queryPreAttnScalar) = shape
        text.slidingLayers = TextConfig.defaultSlidingLayers(text.numHiddenLayers)
        return PaliGemmaConfig(vision: vision, text: text, imageTokenIndex: 257152)
    }
}

extension ModelPreset {
    /// The published checkpoint family whose shapes `config` has, e.g. "PaliGemma 2 3B at 224 px"
    /// (pt, mix and ft checkpoints share them), or nil for any other shape.
    public static func published(matching config: PaliGemmaConfig) -> String? {
        let v = config.vision, t = config.text
        guard v.hiddenSize == 1152, v.numHiddenLayers == 27, v.intermediateSize == 4304, v.patchSize == 14,
              resolutions.contains(v.imageSize),
              // 257216 in Hugging Face's checkpoints; 257152 in big_vision's trees (no `<image>` row, no padding).
              t.vocabSize == 257216 || t.vocabSize == 257152 else { return nil }
        if t.postNorms {
            for size in sizes {
                let p = ModelPreset(size: size, resolution: v.imageSize).config.text
                if (t.hiddenSize, t.numHiddenLayers, t.numAttentionHeads, t.numKeyValueHeads, t.headDim, t.intermediateSize)
                    == (p.hiddenSize, p.numHiddenLayers, p.numAttentionHeads, p.numKeyValueHeads, p.headDim, p.intermediateSize) {
                    return "PaliGemma 2 \(size.uppercased()) at \(v.imageSize) px"
                }
            }
            return nil
        }
        // PaliGemma 1 was published in one size: Gemma 2B's decoder.
        guard (t.hiddenSize, t.numHiddenLayers, t.numAttentionHeads, t.numKeyValueHeads, t.headDim, t.intermediateSize)
            == (2048, 18, 8, 1, 256, 16384) else { return nil }
        return "PaliGemma 1 3B at \(v.imageSize) px"
    }
}

/// Every tensor a checkpoint of `config` holds, with its shape on disk (hub names, no lm_head).
public func checkpointTensorShapes(_ config: PaliGemmaConfig) -> [(name: String, shape: [Int])] {
    var out: [(String, [Int])] = []
    let v = config.vision, t = config.text
    let vp = "vision_tower.vision_model."
    out.append((vp + "embeddings.patch_embedding.weight", [v.hiddenSize, v.numChannels, v.patchSize, v.patchSize]))
    out.append((vp + "embeddings.patch_embedding.bias", [v.hiddenSize]))
    out.append((vp + "embeddings.position_embedding.weight", [v.numPatches, v.hiddenSize]))
    for l in 0..<v.numHiddenLayers {
        let b = vp + "encoder.layers.\(l)."
        for n in ["layer_norm1", "layer_norm2"] {
            out.append((b + n + ".weight", [v.hiddenSize]))
            out.append((b + n + ".bias", [v.hiddenSize]))
        }
        for n in ["q_proj", "k_proj", "v_proj", "out_proj"] {
            out.append((b + "self_attn.\(n).weight", [v.hiddenSize, v.hiddenSize]))
            out.append((b + "self_attn.\(n).bias", [v.hiddenSize]))
        }
        out.append((b + "mlp.fc1.weight", [v.intermediateSize, v.hiddenSize]))
        out.append((b + "mlp.fc1.bias", [v.intermediateSize]))
        out.append((b + "mlp.fc2.weight", [v.hiddenSize, v.intermediateSize]))
        out.append((b + "mlp.fc2.bias", [v.hiddenSize]))
    }
    out.append((vp + "post_layernorm.weight", [v.hiddenSize]))
    out.append((vp + "post_layernorm.bias", [v.hiddenSize]))
    out.append(("multi_modal_projector.linear.weight", [t.hiddenSize, v.hiddenSize]))
    out.append(("multi_modal_projector.linear.bias", [t.hiddenSize]))
    let tp = "language_model.model."
    out.append((tp + "embed_tokens.weight", [t.vocabSize, t.hiddenSize]))
    let qd = t.numAttentionHeads * t.headDim, kvd = t.numKeyValueHeads * t.headDim
    for l in 0..<t.numHiddenLayers {
        let b = tp + "layers.\(l)."
        for n in ["input_layernorm", "post_attention_layernorm", "pre_feedforward_layernorm", "post_feedforward_layernorm"] {
            out.append((b + n + ".weight", [t.hiddenSize]))
        }
        out.append((b + "self_attn.q_proj.weight", [qd, t.hiddenSize]))
        out.append((b + "self_attn.k_proj.weight", [kvd, t.hiddenSize]))
        out.append((b + "self_attn.v_proj.weight", [kvd, t.hiddenSize]))
        out.append((b + "self_attn.o_proj.weight", [t.hiddenSize, qd]))
        out.append((b + "mlp.gate_proj.weight", [t.intermediateSize, t.hiddenSize]))
        out.append((b + "mlp.up_proj.weight", [t.intermediateSize, t.hiddenSize]))
        out.append((b + "mlp.down_proj.weight", [t.hiddenSize, t.intermediateSize]))
    }
    out.append((tp + "norm.weight", [t.hiddenSize]))
    return out
}
