import Foundation
import Kernels

/// How tokens are picked. The default is greedy decoding (temperature 0), as the reference does.
public struct GenerationOptions: Codable, Sendable, Equatable {
    /// Upper bound on generated tokens (the stop token included).
    public var maxNewTokens: Int = 64
    /// 0 picks the most likely token; above 0 samples from softmax(logits / temperature).
    /// Values below `greedyBelow` are greedy too: dividing logits by them overflows float32.
    public var temperature: Float = 0

    /// Temperatures under this are treated as 0 (greedy).
    public static let greedyBelow: Float = 1e-4

    /// Whether tokens are sampled rather than picked greedily.
    public var samples: Bool { temperature >= Self.greedyBelow }
    /// Sample only among the k most likely tokens (0: no limit).
    public var topK: Int = 0
    /// Sample only among the most likely tokens whose probabilities add up to p (1: no limit).
    public var topP: Float = 1
    /// Seed of the sampler's random numbers, so sampled runs repeat.
    public var seed: UInt64 = 0

    public init(maxNewTokens: Int = 64, temperature: Float = 0, topK: Int = 0, topP: Float = 1, seed: UInt64 = 0) {
        self.maxNewTokens = maxNewTokens
        self.temperature = temperature
        self.topK = topK
        self.topP = topP
        self.seed = seed
    }

    enum CodingKeys: String, CodingKey {
        case maxNewTokens = "max_new_tokens", temperature, topK = "top_k", topP = "top_p", seed
    }

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        let d = GenerationOptions()
        maxNewTokens = try c.decodeIfPresent(Int.self, forKey: .maxNewTokens) ?? d.maxNewTokens
        temperature = try c.decodeIfPresent(Float.self, forKey: .temperature) ?? d.temperature
        topK = try c.decodeIfPresent(Int.self, forKey: .topK) ?? d.topK
        topP = try c.decodeIfPresent(Float.self, forKey: .topP) ?? d.topP
        seed = try c.decodeIfPresent(UInt64.self, forKey: .seed) ?? d.seed
    }

    /// Refuses values that make no sense, naming the option.
    public func validate() throws {
        guard maxNewTokens >= 1 && maxNewTokens <= 1 << 16 else { throw InputError.option("max_new_tokens must be in 1…65536, got \(maxNewTokens)") }
        guard temperature >= 0 && temperature.isFinite else { throw InputError.option("temperature must be ≥ 0, got \(temperature)") }
        guard topK >= 0 else { throw InputError.option("top_k must be ≥ 0, got \(topK)") }
        guard topP > 0 && topP <= 1 else { throw InputError.option("top_p must be in (0, 1], got \(topP)") }
    }
}

/// Picks the next token from a row of logits and reports its log-probability under the model.
/// Buffers are allocated once (vocabulary-sized), so picking allocates nothing per token.
struct Sampler {
    let options: GenerationOptions
    private var rng: SplitMix64
    private var order: [Int32]
    private var probabilities: [Float]

    init(options: GenerationOptions, vocabularySize: Int) {
        self.options = options
        rng = SplitMix64(seed: options.seed)
        order = options.samples ? [Int32](repeating: 0, count: vocabularySize) : []
        probabilities = options.samples ? [Float](repeating: 0, count: vocabularySize) : []
    }

    /// (token, log p(token)) for row 0 of `logits`.
    mutating func pick(_ logits: Matrix) -> (token: Int, logProb: Float) {
        let n = logits.columns
        let row = logits.rowPointer(0)
        let best = logits.argmax(row: 0)
        let maxValue = row[best]
        let logNormalizer = maxValue + log(logits.sumOfExponentials(row: 0, shift: maxValue))
        guard options.samples else { return (best, row[best] - logNormalizer) }

        // Sampling: sort by logit, keep top-k, then the nucleus of mass top-p, renormalise.
        for i in 0..<n { order[i] = Int32(i) }
        order.withUnsafeMutableBufferPointer { buf in
            buf.sort { row[Int($0)] > row[Int($1)] }
        }
        let k = options.topK > 0 ? min(options.topK, n) : n
        let t = options.temperature
        let top = row[Int(order[0])] / t
        var total: Float = 0
        for j in 0..<k {
            let p = exp(row[Int(order[j])] / t - top)
            probabilities[j] = p
            total += p
        }
        var kept = k
        if options.topP < 1 {
            var cumulative: Float = 0
            for j in 0..<k {
                cumulative += probabilities[j] / total
                if cumulative >= options.topP {
                    kept = j + 1
                    break
                }
            }
        }
        var keptTotal: Float = 0
        for j in 0..<kept { keptTotal += probabilities[j] }
        var u = Float(rng.nextDouble()) * keptTotal
        var choice = Int(order[kept - 1])
        for j in 0..<kept {
            u -= probabilities[j]
            if u <= 0 {
                choice = Int(order[j])
                break
            }
        }
        return (choice, row[choice] - logNormalizer)
    }
}

/// A small, fast, seedable generator (SplitMix64): the sampler's, and the one random
/// checkpoints are drawn from, so a seed gives the same numbers on every platform.
public struct SplitMix64: RandomNumberGenerator, Sendable {
    private var state: UInt64
    public init(seed: UInt64) { state = seed }
    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
    /// Uniform in [0, 1), 53 bits.
    public mutating func nextDouble() -> Double { Double(next() >> 11) * 0x1p-53 }
}
