import Foundation
import Kernels
import XCTest

/// Every backward pass in `Gradients` against central finite differences of the forward
/// expression written out here in Double: the gradient of `L = Σ w ⊙ f(x)` for random `w`.
final class GradientsTests: XCTestCase {
    var rng = SystemRandomNumberGenerator()
    let grad = Gradients(backend: ReferenceBackend())

    func random(_ n: Int, scale: Double = 1) -> [Double] { (0..<n).map { _ in Double.random(in: -scale...scale, using: &rng) } }

    /// ∂/∂x_i of `f` by central differences.
    func numeric(_ x: [Double], _ f: ([Double]) -> Double) -> [Double] {
        (0..<x.count).map { i in
            var p = x, m = x
            let h = 1e-5 * max(1, abs(x[i]))
            p[i] += h; m[i] -= h
            return (f(p) - f(m)) / (2 * h)
        }
    }

    func matrix(_ rows: Int, _ cols: Int, _ v: [Double]) -> Matrix { Matrix(rows: rows, columns: cols, values: v.map(Float.init)) }

    func assertClose(_ analytic: [Float], _ expected: [Double], _ what: String, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(analytic.count, expected.count, what, file: file, line: line)
        let scale = expected.map(abs).max() ?? 1
        let worst = zip(analytic, expected).map { abs(Double($0) - $1) }.max() ?? 0
        XCTAssertLessThan(worst, 2e-3 * max(scale, 1e-3), "\(what): worst difference \(worst) at scale \(scale)", file: file, line: line)
    }

    func testRMSNorm() {
        let (r, c) = (3, 8), eps = 1e-6
        let x = random(r * c), w = random(c, scale: 0.5), dy = random(r * c)
        func f(_ x: [Double]) -> Double {
            var total = 0.0
            for i in 0..<r {
                let row = x[(i * c)..<((i + 1) * c)]
                let inv = 1 / (row.map { $0 * $0 }.reduce(0, +) / Double(c) + eps).squareRoot()
                for j in 0..<c { total += dy[i * c + j] * x[i * c + j] * inv * (1 + w[j]) }
            }
            return total
        }
        let dx = Matrix(rows: r, columns: c)
        grad.rmsNorm(x: matrix(r, c, x), weight: w.map(Float.init), weightOffset: 1, eps: Float(eps), dOut: matrix(r, c, dy), into: dx, assign: true)
        assertClose(dx.values, numeric(x, f), "rmsNorm")
    }

    func testLayerNorm() {
        let (r, c) = (3, 8), eps = 1e-6
        let x = random(r * c), w = random(c), dy = random(r * c)
        func f(_ x: [Double]) -> Double {
            var total = 0.0
            for i in 0..<r {
                let row = Array(x[(i * c)..<((i + 1) * c)])
                let mean = row.reduce(0, +) / Double(c)
                let variance = row.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / Double(c)
                for j in 0..<c { total += dy[i * c + j] * (row[j] - mean) / (variance + eps).squareRoot() * w[j] }
            }
            return total
        }
        let dx = Matrix(rows: r, columns: c)
        grad.layerNorm(x: matrix(r, c, x), gamma: w.map(Float.init), eps: Float(eps), dOut: matrix(r, c, dy), into: dx)
        assertClose(dx.values, numeric(x, f), "layerNorm")
    }

    func gelu(_ a: Double) -> Double { 0.5 * a * (1 + tanh((2 / Double.pi).squareRoot() * (a + 0.044715 * a * a * a))) }

    func testGeGLUAndGELU() {
        let n = 12
        let a = random(n, scale: 3), b = random(n), dm = random(n)
        let da = Matrix(rows: 1, columns: n), db = Matrix(rows: 1, columns: n)
        grad.geluTanhProduct(a: matrix(1, n, a), b: matrix(1, n, b), dOut: matrix(1, n, dm), da: da, db: db)
        assertClose(da.values, numeric(a) { a in (0..<n).map { dm[$0] * gelu(a[$0]) * b[$0] }.reduce(0, +) }, "GeGLU da")
        assertClose(db.values, numeric(b) { b in (0..<n).map { dm[$0] * gelu(a[$0]) * b[$0] }.reduce(0, +) }, "GeGLU db")
        let g = matrix(1, n, dm)
        grad.geluTanh(a: matrix(1, n, a), grad: g)
        assertClose(g.values, numeric(a) { a in (0..<n).map { dm[$0] * gelu(a[$0]) }.reduce(0, +) }, "GELU")
    }

    func testSoftcap() {
        let n = 10, cap = 5.0
        let x = random(n, scale: 12), dy = random(n)
        let capped = matrix(1, n, x.map { cap * tanh($0 / cap) })
        let g = matrix(1, n, dy)
        grad.softcap(capped: capped, cap: Float(cap), grad: g)
        assertClose(g.values, numeric(x) { x in (0..<n).map { dy[$0] * cap * tanh(x[$0] / cap) }.reduce(0, +) }, "softcap")
    }

    func testRoPE() {
        let (r, hd, heads) = (4, 8, 2), first = 3, theta = 10000.0
        let c = hd * heads
        let x = random(r * c), dy = random(r * c)
        func f(_ x: [Double]) -> Double {
            var total = 0.0
            for i in 0..<r {
                for h in 0..<heads {
                    for k in 0..<(hd / 2) {
                        let angle = Double(first + i) / pow(theta, Double(2 * k) / Double(hd))
                        let b = i * c + h * hd
                        let x1 = x[b + k], x2 = x[b + hd / 2 + k]
                        total += dy[b + k] * (x1 * cos(angle) - x2 * sin(angle)) + dy[b + hd / 2 + k] * (x2 * cos(angle) + x1 * sin(angle))
                    }
                }
            }
            return total
        }
        let g = matrix(r, c, dy)
        grad.rope(g, headDim: hd, firstPosition: first, theta: Float(theta))
        assertClose(g.values, numeric(x, f), "rope")
    }

    func testCrossEntropy() {
        let (r, v) = (3, 9), targets = [2, 0, 8]
        let z = random(r * v, scale: 4)
        let dz = Matrix(rows: r, columns: v)
        let scale = 0.25
        let losses = grad.crossEntropy(logits: matrix(r, v, z), targets: targets, gradScale: Float(scale), into: dz)
        func f(_ z: [Double]) -> Double {
            (0..<r).map { i in
                let row = z[(i * v)..<((i + 1) * v)]
                let m = row.max()!
                return (log(row.map { exp($0 - m) }.reduce(0, +)) + m - z[i * v + targets[i]]) * scale
            }.reduce(0, +)
        }
        assertClose(dz.values, numeric(z, f), "cross-entropy")
        XCTAssertEqual(Double(losses.reduce(0, +)) * scale, f(z), accuracy: 1e-4)
    }

    /// Grouped-query attention with a prefix-LM mask, a sliding window and a softcap.
    func testAttention() {
        let n = 7, heads = 4, kvHeads = 2, d = 4, prefix = 3, window = 3, cap = 2.0, scale = 0.6
        let mask = AttentionMask.prefixLM(prefixLength: prefix, window: window)
        let q = random(n * heads * d), k = random(n * kvHeads * d), v = random(n * kvHeads * d), dOut = random(n * heads * d)
        func f(q: [Double], k: [Double], v: [Double]) -> Double {
            var total = 0.0
            for h in 0..<heads {
                let j = h / (heads / kvHeads)
                for i in 0..<n {
                    var scores: [(Int, Double)] = []
                    for t in 0..<n where mask.allows(query: i, key: t) {
                        var s = 0.0
                        for e in 0..<d { s += q[i * heads * d + h * d + e] * k[t * kvHeads * d + j * d + e] }
                        scores.append((t, cap * tanh(s * scale / cap)))
                    }
                    let m = scores.map(\.1).max()!
                    let sum = scores.map { exp($0.1 - m) }.reduce(0, +)
                    for e in 0..<d {
                        var o = 0.0
                        for (t, s) in scores { o += exp(s - m) / sum * v[t * kvHeads * d + j * d + e] }
                        total += dOut[i * heads * d + h * d + e] * o
                    }
                }
            }
            return total
        }
        let shape = AttentionShape(heads: heads, kvHeads: kvHeads, headDim: d, scale: Float(scale), softcap: Float(cap),
                                   queryStart: 0, keyCount: n)
        let dq = Matrix(rows: n, columns: heads * d), dk = Matrix(rows: n, columns: kvHeads * d), dv = Matrix(rows: n, columns: kvHeads * d)
        grad.attention(queries: matrix(n, heads * d, q), keys: matrix(n, kvHeads * d, k), values: matrix(n, kvHeads * d, v),
                       shape: shape, mask: mask, dOut: matrix(n, heads * d, dOut), dQueries: dq, dKeys: dk, dValues: dv)
        assertClose(dq.values, numeric(q) { f(q: $0, k: k, v: v) }, "attention dQ")
        assertClose(dk.values, numeric(k) { f(q: q, k: $0, v: v) }, "attention dK")
        assertClose(dv.values, numeric(v) { f(q: q, k: k, v: $0) }, "attention dV")
    }
}
