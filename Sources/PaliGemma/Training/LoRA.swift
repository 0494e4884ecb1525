import Foundation
import Kernels
import SafeTensors

/// A Gemma decoder matrix LoRA can adapt, named as `--targets` names it.
public enum LoRATarget: String, CaseIterable, Codable, Sendable {
    case q, k, v, o, gate, up, down

    /// The module's name in transformers (`q_proj` …), as PEFT's keys and `target_modules` use it.
    public var moduleName: String { rawValue + "_proj" }

    /// The module's path inside a decoder layer.
    var path: String {
        switch self {
        case .q, .k, .v, .o: return "self_attn." + moduleName
        case .gate, .up, .down: return "mlp." + moduleName
        }
    }

    /// Parses `q,k,v,o,gate,up,down`; the `_proj` names and `all` are accepted too.
    public static func parseList(_ text: String) throws -> [LoRATarget] {
        let names = text.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces).lowercased() }
        if names == ["all"] { return allCases }
        var out: [LoRATarget] = []
        for name in names {
            let bare = name.hasSuffix("_proj") ? String(name.dropLast(5)) : name
            guard let t = LoRATarget(rawValue: bare) else {
                throw LoRAError.invalid("unknown LoRA target \"\(name)\"; use some of q,k,v,o,gate,up,down (or all)")
            }
            if !out.contains(t) { out.append(t) }
        }
        guard !out.isEmpty else { throw LoRAError.invalid("--targets names no matrix; use some of q,k,v,o,gate,up,down") }
        return out
    }
}

/// A SigLIP encoder matrix LoRA can adapt (`--train-vision`).
public enum VisionTarget: String, CaseIterable, Codable, Sendable {
    case q, k, v, out, fc1, fc2

    /// The module's name in transformers, as PEFT's keys and `target_modules` use it.
    public var moduleName: String {
        switch self {
        case .q, .k, .v, .out: return rawValue + "_proj"
        case .fc1, .fc2: return rawValue
        }
    }

    var path: String {
        switch self {
        case .q, .k, .v, .out: return "self_attn." + moduleName
        case .fc1, .fc2: return "mlp." + moduleName
        }
    }

    /// [out, in] in a tower of `v`'s shapes.
    func shape(_ v: VisionConfig) -> (out: Int, in: Int) {
        switch self {
        case .q, .k, .v, .out: return (v.hiddenSize, v.hiddenSize)
        case .fc1: return (v.intermediateSize, v.hiddenSize)
        case .fc2: return (v.hiddenSize, v.intermediateSize)
        }
    }
}

/// What is wrong with an adapter or a LoRA setting.
public enum LoRAError: Error, CustomStringConvertible, Sendable {
    case invalid(String)
    case adapterFile(path: String, reason: String)

    public var description: String {
        switch self {
        case let .invalid(reason): return reason
        case let .adapterFile(path, reason): return "adapter \(path): \(reason)"
        }
    }
}

/// LoRA's shape: `W' = W + (alpha / rank) · B·A` on each target matrix (PEFT's `LoraConfig`).
public struct LoRAConfig: Codable, Sendable, Equatable {
    public var rank: Int
    public var alpha: Float
    public var dropout: Float
    public var targets: [LoRATarget]
    /// rsLoRA scales by `alpha / √rank` instead of `alpha / rank`.
    public var rankStabilized: Bool
    /// Token ids whose embedding rows are trained too (PEFT's `trainable_token_indices`): the
    /// rows a new language or new tokens need when the model never learnt them. With tied
    /// embeddings the output projection uses the same rows.
    public var trainableTokens: [Int]
    /// The vision tower's matrices adapted too (empty: the tower stays frozen).
    public var visionTargets: [VisionTarget]

    public init(rank: Int = 16, alpha: Float = 32, dropout: Float = 0.05, targets: [LoRATarget] = LoRATarget.allCases,
                rankStabilized: Bool = false, trainableTokens: [Int] = [], visionTargets: [VisionTarget] = []) {
        self.visionTargets = visionTargets
        self.rank = rank
        self.alpha = alpha
        self.dropout = dropout
        self.targets = targets
        self.rankStabilized = rankStabilized
        self.trainableTokens = trainableTokens
    }

    public var scale: Float { rankStabilized ? alpha / Float(rank).squareRoot() : alpha / Float(rank) }

    public func validate() throws {
        guard (1...1024).contains(rank) else { throw LoRAError.invalid("LoRA rank \(rank) must be within 1...1024") }
        guard alpha.isFinite && alpha > 0 else { throw LoRAError.invalid("LoRA alpha \(alpha) must be a positive number") }
        guard dropout >= 0 && dropout < 1 else { throw LoRAError.invalid("LoRA dropout \(dropout) must be within 0 ..< 1") }
        guard !targets.isEmpty else { throw LoRAError.invalid("LoRA needs at least one target matrix") }
        guard Set(trainableTokens).count == trainableTokens.count else { throw LoRAError.invalid("trainable tokens repeat an id") }
    }
}

/// One adapted matrix's pair: `a` [rank, in] and `b` [out, rank], float32.
public final class LoRAPair: @unchecked Sendable {
    // @unchecked Sendable: the matrices change only inside a training step, which owns the adapter.
    public let a: Matrix
    public let b: Matrix
    init(a: Matrix, b: Matrix) { self.a = a; self.b = b }
}

/// Embedding rows trained in place of the checkpoint's (PEFT's trainable tokens): `rows[j]` is
/// the whole row of token `ids[j]`, starting as the original row.
public final class TrainableTokens: @unchecked Sendable {
    // @unchecked Sendable: as LoRAPair, changed only by the trainer that owns it.
    public let ids: [Int]
    /// [ids.count, hidden]
    public let rows: Matrix
    /// Row of each id.
    let index: [Int: Int]
    /// Whether `rows` still await the checkpoint's values (a fresh adapter).
    var needsOriginalRows: Bool

    init(ids: [Int], rows: Matrix, needsOriginalRows: Bool) {
        self.ids = ids
        self.rows = rows
        self.needsOriginalRows = needsOriginalRows
        index = Dictionary(uniqueKeysWithValues: ids.enumerated().map { ($1, $0) })
    }

    /// A fresh adapter's rows become the embedding's own (PEFT's initialisation).
    func fillIfNeeded(from table: WeightMatrix) {
        guard needsOriginalRows else { return }
        for (j, id) in ids.enumerated() { table.convertRow(id, into: rows.rowPointer(j)) }
        needsOriginalRows = false
    }
}

/// LoRA weights for a Gemma decoder: one pair per (layer, target). Saved and loaded in PEFT's
/// format (`adapter_config.json` + `adapter_model.safetensors`), so transformers + PEFT load what
/// we train and we load what PEFT trains.
public final class LoRAAdapter: @unchecked Sendable {
    // @unchecked Sendable: pairs are mutated only by the trainer that owns the adapter; a model
    // given an adapter for inference only reads it.
    public let config: LoRAConfig
    /// `pairs[layer][target]`
    public let pairs: [[LoRATarget: LoRAPair]]
    /// Trained embedding rows, when `config.trainableTokens` names any.
    public let tokens: TrainableTokens?
    /// `visionPairs[layer][target]` of the SigLIP encoder (empty when the tower is frozen).
    public let visionPairs: [[VisionTarget: LoRAPair]]

    public var layerCount: Int { pairs.count }

    init(config: LoRAConfig, pairs: [[LoRATarget: LoRAPair]], tokens: TrainableTokens? = nil,
         visionPairs: [[VisionTarget: LoRAPair]] = []) {
        self.config = config
        self.pairs = pairs
        self.tokens = tokens
        self.visionPairs = visionPairs
    }

    /// Whether LoRA adapts the vision tower (its features then depend on the adapter).
    public var adaptsVision: Bool { visionPairs.contains { !$0.isEmpty } }

    /// A fresh adapter as PEFT initialises one: `A` Kaiming-uniform with a = √5 (bound
    /// `1/√in`), `B` zero, so the adapted model starts equal to the base.
    /// Trainable token rows start as the checkpoint's rows, filled in when a model loads the adapter.
    /// - Parameter vision: the tower's shapes, needed when `config.visionTargets` names any.
    public convenience init(config: LoRAConfig, text: TextConfig, vision: VisionConfig? = nil, seed: UInt64) throws {
        try config.validate()
        for id in config.trainableTokens where !(0..<text.vocabSize).contains(id) {
            throw LoRAError.invalid("trainable token \(id) is outside the vocabulary (0..<\(text.vocabSize))")
        }
        var rng = SplitMix64(seed: seed)
        func fresh(out: Int, inp: Int) -> LoRAPair {
            let a = Matrix(rows: config.rank, columns: inp)
            let bound = 1 / Float(inp).squareRoot()
            for i in 0..<(config.rank * inp) { a.storage[i] = (Float(rng.nextDouble()) * 2 - 1) * bound }
            return LoRAPair(a: a, b: Matrix(rows: out, columns: config.rank))
        }
        let pairs = (0..<text.numHiddenLayers).map { _ in
            Dictionary(uniqueKeysWithValues: config.targets.map { t -> (LoRATarget, LoRAPair) in
                let (out, inp) = text.shape(of: t)
                return (t, fresh(out: out, inp: inp))
            })
        }
        var visionPairs: [[VisionTarget: LoRAPair]] = []
        if !config.visionTargets.isEmpty {
            guard let vision else { throw LoRAError.invalid("LoRA on the vision tower needs the tower's configuration") }
            visionPairs = (0..<vision.numHiddenLayers).map { _ in
                Dictionary(uniqueKeysWithValues: config.visionTargets.map { t -> (VisionTarget, LoRAPair) in
                    let (out, inp) = t.shape(vision)
                    return (t, fresh(out: out, inp: inp))
                })
            }
        }
        let tokens = config.trainableTokens.isEmpty ? nil
            : TrainableTokens(ids: config.trainableTokens, rows: Matrix(rows: config.trainableTokens.count, columns: text.hiddenSize),
                              needsOriginalRows: true)
        self.init(config: config, pairs: pairs, tokens: tokens, visionPairs: visionPairs)
    }

    /// Every vision pair in a fixed order (layer, then target order).
    var orderedVisionPairs: [(layer: Int, target: VisionTarget, pair: LoRAPair)] {
        visionPairs.enumerated().flatMap { l, byTarget in
            VisionTarget.allCases.compactMap { t in byTarget[t].map { (l, t, $0) } }
        }
    }

    /// Every pair in a fixed order (layer, then target order), for optimisers and norms.
    var orderedPairs: [(layer: Int, target: LoRATarget, pair: LoRAPair)] {
        pairs.enumerated().flatMap { l, byTarget in
            LoRATarget.allCases.compactMap { t in byTarget[t].map { (l, t, $0) } }
        }
    }

    /// Trainable parameters.
    public var parameterCount: Int { parameters.reduce(0) { $0 + $1.rows * $1.columns } }

    /// Every trained matrix: decoder pairs, vision pairs, token rows (the optimiser's and its
    /// checkpoints' order).
    var parameters: [Matrix] {
        orderedPairs.flatMap { [$0.pair.a, $0.pair.b] } + orderedVisionPairs.flatMap { [$0.pair.a, $0.pair.b] }
            + (tokens.map { [$0.rows] } ?? [])
    }

    // MARK: PEFT's format

    static let configFile = "adapter_config.json"
    static let weightsFile = "adapter_model.safetensors"

    /// PEFT's key for a pair's matrix: `base_model.model.model.language_model.layers.L.self_attn.q_proj.lora_A.weight`.
    static func key(layer: Int, target: LoRATarget, matrix: String) -> String {
        "base_model.model.model.language_model.layers.\(layer).\(target.path).lora_\(matrix).weight"
    }

    /// PEFT's key for a vision pair's matrix: `base_model.model.model.vision_tower.encoder.layers.L.self_attn.q_proj.lora_A.weight`.
    static func visionKey(layer: Int, target: VisionTarget, matrix: String) -> String {
        "base_model.model.model.vision_tower.encoder.layers.\(layer).\(target.path).lora_\(matrix).weight"
    }

    /// PEFT's key for trainable token rows.
    static let tokensKey = "base_model.model.model.language_model.embed_tokens.token_adapter.trainable_tokens_delta"

    /// `target_modules` as a regular expression that matches the language model's matrices only
    /// (SigLIP has `q_proj`, `k_proj`, `v_proj` too).
    var targetModulesPattern: String {
        var pattern = ".*language_model.*\\.(" + config.targets.map(\.moduleName).joined(separator: "|") + ")"
        if adaptsVision {
            pattern += "|.*vision_tower.*\\.(" + config.visionTargets.map(\.moduleName).joined(separator: "|") + ")"
        }
        return pattern
    }

    /// Writes `adapter_config.json` and `adapter_model.safetensors` into `directory` (created if
    /// needed), each file atomically.
    public func save(to directory: URL, baseModel: String) throws {
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        var writer = SafeTensorsWriter()
        writer.metadata = ["format": "pt"]
        for (l, t, pair) in orderedPairs {
            writer.add(Self.key(layer: l, target: t, matrix: "A"), shape: [pair.a.rows, pair.a.columns], floats: pair.a.values)
            writer.add(Self.key(layer: l, target: t, matrix: "B"), shape: [pair.b.rows, pair.b.columns], floats: pair.b.values)
        }
        for (l, t, pair) in orderedVisionPairs {
            writer.add(Self.visionKey(layer: l, target: t, matrix: "A"), shape: [pair.a.rows, pair.a.columns], floats: pair.a.values)
            writer.add(Self.visionKey(layer: l, target: t, matrix: "B"), shape: [pair.b.rows, pair.b.columns], floats: pair.b.values)
        }
        if let tokens {
            precondition(!tokens.needsOriginalRows, "save an adapter with trainable tokens after a model has filled its rows")
            writer.add(Self.tokensKey, shape: [tokens.rows.rows, tokens.rows.columns], floats: tokens.rows.values)
        }
        try writer.write(to: directory.appendingPathComponent(Self.weightsFile))
        var json: [String: Any] = [
            "peft_type": "LORA", "task_type": NSNull(), "base_model_name_or_path": baseModel,
            "r": config.rank, "lora_alpha": Double(config.alpha), "lora_dropout": Double(config.dropout),
            "target_modules": targetModulesPattern, "bias": "none", "fan_in_fan_out": false,
            "use_rslora": config.rankStabilized, "use_dora": false, "inference_mode": true,
            "init_lora_weights": true, "modules_to_save": NSNull(), "layers_to_transform": NSNull(),
            "rank_pattern": [String: Any](), "alpha_pattern": [String: Any](),
        ]
        json["trainable_token_indices"] = tokens.map { ["embed_tokens": $0.ids] } ?? NSNull()
        let data = try JSONSerialization.data(withJSONObject: json, options: [.prettyPrinted, .sortedKeys])
        try data.write(to: directory.appendingPathComponent(Self.configFile), options: .atomic)
    }

    /// Loads an adapter in PEFT's format for a decoder with `text`'s shapes. Accepts the key
    /// layouts of transformers 5 (`model.language_model.layers`) and 4 (`language_model.model.layers`).
    /// - Parameter vision: the tower's shapes, for adapters that adapt it (else such an adapter is refused).
    public static func load(from directory: URL, text: TextConfig, vision: VisionConfig? = nil) throws -> LoRAAdapter {
        let configURL = directory.appendingPathComponent(configFile)
        let path = directory.path
        guard let data = try? Data(contentsOf: configURL) else {
            throw LoRAError.adapterFile(path: path, reason: "no readable \(configFile); pass the directory `finetune --out` or PEFT's save_pretrained wrote")
        }
        guard let json = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any] else {
            throw LoRAError.adapterFile(path: path, reason: "\(configFile) is not a JSON object")
        }
        if let type = json["peft_type"] as? String, type != "LORA" {
            throw LoRAError.adapterFile(path: path, reason: "peft_type \(type) is not supported (only LORA)")
        }
        if json["use_dora"] as? Bool == true { throw LoRAError.adapterFile(path: path, reason: "DoRA adapters are not supported") }
        if json["fan_in_fan_out"] as? Bool == true { throw LoRAError.adapterFile(path: path, reason: "fan_in_fan_out adapters are not supported") }
        for field in ["rank_pattern", "alpha_pattern"] {
            if let p = json[field] as? [String: Any], !p.isEmpty {
                throw LoRAError.adapterFile(path: path, reason: "\(field) (per-module ranks) is not supported")
            }
        }
        if let bias = json["bias"] as? String, bias != "none" {
            throw LoRAError.adapterFile(path: path, reason: "bias \"\(bias)\" is not supported (only none)")
        }
        guard let rank = json["r"] as? Int, rank > 0 else { throw LoRAError.adapterFile(path: path, reason: "\(configFile) lacks a positive r") }
        let alpha = (json["lora_alpha"] as? NSNumber)?.floatValue ?? Float(rank)
        let dropout = (json["lora_dropout"] as? NSNumber)?.floatValue ?? 0
        let rs = json["use_rslora"] as? Bool ?? false

        let file: SafeTensorsFile
        do {
            file = try SafeTensorsFile(path: directory.appendingPathComponent(weightsFile).path)
        } catch {
            throw LoRAError.adapterFile(path: path, reason: "\(weightsFile): \(error)")
        }
        let pattern = try NSRegularExpression(pattern: #"language_model\.(?:model\.)?layers\.(\d+)\.(self_attn|mlp)\.(\w+)_proj\.lora_([AB])(?:\.default)?\.weight$"#)
        var found: [Int: [LoRATarget: (a: TensorInfo?, b: TensorInfo?)]] = [:]
        var tokenRows: TensorInfo?
        let visionPattern = try NSRegularExpression(pattern: #"vision_tower\.(?:vision_model\.)?encoder\.layers\.(\d+)\.(self_attn|mlp)\.(\w+)\.lora_([AB])(?:\.default)?\.weight$"#)
        var visionFound: [Int: [VisionTarget: (a: TensorInfo?, b: TensorInfo?)]] = [:]
        for name in file.tensors.keys.sorted() {
            let whole = NSRange(name.startIndex..., in: name)
            if let m = visionPattern.firstMatch(in: name, range: whole) {
                let module = String(name[Range(m.range(at: 3), in: name)!])
                guard let vision else {
                    throw LoRAError.adapterFile(path: path, reason: "tensor \(name) adapts the vision tower; this model's tower is not known here")
                }
                guard let layer = Int(name[Range(m.range(at: 1), in: name)!]), layer < vision.numHiddenLayers,
                      let target = VisionTarget.allCases.first(where: { $0.moduleName == module }) else {
                    throw LoRAError.adapterFile(path: path, reason: "tensor \(name) is not a LoRA matrix of the vision encoder's q,k,v,out_proj,fc1,fc2 layers")
                }
                var entry = visionFound[layer, default: [:]][target] ?? (nil, nil)
                if name[Range(m.range(at: 4), in: name)!] == "A" { entry.a = file.tensors[name] } else { entry.b = file.tensors[name] }
                visionFound[layer, default: [:]][target] = entry
                continue
            }
            if name.hasSuffix("embed_tokens.token_adapter.trainable_tokens_delta") && name.contains("language_model") {
                tokenRows = file.tensors[name]
                continue
            }
            let range = NSRange(name.startIndex..., in: name)
            guard let m = pattern.firstMatch(in: name, range: range),
                  let layer = Int(name[Range(m.range(at: 1), in: name)!]),
                  let target = LoRATarget(rawValue: String(name[Range(m.range(at: 3), in: name)!])) else {
                throw LoRAError.adapterFile(path: path, reason: "tensor \(name) is not a LoRA matrix of the language model's "
                    + "q,k,v,o,gate,up,down or the vision encoder's, nor trainable token rows (other modules are not supported)")
            }
            guard layer < text.numHiddenLayers else {
                throw LoRAError.adapterFile(path: path, reason: "tensor \(name) names layer \(layer); the model has \(text.numHiddenLayers)")
            }
            let info = file.tensors[name]!
            var entry = found[layer, default: [:]][target] ?? (nil, nil)
            if name[Range(m.range(at: 4), in: name)!] == "A" { entry.a = info } else { entry.b = info }
            found[layer, default: [:]][target] = entry
        }
        // An adapter that leaves the tower alone has no vision layers at all.
        let visionPairs = try (visionFound.isEmpty ? nil : vision).map { v in
            try assemblePairs(visionFound, layers: v.numHiddenLayers, rank: rank, what: "vision layer", path: path,
                              name: \.moduleName, shape: { $0.shape(v) })
        } ?? []
        guard !found.isEmpty || tokenRows != nil || !visionPairs.isEmpty else { throw LoRAError.adapterFile(path: path, reason: "\(weightsFile) holds no LoRA matrices") }
        var tokenIDs: [Int] = []
        if let spec = json["trainable_token_indices"], !(spec is NSNull) {
            if let list = spec as? [Int] {
                tokenIDs = list
            } else if let byLayer = spec as? [String: Any], byLayer.count == 1, let list = byLayer["embed_tokens"] as? [Int] {
                tokenIDs = list
            } else {
                throw LoRAError.adapterFile(path: path, reason: "trainable_token_indices must list ids for embed_tokens only")
            }
        }
        var tokens: TrainableTokens?
        switch (tokenIDs.isEmpty, tokenRows) {
        case (true, nil): break
        case (false, let rows?):
            guard rows.shape == [tokenIDs.count, text.hiddenSize] else {
                throw LoRAError.adapterFile(path: path, reason: "trainable token rows \(rows.shape) do not fit \(tokenIDs.count) ids × hidden \(text.hiddenSize)")
            }
            guard tokenIDs.allSatisfy({ (0..<text.vocabSize).contains($0) }), Set(tokenIDs).count == tokenIDs.count else {
                throw LoRAError.adapterFile(path: path, reason: "trainable_token_indices holds an id outside the vocabulary or a repeated id")
            }
            tokens = TrainableTokens(ids: tokenIDs, rows: Matrix(rows: tokenIDs.count, columns: text.hiddenSize, values: try rows.floats()),
                                     needsOriginalRows: false)
        default:
            throw LoRAError.adapterFile(path: path, reason: "trainable_token_indices and the trainable_tokens_delta tensor must come together")
        }
        let pairs = try assemblePairs(found, layers: text.numHiddenLayers, rank: rank, what: "layer", path: path,
                                      name: \.moduleName, shape: { text.shape(of: $0) })
        let targets = Set(pairs.flatMap(\.keys)), visionTargets = Set(visionPairs.flatMap(\.keys))
        let config = LoRAConfig(rank: rank, alpha: alpha, dropout: dropout,
                                targets: targets.isEmpty ? LoRATarget.allCases : LoRATarget.allCases.filter(targets.contains),
                                rankStabilized: rs, trainableTokens: tokenIDs,
                                visionTargets: VisionTarget.allCases.filter(visionTargets.contains))
        try config.validate()
        return LoRAAdapter(config: config, pairs: pairs, tokens: tokens, visionPairs: visionPairs)
    }
}

/// `pairs[layer][target]` from the A and B tensors found per layer and target, each checked
/// against the rank and the adapted matrix's [out, in].
private func assemblePairs<Target: Hashable>(_ found: [Int: [Target: (a: TensorInfo?, b: TensorInfo?)]], layers: Int, rank: Int,
                                             what: String, path: String, name: (Target) -> String,
                                             shape: (Target) -> (out: Int, in: Int)) throws -> [[Target: LoRAPair]] {
    var pairs = [[Target: LoRAPair]](repeating: [:], count: layers)
    for (layer, byTarget) in found {
        for (target, entry) in byTarget {
            guard let a = entry.a, let b = entry.b else {
                throw LoRAError.adapterFile(path: path, reason: "\(what) \(layer) \(name(target)) has only one of lora_A and lora_B")
            }
            let (out, inp) = shape(target)
            guard a.shape == [rank, inp], b.shape == [out, rank] else {
                throw LoRAError.adapterFile(path: path, reason: "\(what) \(layer) \(name(target)): lora_A \(a.shape) and lora_B \(b.shape) "
                    + "do not fit rank \(rank) and the matrix's [\(out), \(inp)]")
            }
            pairs[layer][target] = LoRAPair(a: Matrix(rows: rank, columns: inp, values: try a.floats()),
                                            b: Matrix(rows: out, columns: rank, values: try b.floats()))
        }
    }
    return pairs
}

extension TextConfig {
    /// A target matrix's [out, in].
    func shape(of target: LoRATarget) -> (out: Int, in: Int) {
        let q = numAttentionHeads * headDim, kv = numKeyValueHeads * headDim
        switch target {
        case .q: return (q, hiddenSize)
        case .k, .v: return (kv, hiddenSize)
        case .o: return (hiddenSize, q)
        case .gate, .up: return (intermediateSize, hiddenSize)
        case .down: return (hiddenSize, intermediateSize)
        }
    }
}
