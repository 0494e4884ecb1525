import Foundation

/// A problem with a checkpoint directory: its configuration, tensors or layout.
public enum CheckpointError: Error, CustomStringConvertible, Sendable {
    case missingFile(path: String, hint: String)
    case invalidConfig(file: String, reason: String)
    case unsupportedModel(file: String, reason: String)
    case missingTensor(name: String, files: [String])
    case unexpectedTensor(name: String, file: String)
    case wrongShape(name: String, file: String, expected: [Int], found: [Int])
    case unsupportedDType(name: String, file: String, dtype: String)
    /// A quantized matrix (one with a `_scales` tensor) whose data or scales have another dtype.
    case unsupportedQuantizedDType(name: String, file: String, dtype: String)
    /// A big_vision `.npz` tree that lacks an array or has one of the wrong shape.
    case badTree(file: String, reason: String)

    public var description: String {
        switch self {
        case let .missingFile(path, hint):
            return "\(path) does not exist. \(hint)"
        case let .invalidConfig(file, reason):
            return "\(file): invalid configuration: \(reason)"
        case let .unsupportedModel(file, reason):
            return "\(file): unsupported model: \(reason)"
        case let .missingTensor(name, files):
            return "tensor '\(name)' is missing from the checkpoint (\(files.joined(separator: ", "))). The checkpoint is incomplete or is not PaliGemma 2."
        case let .unexpectedTensor(name, file):
            return "\(file): unexpected tensor '\(name)': this checkpoint does not match its config.json"
        case let .wrongShape(name, file, expected, found):
            return "\(file): tensor '\(name)' has shape \(found) but config.json implies \(expected)"
        case let .unsupportedDType(name, file, dtype):
            return "\(file): tensor '\(name)' has dtype \(dtype); supported are F32, BF16 and F16"
        case let .unsupportedQuantizedDType(name, file, dtype):
            return "\(file): quantized tensor '\(name)' has dtype \(dtype); a quantized matrix holds I8 (q8) or U8 (q4) data and "
                + "F16 scales (docs/quantization.md); rewrite it with `paligemma quantize`"
        case let .badTree(file, reason):
            return "\(file): \(reason) (docs/checkpoints.md)"
        }
    }
}

/// SigLIP vision tower settings (`vision_config` in config.json). Absent fields take the
/// defaults transformers' `SiglipVisionConfig` applies.
public struct VisionConfig: Codable, Sendable, Equatable {
    public var hiddenSize = 768               // hidden_size
    public var intermediateSize = 3072        // intermediate_size
    public var numHiddenLayers = 12           // num_hidden_layers
    public var numAttentionHeads = 12         // num_attention_heads
    public var numChannels = 3                // num_channels
    public var imageSize = 224                // image_size
    public var patchSize = 16                 // patch_size
    public var layerNormEps: Float = 1e-6     // layer_norm_eps
    public var hiddenAct = "gelu_pytorch_tanh" // hidden_act
    public var visionUseHead = true           // vision_use_head

    enum CodingKeys: String, CodingKey {
        case hiddenSize = "hidden_size", intermediateSize = "intermediate_size"
        case numHiddenLayers = "num_hidden_layers", numAttentionHeads = "num_attention_heads"
        case numChannels = "num_channels", imageSize = "image_size", patchSize = "patch_size"
        case layerNormEps = "layer_norm_eps", hiddenAct = "hidden_act", visionUseHead = "vision_use_head"
    }

    public init() {}

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        let d = VisionConfig()
        hiddenSize = try c.decodeIfPresent(Int.self, forKey: .hiddenSize) ?? d.hiddenSize
        intermediateSize = try c.decodeIfPresent(Int.self, forKey: .intermediateSize) ?? d.intermediateSize
        numHiddenLayers = try c.decodeIfPresent(Int.self, forKey: .numHiddenLayers) ?? d.numHiddenLayers
        numAttentionHeads = try c.decodeIfPresent(Int.self, forKey: .numAttentionHeads) ?? d.numAttentionHeads
        numChannels = try c.decodeIfPresent(Int.self, forKey: .numChannels) ?? d.numChannels
        imageSize = try c.decodeIfPresent(Int.self, forKey: .imageSize) ?? d.imageSize
        patchSize = try c.decodeIfPresent(Int.self, forKey: .patchSize) ?? d.patchSize
        layerNormEps = try c.decodeIfPresent(Float.self, forKey: .layerNormEps) ?? d.layerNormEps
        hiddenAct = try c.decodeIfPresent(String.self, forKey: .hiddenAct) ?? d.hiddenAct
        visionUseHead = try c.decodeIfPresent(Bool.self, forKey: .visionUseHead) ?? d.visionUseHead
    }

    /// Patches per side and in total (the number of image tokens).
    public var patchesPerSide: Int { imageSize / patchSize }
    public var numPatches: Int { patchesPerSide * patchesPerSide }
    public var headDim: Int { hiddenSize / numAttentionHeads }
}

/// Decoder settings (`text_config`): Gemma 2 (PaliGemma 2, `model_type` "gemma2") or Gemma 1
/// (PaliGemma 1, "gemma"). Absent fields take `Gemma2Config`'s or `GemmaConfig`'s defaults; an
/// explicit `null` for a softcap or the sliding window turns it off. Gemma 1 has neither, and
/// scales attention scores by `head_dim^-0.5`.
public struct TextConfig: Codable, Sendable, Equatable {
    public var vocabSize = 256000                  // vocab_size
    public var hiddenSize = 2304                   // hidden_size
    public var intermediateSize = 9216             // intermediate_size
    public var numHiddenLayers = 26                // num_hidden_layers
    public var numAttentionHeads = 8               // num_attention_heads
    public var numKeyValueHeads = 4                // num_key_value_heads
    public var headDim = 256                       // head_dim
    public var hiddenActivation = "gelu_pytorch_tanh" // hidden_activation
    public var rmsNormEps: Float = 1e-6            // rms_norm_eps
    public var ropeTheta: Float = 10000            // rope_parameters.rope_theta (or rope_theta)
    /// The context: prompt (image tokens included) plus generated tokens.
    public var maxPositionEmbeddings = 8192        // max_position_embeddings
    public var queryPreAttnScalar: Float = 256     // query_pre_attn_scalar
    public var slidingWindow: Int? = 4096          // sliding_window
    public var finalLogitSoftcapping: Float? = 30  // final_logit_softcapping
    public var attnLogitSoftcapping: Float? = 50   // attn_logit_softcapping
    public var attentionBias = false               // attention_bias
    /// Per layer: true where the layer uses the sliding window (`layer_types`; default: even layers).
    public var slidingLayers: [Bool] = []
    public var padTokenID = 0                      // pad_token_id
    public var bosTokenID = 2                      // bos_token_id
    public var eosTokenIDs: [Int] = [1]            // eos_token_id (int or list)
    public var modelType = "gemma2"                // model_type
    /// Gemma 2's extra norms after attention and after the MLP ("sandwich" norms); Gemma 1 has
    /// only the two before them.
    public var postNorms: Bool { modelType == "gemma2" }

    enum CodingKeys: String, CodingKey {
        case vocabSize = "vocab_size", hiddenSize = "hidden_size", intermediateSize = "intermediate_size"
        case numHiddenLayers = "num_hidden_layers", numAttentionHeads = "num_attention_heads"
        case numKeyValueHeads = "num_key_value_heads", headDim = "head_dim"
        case hiddenActivation = "hidden_activation", hiddenAct = "hidden_act", rmsNormEps = "rms_norm_eps"
        case ropeTheta = "rope_theta", ropeParameters = "rope_parameters", maxPositionEmbeddings = "max_position_embeddings"
        case queryPreAttnScalar = "query_pre_attn_scalar", slidingWindow = "sliding_window"
        case finalLogitSoftcapping = "final_logit_softcapping", attnLogitSoftcapping = "attn_logit_softcapping"
        case attentionBias = "attention_bias", layerTypes = "layer_types"
        case padTokenID = "pad_token_id", bosTokenID = "bos_token_id", eosTokenID = "eos_token_id"
        case modelType = "model_type"
    }

    struct RopeParameters: Codable { var rope_theta: Float?; var rope_type: String? }

    public init() {
        slidingLayers = Self.defaultSlidingLayers(numHiddenLayers)
    }

    /// Gemma 2's alternation for `n` layers (sliding window on the even-indexed ones), used when
    /// config.json gives no `layer_types`.
    public static func defaultSlidingLayers(_ n: Int) -> [Bool] {
        // Gemma2Config: "sliding_attention" if (i + 1) % 2 else "full_attention".
        (0..<max(0, n)).map { ($0 + 1) % 2 == 1 }
    }

    /// `GemmaConfig`'s defaults (PaliGemma 1's decoder).
    static var gemma1Defaults: TextConfig {
        var d = TextConfig()
        d.modelType = "gemma"
        (d.hiddenSize, d.intermediateSize, d.numHiddenLayers) = (3072, 24576, 28)
        (d.numAttentionHeads, d.numKeyValueHeads, d.headDim) = (16, 16, 256)
        d.slidingWindow = nil
        d.finalLogitSoftcapping = nil
        d.attnLogitSoftcapping = nil
        return d
    }

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        // A text_config without model_type falls back to transformers' sub-config default, "gemma".
        modelType = try c.decodeIfPresent(String.self, forKey: .modelType) ?? "gemma"
        let gemma1 = modelType == "gemma"
        let d = gemma1 ? TextConfig.gemma1Defaults : TextConfig()
        vocabSize = try c.decodeIfPresent(Int.self, forKey: .vocabSize) ?? d.vocabSize
        hiddenSize = try c.decodeIfPresent(Int.self, forKey: .hiddenSize) ?? d.hiddenSize
        intermediateSize = try c.decodeIfPresent(Int.self, forKey: .intermediateSize) ?? d.intermediateSize
        numHiddenLayers = try c.decodeIfPresent(Int.self, forKey: .numHiddenLayers) ?? d.numHiddenLayers
        numAttentionHeads = try c.decodeIfPresent(Int.self, forKey: .numAttentionHeads) ?? d.numAttentionHeads
        numKeyValueHeads = try c.decodeIfPresent(Int.self, forKey: .numKeyValueHeads) ?? d.numKeyValueHeads
        headDim = try c.decodeIfPresent(Int.self, forKey: .headDim) ?? d.headDim
        // Gemma 2 names it hidden_activation; Gemma 1's MLP uses hidden_act.
        hiddenActivation = try c.decodeIfPresent(String.self, forKey: .hiddenActivation)
            ?? (gemma1 ? c.decodeIfPresent(String.self, forKey: .hiddenAct) : nil) ?? d.hiddenActivation
        rmsNormEps = try c.decodeIfPresent(Float.self, forKey: .rmsNormEps) ?? d.rmsNormEps
        if let rope = try c.decodeIfPresent(RopeParameters.self, forKey: .ropeParameters), let theta = rope.rope_theta {
            if let type = rope.rope_type, type != "default" {
                throw DecodingError.dataCorruptedError(forKey: .ropeParameters, in: c,
                    debugDescription: "rope_type '\(type)' is not supported (only 'default')")
            }
            ropeTheta = theta
        } else {
            ropeTheta = try c.decodeIfPresent(Float.self, forKey: .ropeTheta) ?? d.ropeTheta
        }
        maxPositionEmbeddings = try c.decodeIfPresent(Int.self, forKey: .maxPositionEmbeddings) ?? d.maxPositionEmbeddings
        attentionBias = try c.decodeIfPresent(Bool.self, forKey: .attentionBias) ?? d.attentionBias
        if gemma1 {
            // GemmaAttention: scaling = head_dim^-0.5; no softcaps, no sliding window.
            queryPreAttnScalar = Float(headDim)
            slidingWindow = nil
            finalLogitSoftcapping = nil
            attnLogitSoftcapping = nil
            slidingLayers = Array(repeating: false, count: max(0, numHiddenLayers))
        } else {
            queryPreAttnScalar = try c.decodeIfPresent(Float.self, forKey: .queryPreAttnScalar) ?? d.queryPreAttnScalar
            // Present-but-null means "off"; absent means the default.
            slidingWindow = c.contains(.slidingWindow) ? try c.decodeIfPresent(Int.self, forKey: .slidingWindow) : d.slidingWindow
            finalLogitSoftcapping = c.contains(.finalLogitSoftcapping)
                ? try c.decodeIfPresent(Float.self, forKey: .finalLogitSoftcapping) : d.finalLogitSoftcapping
            attnLogitSoftcapping = c.contains(.attnLogitSoftcapping)
                ? try c.decodeIfPresent(Float.self, forKey: .attnLogitSoftcapping) : d.attnLogitSoftcapping
            if let types = try c.decodeIfPresent([String].self, forKey: .layerTypes) {
                slidingLayers = try types.map {
                    switch $0 {
                    case "sliding_attention": return true
                    case "full_attention": return false
                    default:
                        throw DecodingError.dataCorruptedError(forKey: .layerTypes, in: c,
                            debugDescription: "unknown layer type '\($0)'")
                    }
                }
            } else {
                slidingLayers = Self.defaultSlidingLayers(numHiddenLayers)
            }
        }
        padTokenID = (try? c.decodeIfPresent(Int.self, forKey: .padTokenID)) ?? d.padTokenID
        bosTokenID = (try? c.decodeIfPresent(Int.self, forKey: .bosTokenID)) ?? d.bosTokenID
        if let one = try? c.decodeIfPresent(Int.self, forKey: .eosTokenID) {
            eosTokenIDs = [one]
        } else if let many = try? c.decodeIfPresent([Int].self, forKey: .eosTokenID) {
            eosTokenIDs = many
        } else {
            eosTokenIDs = d.eosTokenIDs
        }
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(vocabSize, forKey: .vocabSize)
        try c.encode(hiddenSize, forKey: .hiddenSize)
        try c.encode(intermediateSize, forKey: .intermediateSize)
        try c.encode(numHiddenLayers, forKey: .numHiddenLayers)
        try c.encode(numAttentionHeads, forKey: .numAttentionHeads)
        try c.encode(numKeyValueHeads, forKey: .numKeyValueHeads)
        try c.encode(headDim, forKey: .headDim)
        try c.encode(hiddenActivation, forKey: .hiddenActivation)
        try c.encode(rmsNormEps, forKey: .rmsNormEps)
        try c.encode(RopeParameters(rope_theta: ropeTheta, rope_type: "default"), forKey: .ropeParameters)
        try c.encode(queryPreAttnScalar, forKey: .queryPreAttnScalar)
        try c.encode(maxPositionEmbeddings, forKey: .maxPositionEmbeddings)
        try c.encode(slidingWindow, forKey: .slidingWindow)
        try c.encode(finalLogitSoftcapping, forKey: .finalLogitSoftcapping)
        try c.encode(attnLogitSoftcapping, forKey: .attnLogitSoftcapping)
        try c.encode(attentionBias, forKey: .attentionBias)
        try c.encode(slidingLayers.map { $0 ? "sliding_attention" : "full_attention" }, forKey: .layerTypes)
        try c.encode(padTokenID, forKey: .padTokenID)
        try c.encode(bosTokenID, forKey: .bosTokenID)
        try c.encode(eosTokenIDs, forKey: .eosTokenID)
        try c.encode(modelType, forKey: .modelType)
    }
}

/// Written by `paligemma quantize` into config.json (`quantization_config`).
public struct QuantizationConfig: Codable, Sendable, Equatable {
    /// "q8" or "q4".
    public var format: String
    /// Inputs sharing one scale.
    public var groupSize: Int
    /// Dtype of the weights before quantization ("bf16", "f32", "f16"): the embedding scale is
    /// rounded to it, as the original model did.
    public var sourceDType: String
    /// Always "paligemma-swift": marks the layout documented in docs/quantization.md.
    public var quantMethod: String

    public init(format: String, groupSize: Int = 32, sourceDType: String) {
        self.format = format
        self.groupSize = groupSize
        self.sourceDType = sourceDType
        quantMethod = "paligemma-swift"
    }

    enum CodingKeys: String, CodingKey {
        case format, groupSize = "group_size", sourceDType = "source_dtype", quantMethod = "quant_method"
    }
}

/// A PaliGemma checkpoint's `config.json`.
public struct PaliGemmaConfig: Codable, Sendable, Equatable {
    public var vision = VisionConfig()        // vision_config
    public var text = TextConfig()            // text_config
    public var imageTokenIndex = 256000       // image_token_index (alias image_token_id)
    public var projectionDim = 2048           // projection_dim
    public var modelType = "paligemma"        // model_type
    public var quantization: QuantizationConfig?  // quantization_config (ours only)

    enum CodingKeys: String, CodingKey {
        case vision = "vision_config", text = "text_config", imageTokenIndex = "image_token_index"
        case imageTokenID = "image_token_id", projectionDim = "projection_dim", modelType = "model_type"
        case quantization = "quantization_config"
    }

    public init(vision: VisionConfig = VisionConfig(), text: TextConfig = TextConfig(), imageTokenIndex: Int = 256000) {
        self.vision = vision
        self.text = text
        self.imageTokenIndex = imageTokenIndex
        projectionDim = text.hiddenSize
    }

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        vision = try c.decodeIfPresent(VisionConfig.self, forKey: .vision) ?? VisionConfig()
        if let t = try c.decodeIfPresent(TextConfig.self, forKey: .text) {
            text = t
        } else {
            // transformers then builds PaliGemma 1's Gemma decoder with GemmaConfig's defaults.
            text = TextConfig.gemma1Defaults
        }
        imageTokenIndex = try c.decodeIfPresent(Int.self, forKey: .imageTokenIndex)
            ?? c.decodeIfPresent(Int.self, forKey: .imageTokenID) ?? 256000
        projectionDim = try c.decodeIfPresent(Int.self, forKey: .projectionDim) ?? 2048
        modelType = try c.decodeIfPresent(String.self, forKey: .modelType) ?? "paligemma"
        // Other tools' quantization configs (bitsandbytes, …) are not ours: ignore them here;
        // their tensors then fail to load with a clear dtype error.
        quantization = (try? c.decodeIfPresent(QuantizationConfig.self, forKey: .quantization)).flatMap { $0 }
            .flatMap { $0.quantMethod == "paligemma-swift" ? $0 : nil }
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(vision, forKey: .vision)
        try c.encode(text, forKey: .text)
        try c.encode(imageTokenIndex, forKey: .imageTokenIndex)
        try c.encode(projectionDim, forKey: .projectionDim)
        try c.encode(modelType, forKey: .modelType)
        try c.encodeIfPresent(quantization, forKey: .quantization)
    }

    /// Image tokens the prompt carries: (image_size / patch_size)².
    public var numImageTokens: Int { vision.numPatches }

    /// Reads and validates `config.json`.
    public static func load(from url: URL) throws -> PaliGemmaConfig {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: url.path, isDirectory: &isDirectory) else {
            throw CheckpointError.missingFile(path: url.path,
                hint: "A PaliGemma checkpoint directory holds config.json beside its *.safetensors files.")
        }
        guard !isDirectory.boolValue else {
            throw CheckpointError.invalidConfig(file: url.path, reason: "is a directory, not the JSON file config.json should be")
        }
        let data = try Data(contentsOf: url)
        let config: PaliGemmaConfig
        do {
            config = try JSONDecoder().decode(PaliGemmaConfig.self, from: data)
        } catch let error as DecodingError {
            throw CheckpointError.invalidConfig(file: url.path, reason: Self.describe(error))
        } catch {
            throw CheckpointError.invalidConfig(file: url.path, reason: "not JSON (\(error.localizedDescription))")
        }
        try config.validate(file: url.path)
        return config
    }

    /// Refuses configurations the model cannot run with, naming the field.
    public func validate(file: String = "config.json") throws {
        func bad(_ reason: String) -> CheckpointError { .invalidConfig(file: file, reason: reason) }
        if modelType != "paligemma" {
            throw CheckpointError.unsupportedModel(file: file, reason: "model_type is '\(modelType)', expected 'paligemma'")
        }
        if text.modelType != "gemma2" && text.modelType != "gemma" {
            throw CheckpointError.unsupportedModel(file: file,
                reason: "text_config.model_type is '\(text.modelType)'; supported are gemma2 (PaliGemma 2) and gemma (PaliGemma 1)")
        }
        if vision.visionUseHead {
            // PaliGemma never uses SigLIP's pooling head; hub configs set vision_use_head=false.
            throw bad("vision_config.vision_use_head must be false for PaliGemma")
        }
        let positives: [(String, Int)] = [
            ("vision_config.hidden_size", vision.hiddenSize), ("vision_config.intermediate_size", vision.intermediateSize),
            ("vision_config.num_hidden_layers", vision.numHiddenLayers), ("vision_config.num_attention_heads", vision.numAttentionHeads),
            ("vision_config.num_channels", vision.numChannels), ("vision_config.image_size", vision.imageSize),
            ("vision_config.patch_size", vision.patchSize),
            ("text_config.vocab_size", text.vocabSize), ("text_config.hidden_size", text.hiddenSize),
            ("text_config.intermediate_size", text.intermediateSize), ("text_config.num_hidden_layers", text.numHiddenLayers),
            ("text_config.num_attention_heads", text.numAttentionHeads), ("text_config.num_key_value_heads", text.numKeyValueHeads),
            ("text_config.head_dim", text.headDim), ("projection_dim", projectionDim),
        ]
        for (name, value) in positives where value <= 0 {
            throw bad("\(name) must be positive, found \(value)")
        }
        // Guard against absurd sizes before anything is allocated from them.
        for (name, value) in positives where value > 1 << 24 {
            throw bad("\(name) = \(value) is implausibly large")
        }
        if vision.hiddenSize % vision.numAttentionHeads != 0 {
            throw bad("vision_config.hidden_size \(vision.hiddenSize) is not divisible by num_attention_heads \(vision.numAttentionHeads)")
        }
        if vision.imageSize % vision.patchSize != 0 {
            throw bad("vision_config.image_size \(vision.imageSize) is not a multiple of patch_size \(vision.patchSize)")
        }
        if text.numAttentionHeads % text.numKeyValueHeads != 0 {
            throw bad("text_config.num_attention_heads \(text.numAttentionHeads) is not a multiple of num_key_value_heads \(text.numKeyValueHeads)")
        }
        if text.headDim % 2 != 0 {
            throw bad("text_config.head_dim \(text.headDim) must be even for rotary embeddings")
        }
        if projectionDim != text.hiddenSize {
            throw bad("projection_dim \(projectionDim) must equal text_config.hidden_size \(text.hiddenSize)")
        }
        if text.slidingLayers.count != text.numHiddenLayers {
            throw bad("text_config.layer_types has \(text.slidingLayers.count) entries for \(text.numHiddenLayers) layers")
        }
        if let w = text.slidingWindow, w <= 0 { throw bad("text_config.sliding_window must be positive or null") }
        if let s = text.finalLogitSoftcapping, !(s > 0) { throw bad("text_config.final_logit_softcapping must be positive or null") }
        if let s = text.attnLogitSoftcapping, !(s > 0) { throw bad("text_config.attn_logit_softcapping must be positive or null") }
        if !(text.queryPreAttnScalar > 0) { throw bad("text_config.query_pre_attn_scalar must be positive") }
        // Checkpoints use 1e-6; an eps near the activations' scale silently flattens every norm.
        if !(text.rmsNormEps > 0 && text.rmsNormEps <= 0.1) { throw bad("text_config.rms_norm_eps must be in (0, 0.1], found \(text.rmsNormEps)") }
        if !(vision.layerNormEps > 0 && vision.layerNormEps <= 0.1) {
            throw bad("vision_config.layer_norm_eps must be in (0, 0.1], found \(vision.layerNormEps)")
        }
        if !(text.ropeTheta > 1 && text.ropeTheta.isFinite) { throw bad("text_config.rope_theta must be a finite number above 1, found \(text.ropeTheta)") }
        if !text.queryPreAttnScalar.isFinite { throw bad("text_config.query_pre_attn_scalar must be finite") }
        for (name, cap) in [("final_logit_softcapping", text.finalLogitSoftcapping), ("attn_logit_softcapping", text.attnLogitSoftcapping)]
            where cap.map({ !$0.isFinite }) ?? false {
            throw bad("text_config.\(name) must be finite or null")
        }
        if text.maxPositionEmbeddings <= 0 || text.maxPositionEmbeddings > 1 << 20 {
            throw bad("text_config.max_position_embeddings must be in 1…\(1 << 20), found \(text.maxPositionEmbeddings)")
        }
        if let q = quantization {
            guard q.format == "q8" || q.format == "q4" else {
                throw bad("quantization_config.format '\(q.format)' is not one this runtime writes (q8 or q4)")
            }
            guard q.groupSize == 32 else { throw bad("quantization_config.group_size must be 32, found \(q.groupSize)") }
            guard ["bf16", "f32", "f16"].contains(q.sourceDType) else {
                throw bad("quantization_config.source_dtype '\(q.sourceDType)' is not bf16, f32 or f16")
            }
        }
        if imageTokenIndex < 0 { throw bad("image_token_index must not be negative") }
        for (name, act) in [("vision_config.hidden_act", vision.hiddenAct), ("text_config.hidden_activation", text.hiddenActivation)]
            where act != "gelu_pytorch_tanh" && act != "gelu_tanh" {
            throw CheckpointError.unsupportedModel(file: file, reason: "\(name) '\(act)' (only gelu_pytorch_tanh)")
        }
    }

    private static func describe(_ error: DecodingError) -> String {
        func path(_ p: [CodingKey]) -> String { p.map { $0.intValue.map(String.init) ?? $0.stringValue }.joined(separator: ".") }
        switch error {
        case let .typeMismatch(type, ctx): return "\(path(ctx.codingPath)): expected \(type)"
        case let .valueNotFound(type, ctx): return "\(path(ctx.codingPath)): expected \(type), found null"
        case let .keyNotFound(key, ctx): return "\(path(ctx.codingPath + [key])): missing"
        case let .dataCorrupted(ctx): return "\(path(ctx.codingPath)): \(ctx.debugDescription)"
        @unknown default: return "\(error)"
        }
    }
}
