import Foundation

extension Matrix {
    /// The active rows seen as float32 weights, so `backend.linear(x, m.weightView)` computes
    /// `x · mᵀ`. The view does not keep the matrix alive: use it inside `withExtendedLifetime`.
    public var weightView: WeightMatrix {
        WeightMatrix(format: .f32, rows: rows, columns: columns, data: UnsafeRawPointer(storage))
    }

    /// Writes the active rows transposed into `out` ([columns, rows]).
    public func transpose(into out: Matrix) {
        precondition(out.columns == rows && out.rowCapacity >= columns, "transpose shape mismatch")
        out.setRows(columns)
        let src = storage, dst = out.storage
        let (r, c) = (rows, columns)
        // 32×32 tiles keep both sides in cache.
        var i0 = 0
        while i0 < r {
            let i1 = Swift.min(i0 + 32, r)
            var j0 = 0
            while j0 < c {
                let j1 = Swift.min(j0 + 32, c)
                for i in i0..<i1 { for j in j0..<j1 { dst[j * r + i] = src[i * c + j] } }
                j0 = j1
            }
            i0 = i1
        }
    }

    /// A new matrix holding the transpose of the active rows.
    public func transposed() -> Matrix {
        let out = Matrix(rows: columns, columns: rows)
        transpose(into: out)
        return out
    }

    /// Copies columns `start ..< start + out.columns` of the active rows into `out`.
    public func copyColumns(from start: Int, into out: Matrix) {
        out.setRows(rows)
        out.copyRows(from: self, columnsFrom: start, count: rows, to: 0)
    }

    /// Adds `part`'s rows into columns `start ..< start + part.columns` (`assign` overwrites).
    public func addColumns(_ part: Matrix, at start: Int, assign: Bool = false) {
        precondition(start >= 0 && start + part.columns <= columns && part.rows == rows, "column slice out of range")
        for r in 0..<rows {
            let d = rowPointer(r) + start, s = part.rowPointer(r)
            if assign { d.update(from: s, count: part.columns) } else { for c in 0..<part.columns { d[c] += s[c] } }
        }
    }

    /// Sets the active rows to zero.
    public func zero() { storage.update(repeating: 0, count: rows * columns) }

    /// `self += scale · other` over the active rows.
    public func add(_ other: Matrix, scale: Float = 1) {
        precondition(other.rows == rows && other.columns == columns, "add shape mismatch")
        Matrix.addScaled(other.storage, scale: scale, into: storage, count: rows * columns)
    }

    /// Row `row` `+= scale ·` `other`'s one row: per element what `add(_:scale:)` computes.
    public func addRow(_ row: Int, _ other: Matrix, scale: Float) {
        precondition(row >= 0 && row < rows && other.rows == 1 && other.columns == columns, "addRow shape mismatch")
        Matrix.addScaled(other.storage, scale: scale, into: rowPointer(row), count: columns)
    }

    private static func addScaled(_ s: UnsafeMutablePointer<Float>, scale: Float, into d: UnsafeMutablePointer<Float>, count n: Int) {
        for i in 0..<n { d[i] += scale * s[i] }
    }
}

/// tanh through one exponential, `1 − 2/(e^{2y} + 1)`: within 2e-7 of libm's (absolute), a
/// third of its cost; backward passes evaluate it once per activation.
@inline(__always)
func fastTanh(_ y: Float) -> Float {
    let e = exp(Swift.min(2 * y, 80))
    return 1 - 2 / (e + 1)
}

/// Backward passes of the operations `ComputeBackend` runs forward, for training. The large
/// products go through the backend's `linear` (the same kernels as inference); the elementwise
/// and per-row steps are plain float32 loops, each the derivative of the reference expression
/// named beside it.
public struct Gradients: Sendable {
    public let backend: ComputeBackend

    public init(backend: ComputeBackend) { self.backend = backend }

    /// `out = a · bᵀ` (a: [n, k], b: [m, k], out: [n, m]) with the backend's float32 product.
    public func product(_ a: Matrix, _ b: Matrix, into out: Matrix) {
        withExtendedLifetime(b) { backend.linear(a, b.weightView, bias: nil, into: out) }
    }

    /// RMSNorm backward for `y = x · r · (offset + w)`, `r = (mean(x²) + eps)^-½`:
    /// `dx = r·g − x · r³/H · Σ g·x` with `g = dy · (offset + w)`. Adds into `dx` unless `assign`.
    public func rmsNorm(x: Matrix, weight: [Float], weightOffset: Float, eps: Float, dOut: Matrix,
                        into dx: Matrix, assign: Bool = false) {
        precondition(x.columns == weight.count && dOut.rows == x.rows && dOut.columns == x.columns && dx.columns == x.columns)
        if assign { dx.setRows(x.rows) }
        precondition(dx.rows == x.rows, "rmsNorm gradient rows")
        let h = x.columns
        weight.withUnsafeBufferPointer { w in
            for r in 0..<x.rows {
                let xp = x.rowPointer(r), gp = dOut.rowPointer(r), dp = dx.rowPointer(r)
                var sq: Float = 0, gx: Float = 0
                for c in 0..<h { sq += xp[c] * xp[c]; gx += gp[c] * (weightOffset + w[c]) * xp[c] }
                let inv = 1 / (sq / Float(h) + eps).squareRoot()
                let k = inv * inv * inv / Float(h) * gx
                for c in 0..<h {
                    let v = inv * gp[c] * (weightOffset + w[c]) - xp[c] * k
                    dp[c] = assign ? v : dp[c] + v
                }
            }
        }
    }

    /// Backward of `m = gelu_tanh(a) · b` (GeGLU): `da = dm · b · gelu'(a)`, `db = dm · gelu(a)`.
    /// gelu_tanh(a) = ½a(1 + tanh(√(2/π)(a + 0.044715a³))).
    public func geluTanhProduct(a: Matrix, b: Matrix, dOut: Matrix, da: Matrix, db: Matrix) {
        precondition(a.rows == b.rows && a.columns == b.columns && dOut.rows == a.rows && dOut.columns == a.columns)
        da.setRows(a.rows)
        db.setRows(a.rows)
        let n = a.rows * a.columns
        let ap = a.storage, bp = b.storage, gp = dOut.storage, dap = da.storage, dbp = db.storage
        let c: Float = (2 / Float.pi).squareRoot()
        for i in 0..<n {
            let x = ap[i]
            let t = fastTanh(c * (x + 0.044715 * x * x * x))
            let gelu = 0.5 * x * (1 + t)
            let dgelu = 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * c * (1 + 3 * 0.044715 * x * x)
            let g = gp[i]
            dap[i] = g * bp[i] * dgelu
            dbp[i] = g * gelu
        }
    }

    /// Backward of `y = cap · tanh(x / cap)` given the capped values y: `grad *= 1 − (y/cap)²`.
    public func softcap(capped y: Matrix, cap: Float, grad: Matrix) {
        precondition(y.rows == grad.rows && y.columns == grad.columns)
        let n = y.rows * y.columns, yp = y.storage, gp = grad.storage
        for i in 0..<n { let t = yp[i] / cap; gp[i] *= 1 - t * t }
    }

    /// Backward of rotate-half RoPE in place (the transpose of each rotation: the angle negated),
    /// with the forward's float32 inverse frequencies; row r has position `firstPosition + r`.
    public func rope(_ grad: Matrix, headDim: Int, firstPosition: Int, theta: Float) {
        precondition(headDim % 2 == 0 && grad.columns % headDim == 0, "rope shape mismatch")
        let half = headDim / 2
        let invFreq = ropeInverseFrequencies(headDim: headDim, theta: theta)
        for r in 0..<grad.rows {
            let p = grad.rowPointer(r)
            let position = Float(firstPosition + r)
            for i in 0..<half {
                let angle = position * invFreq[i]
                let (c, s) = (cos(angle), sin(angle))
                var base = 0
                while base < grad.columns {
                    let g1 = p[base + i], g2 = p[base + half + i]
                    p[base + i] = g1 * c + g2 * s
                    p[base + half + i] = g2 * c - g1 * s
                    base += headDim
                }
            }
        }
    }

    /// Backward of `backend.attention` over one whole sequence (queries and keys are the same
    /// `n` positions, `shape.queryStart == 0`). Recomputes each head's probabilities
    /// `P = softmax(mask(softcap(scale · Q Kᵀ)))`, then `dV = Pᵀ dO`, `dS = P ⊙ (dP − rowsum(P ⊙ dP))`
    /// with `dP = dO Vᵀ`, through the softcap (`1 − tanh²`) and the scale, `dQ = dS K`, `dK = dSᵀ Q`.
    /// Grouped heads add into their shared kv head. `dQueries`, `dKeys`, `dValues` are overwritten.
    public func attention(queries: Matrix, keys: Matrix, values: Matrix, shape: AttentionShape, mask: AttentionMask,
                          dOut: Matrix, dQueries: Matrix, dKeys: Matrix, dValues: Matrix) {
        let n = queries.rows, d = shape.headDim
        precondition(shape.queryStart == 0 && shape.headRows == nil && shape.keyCount == n && keys.rows == n && values.rows == n && dOut.rows == n,
                     "attention backward takes one whole sequence")
        let groups = shape.heads / shape.kvHeads
        dQueries.setRows(n); dKeys.setRows(n); dValues.setRows(n)
        dKeys.zero(); dValues.zero()
        let qh = Matrix(rows: n, columns: d), kh = Matrix(rows: n, columns: d), vh = Matrix(rows: n, columns: d)
        let doh = Matrix(rows: n, columns: d)
        let khT = Matrix(rows: d, columns: n)
        let qhT = Matrix(rows: d, columns: n), dohT = Matrix(rows: d, columns: n)
        let p = Matrix(rows: n, columns: n), dp = Matrix(rows: n, columns: n), tanhS = Matrix(rows: n, columns: n)
        let pT = Matrix(rows: n, columns: n), dsT = Matrix(rows: n, columns: n)
        let part = Matrix(rows: n, columns: d)
        for j in 0..<shape.kvHeads {
            keys.copyColumns(from: j * d, into: kh)
            values.copyColumns(from: j * d, into: vh)
            kh.transpose(into: khT)
            for h in (j * groups)..<((j + 1) * groups) {
                queries.copyColumns(from: h * d, into: qh)
                dOut.copyColumns(from: h * d, into: doh)
                // Scores → probabilities (reference: (q·kᵀ)·scale, /cap, tanh, ·cap, mask, softmax in float32).
                product(qh, kh, into: p)
                for r in 0..<n {
                    let row = p.rowPointer(r), tr = tanhS.rowPointer(r)
                    let allowed = mask.keyRange(query: r, keyCount: n)
                    var maxv = -Float.infinity
                    for c in allowed {
                        var s = row[c] * shape.scale
                        if let cap = shape.softcap { let t = fastTanh(s / cap); tr[c] = t; s = cap * t }
                        row[c] = s
                        maxv = max(maxv, s)
                    }
                    var sum: Float = 0
                    for c in allowed { let e = exp(row[c] - maxv); row[c] = e; sum += e }
                    for c in 0..<n { row[c] = allowed.contains(c) ? row[c] / sum : 0 }
                }
                // dV += Pᵀ dO
                p.transpose(into: pT)
                doh.transpose(into: dohT)
                product(pT, dohT, into: part)
                dValues.addColumns(part, at: j * d)
                // dP = dO Vᵀ; dS = P ⊙ (dP − Σ P⊙dP), through the softcap and the scale.
                product(doh, vh, into: dp)
                for r in 0..<n {
                    let pr = p.rowPointer(r), dr = dp.rowPointer(r), tr = tanhS.rowPointer(r)
                    let allowed = mask.keyRange(query: r, keyCount: n)
                    var dot: Float = 0
                    for c in allowed { dot += pr[c] * dr[c] }
                    for c in 0..<n {
                        guard allowed.contains(c) else { dr[c] = 0; continue }
                        var g = pr[c] * (dr[c] - dot)
                        if shape.softcap != nil { g *= 1 - tr[c] * tr[c] }
                        dr[c] = g * shape.scale
                    }
                }
                // dQ = dS K  (K as weights: its transpose's rows)
                product(dp, khT, into: part)
                dQueries.addColumns(part, at: h * d, assign: true)
                // dK += dSᵀ Q
                dp.transpose(into: dsT)
                qh.transpose(into: qhT)
                product(dsT, qhT, into: part)
                dKeys.addColumns(part, at: j * d)
            }
        }
    }

    /// Softmax cross-entropy of each row of `logits` against `targets[row]`. Returns each row's loss
    /// `logsumexp(z) − z[target]` and writes `(softmax(z) − onehot) · gradScale` into `dLogits`.
    public func crossEntropy(logits: Matrix, targets: [Int], gradScale: Float, into dLogits: Matrix) -> [Float] {
        precondition(targets.count == logits.rows && dLogits.columns == logits.columns)
        dLogits.setRows(logits.rows)
        let v = logits.columns
        var losses = [Float](repeating: 0, count: logits.rows)
        for r in 0..<logits.rows {
            let t = targets[r]
            precondition(t >= 0 && t < v, "target outside the vocabulary")
            let z = logits.rowPointer(r), g = dLogits.rowPointer(r)
            let shift = z[logits.argmax(row: r)]
            let sum = logits.sumOfExponentials(row: r, shift: shift)
            losses[r] = log(sum) + shift - z[t]
            let scale = gradScale / sum
            for c in 0..<v { g[c] = exp(z[c] - shift) * scale }
            g[t] -= gradScale
        }
        return losses
    }
}

extension Gradients {
    /// LayerNorm backward for `y = (x − μ)·σ⁻¹·γ + β` (statistics over each row):
    /// `dx = σ⁻¹ · (g − mean(g) − x̂ · mean(g·x̂))` with `g = dy·γ`, `x̂ = (x − μ)·σ⁻¹`. Overwrites `dx`.
    public func layerNorm(x: Matrix, gamma: [Float], eps: Float, dOut: Matrix, into dx: Matrix) {
        precondition(x.columns == gamma.count && dOut.rows == x.rows && dOut.columns == x.columns && dx.columns == x.columns)
        dx.setRows(x.rows)
        let n = x.columns
        gamma.withUnsafeBufferPointer { w in
            for r in 0..<x.rows {
                let xp = x.rowPointer(r), gp = dOut.rowPointer(r), dp = dx.rowPointer(r)
                var mean: Float = 0
                for c in 0..<n { mean += xp[c] }
                mean /= Float(n)
                var variance: Float = 0
                for c in 0..<n { variance += (xp[c] - mean) * (xp[c] - mean) }
                let inv = 1 / (variance / Float(n) + eps).squareRoot()
                var sumG: Float = 0, sumGX: Float = 0
                for c in 0..<n {
                    let g = gp[c] * w[c]
                    sumG += g
                    sumGX += g * (xp[c] - mean) * inv
                }
                let meanG = sumG / Float(n), meanGX = sumGX / Float(n)
                for c in 0..<n { dp[c] = inv * (gp[c] * w[c] - meanG - (xp[c] - mean) * inv * meanGX) }
            }
        }
    }

    /// Backward of `y = gelu_tanh(a)` in place: `grad *= gelu'(a)`.
    public func geluTanh(a: Matrix, grad: Matrix) {
        precondition(a.rows == grad.rows && a.columns == grad.columns)
        let n = a.rows * a.columns, ap = a.storage, gp = grad.storage
        let c: Float = (2 / Float.pi).squareRoot()
        for i in 0..<n {
            let x = ap[i]
            let t = fastTanh(c * (x + 0.044715 * x * x * x))
            gp[i] *= 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * c * (1 + 3 * 0.044715 * x * x)
        }
    }
}
