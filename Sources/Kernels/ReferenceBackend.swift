import Foundation

/// Plain, single-threaded loops written for clarity: the oracle the fast kernels are tested
/// against. Slow on purpose; never used for real work.
public struct ReferenceBackend: ComputeBackend {
    public init() {}
    public var name: String { "reference" }

    public func linear(_ x: Matrix, _ weight: WeightMatrix, bias: [Float]?, into out: Matrix) {
        precondition(x.columns == weight.columns && out.columns == weight.rows, "linear shape mismatch")
        precondition(bias == nil || bias!.count == weight.rows, "bias length mismatch")
        out.setRows(x.rows)
        for r in 0..<x.rows {
            for n in 0..<weight.rows {
                var sum: Float = 0
                for k in 0..<weight.columns { sum += x[r, k] * weight.value(row: n, column: k) }
                out[r, n] = sum + (bias?[n] ?? 0)
            }
        }
    }

    public func layerNorm(_ x: Matrix, gamma: [Float], beta: [Float], eps: Float, into out: Matrix) {
        precondition(gamma.count == x.columns && beta.count == x.columns && out.columns == x.columns)
        out.setRows(x.rows)
        let n = Float(x.columns)
        for r in 0..<x.rows {
            var mean: Float = 0
            for c in 0..<x.columns { mean += x[r, c] }
            mean /= n
            var variance: Float = 0
            for c in 0..<x.columns { variance += (x[r, c] - mean) * (x[r, c] - mean) }
            variance /= n
            let inv = 1 / (variance + eps).squareRoot()
            for c in 0..<x.columns { out[r, c] = (x[r, c] - mean) * inv * gamma[c] + beta[c] }
        }
    }

    public func rmsNorm(_ x: Matrix, weight: [Float], weightOffset: Float, eps: Float, into out: Matrix) {
        precondition(weight.count == x.columns && out.columns == x.columns)
        out.setRows(x.rows)
        for r in 0..<x.rows {
            var sumSquares: Float = 0
            for c in 0..<x.columns { sumSquares += x[r, c] * x[r, c] }
            let inv = 1 / (sumSquares / Float(x.columns) + eps).squareRoot()
            for c in 0..<x.columns { out[r, c] = x[r, c] * inv * (weightOffset + weight[c]) }
        }
    }

    public func geluTanh(_ a: Matrix, times b: Matrix?, into out: Matrix) {
        precondition(out.columns == a.columns && (b == nil || (b!.columns == a.columns && b!.rows == a.rows)))
        out.setRows(a.rows)
        for r in 0..<a.rows {
            for c in 0..<a.columns {
                let g = Self.gelu(a[r, c])
                out[r, c] = b.map { g * $0[r, c] } ?? g
            }
        }
    }

    /// gelu with the tanh approximation: 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))).
    public static func gelu(_ x: Float) -> Float {
        let inner: Float = 0.7978845608028654 * (x + 0.044715 * x * x * x)
        return 0.5 * x * (1 + tanh(inner))
    }

    public func add(_ y: Matrix, into x: Matrix) {
        precondition(x.columns == y.columns && x.rows == y.rows, "add shape mismatch")
        for r in 0..<x.rows { for c in 0..<x.columns { x[r, c] += y[r, c] } }
    }

    public func softcap(_ x: Matrix, cap: Float) {
        for r in 0..<x.rows { for c in 0..<x.columns { x[r, c] = cap * tanh(x[r, c] / cap) } }
    }

    public func rope(_ x: Matrix, headDim: Int, firstPosition: Int, theta: Float) {
        precondition(headDim % 2 == 0 && x.columns % headDim == 0, "rope shape mismatch")
        let half = headDim / 2
        for r in 0..<x.rows {
            let position = Float(firstPosition + r)
            for h in 0..<(x.columns / headDim) {
                let base = h * headDim
                for i in 0..<half {
                    let invFreq = 1 / pow(theta, Float(2 * i) / Float(headDim))
                    let angle = position * invFreq
                    let (c, s) = (cos(angle), sin(angle))
                    let x1 = x[r, base + i], x2 = x[r, base + half + i]
                    x[r, base + i] = x1 * c - x2 * s
                    x[r, base + half + i] = x2 * c + x1 * s
                }
            }
        }
    }

    public func attention(queries: Matrix, keys: Matrix, values: Matrix, shape: AttentionShape,
                          mask: AttentionMask, into out: Matrix) {
        let d = shape.headDim
        shape.check(queries: queries, keys: keys, values: values, out: out)
        out.setRows(queries.rows)
        let group = shape.heads / shape.kvHeads
        for r in 0..<queries.rows {
            let q = shape.queryStart + r
            for h in 0..<shape.heads {
                let kvh = h / group
                let kb = shape.headOffset(kvh, columns: keys.columns), vb = shape.headOffset(kvh, columns: values.columns)
                var scores = [Float](repeating: -.infinity, count: shape.keyCount)
                for k in 0..<shape.keyCount where mask.allows(query: q, key: k) {
                    var s: Float = 0
                    for i in 0..<d { s += queries[r, h * d + i] * keys.storage[kb + k * keys.columns + i] }
                    s *= shape.scale
                    if let cap = shape.softcap { s = cap * tanh(s / cap) }
                    scores[k] = s
                }
                let m = scores.max() ?? 0
                var total: Float = 0
                for k in scores.indices where scores[k] > -.infinity {
                    scores[k] = exp(scores[k] - m)
                    total += scores[k]
                }
                for i in 0..<d {
                    var acc: Float = 0
                    for k in scores.indices where scores[k] > -.infinity {
                        acc += scores[k] / total * values.storage[vb + k * values.columns + i]
                    }
                    out[r, h * d + i] = acc
                }
            }
        }
    }

    public func embed(_ ids: [Int], table: WeightMatrix, scale: Float, into out: Matrix) {
        precondition(out.columns == table.columns && ids.count <= out.rowCapacity)
        out.setRows(ids.count)
        for (r, id) in ids.enumerated() {
            for c in 0..<table.columns { out[r, c] = table.value(row: id, column: c) * scale }
        }
    }
}
