import Foundation
import Kernels
import SafeTensors

/// AdamW with decoupled weight decay, as `torch.optim.AdamW` steps:
/// `p ← p·(1 − lr·wd)`, `m ← β₁m + (1−β₁)g`, `v ← β₂v + (1−β₂)g²`,
/// `p ← p − lr/(1−β₁ᵗ) · m / (√v/√(1−β₂ᵗ) + ε)`.
struct AdamW {
    var beta1: Float = 0.9
    var beta2: Float = 0.999
    var eps: Float = 1e-8
    var weightDecay: Float
    /// Steps taken (t).
    var steps = 0
    /// First and second moments, one pair of matrices per parameter matrix, in the adapter's order.
    var moments: [(m: Matrix, v: Matrix)]

    init(parameters: [Matrix], weightDecay: Float) {
        self.weightDecay = weightDecay
        moments = parameters.map { (Matrix(rows: $0.rows, columns: $0.columns), Matrix(rows: $0.rows, columns: $0.columns)) }
    }

    mutating func step(parameters: [Matrix], gradients: [Matrix], learningRate lr: Float) {
        precondition(parameters.count == moments.count && gradients.count == moments.count)
        steps += 1
        let c1 = 1 - pow(beta1, Float(steps)), c2 = (1 - pow(beta2, Float(steps))).squareRoot()
        let stepSize = lr / c1
        for (i, p) in parameters.enumerated() {
            let g = gradients[i].storage, m = moments[i].m.storage, v = moments[i].v.storage, w = p.storage
            for j in 0..<(p.rows * p.columns) {
                w[j] *= 1 - lr * weightDecay
                m[j] = beta1 * m[j] + (1 - beta1) * g[j]
                v[j] = beta2 * v[j] + (1 - beta2) * g[j] * g[j]
                w[j] -= stepSize * m[j] / (v[j].squareRoot() / c2 + eps)
            }
        }
    }

    /// `torch.nn.utils.clip_grad_norm_`: scales every gradient by `min(1, maxNorm / (norm + 1e-6))`
    /// where norm is the 2-norm of all gradients together. Returns the norm before clipping.
    static func clip(_ gradients: [Matrix], maxNorm: Float) -> Float {
        // torch: the norm of the per-tensor norms.
        var total: Float = 0
        for g in gradients {
            var s: Float = 0
            for j in 0..<(g.rows * g.columns) { s += g.storage[j] * g.storage[j] }
            total += s
        }
        let norm = total.squareRoot()
        let coef = min(1, maxNorm / (norm + 1e-6))
        if coef < 1 { for g in gradients { for j in 0..<(g.rows * g.columns) { g.storage[j] *= coef } } }
        return norm
    }

    /// The moments and the step count as safetensors entries (for checkpoints).
    func save(to url: URL) throws {
        var writer = SafeTensorsWriter()
        writer.metadata = ["steps": String(steps)]
        for (i, (m, v)) in moments.enumerated() {
            writer.add("m.\(i)", shape: [m.rows, m.columns], floats: m.values)
            writer.add("v.\(i)", shape: [v.rows, v.columns], floats: v.values)
        }
        try writer.write(to: url)
    }

    mutating func load(from url: URL) throws {
        let file = try SafeTensorsFile(path: url.path)
        guard let s = file.metadata["steps"], let n = Int(s), n >= 0 else {
            throw LoRAError.adapterFile(path: url.path, reason: "optimizer state lacks its step count")
        }
        for (i, (m, v)) in moments.enumerated() {
            guard let tm = file.tensors["m.\(i)"], let tv = file.tensors["v.\(i)"],
                  tm.shape == [m.rows, m.columns], tv.shape == [v.rows, v.columns] else {
                throw LoRAError.adapterFile(path: url.path, reason: "optimizer state does not match the adapter (moment \(i))")
            }
            m.setValues(try tm.floats())
            v.setValues(try tv.floats())
        }
        steps = n
    }
}

/// Learning rate at optimizer step `step` (0-based): linear warm-up from 0, then cosine decay to 0
/// at `total` (transformers' `get_cosine_schedule_with_warmup`).
func cosineSchedule(step: Int, warmup: Int, total: Int, peak: Float) -> Float {
    if step < warmup { return peak * Float(step) / Float(max(1, warmup)) }
    let progress = Double(step - warmup) / Double(max(1, total - warmup))
    return peak * Float(max(0, 0.5 * (1 + cos(Double.pi * progress))))
}

extension Matrix {
    /// Overwrites the active rows with `values` (row-major, rows × columns).
    func setValues(_ values: [Float]) {
        precondition(values.count == rows * columns, "value count mismatch")
        values.withUnsafeBufferPointer { storage.update(from: $0.baseAddress!, count: values.count) }
    }
}
