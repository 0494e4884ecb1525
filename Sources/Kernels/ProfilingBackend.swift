import Dispatch
import Foundation

/// Wraps a backend and adds up the wall time spent in each operation, so a benchmark can say
/// where the time goes. Adds one clock read per call; not for production runs.
// @unchecked Sendable: the totals are only touched under `lock`, and `inner` is Sendable.
public final class ProfilingBackend: ComputeBackend, @unchecked Sendable {
    public let inner: ComputeBackend
    private var seconds: [String: Double] = [:]
    private var calls: [String: Int] = [:]
    private let lock = NSLock()

    public init(_ inner: ComputeBackend) { self.inner = inner }
    public var name: String { inner.name + ", profiled" }

    @inline(__always)
    private func timed(_ op: String, _ body: () -> Void) {
        let t0 = DispatchTime.now().uptimeNanoseconds
        body()
        let elapsed = Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9
        lock.withLock {
            seconds[op, default: 0] += elapsed
            calls[op, default: 0] += 1
        }
    }

    /// (operation, seconds, calls), slowest first.
    public var breakdown: [(op: String, seconds: Double, calls: Int)] {
        lock.withLock { seconds.map { ($0.key, $0.value, calls[$0.key] ?? 0) } }.sorted { $0.1 > $1.1 }
    }

    public func reset() {
        lock.withLock {
            seconds = [:]
            calls = [:]
        }
    }

    public func linear(_ x: Matrix, _ weight: WeightMatrix, bias: [Float]?, into out: Matrix) {
        timed(x.rows == 1 ? "linear (1 row)" : "linear (many rows)") { inner.linear(x, weight, bias: bias, into: out) }
    }
    public func linearEachRow(_ x: Matrix, _ weight: WeightMatrix, into out: Matrix) -> Bool {
        var done = false
        timed("linear (rows of several sequences)") { done = inner.linearEachRow(x, weight, into: out) }
        return done
    }
    public func layerNorm(_ x: Matrix, gamma: [Float], beta: [Float], eps: Float, into out: Matrix) {
        timed("layerNorm") { inner.layerNorm(x, gamma: gamma, beta: beta, eps: eps, into: out) }
    }
    public func rmsNorm(_ x: Matrix, weight: [Float], weightOffset: Float, eps: Float, into out: Matrix) {
        timed("rmsNorm") { inner.rmsNorm(x, weight: weight, weightOffset: weightOffset, eps: eps, into: out) }
    }
    public func geluTanh(_ a: Matrix, times b: Matrix?, into out: Matrix) {
        timed("geluTanh") { inner.geluTanh(a, times: b, into: out) }
    }
    public func add(_ y: Matrix, into x: Matrix) { timed("add") { inner.add(y, into: x) } }
    public func softcap(_ x: Matrix, cap: Float) { timed("softcap") { inner.softcap(x, cap: cap) } }
    public func rope(_ x: Matrix, headDim: Int, firstPosition: Int, theta: Float) {
        timed("rope") { inner.rope(x, headDim: headDim, firstPosition: firstPosition, theta: theta) }
    }
    public func attention(queries: Matrix, keys: Matrix, values: Matrix, shape: AttentionShape,
                          mask: AttentionMask, into out: Matrix) {
        timed("attention") { inner.attention(queries: queries, keys: keys, values: values, shape: shape, mask: mask, into: out) }
    }
    public func embed(_ ids: [Int], table: WeightMatrix, scale: Float, into out: Matrix) {
        timed("embed") { inner.embed(ids, table: table, scale: scale, into: out) }
    }
}
