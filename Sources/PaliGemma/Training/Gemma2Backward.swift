import Dispatch
import Foundation
import Kernels

/// The activations of one decoder layer that its backward pass reads, for a whole sequence.
final class LayerActivations {
    let input, normed1, q, k, v, attended, attnOut, mid, normed2, gate, up, product, mlpOut: Matrix

    init(rows n: Int, config c: TextConfig) {
        let h = c.hiddenSize, qd = c.numAttentionHeads * c.headDim, kvd = c.numKeyValueHeads * c.headDim
        input = Matrix(rows: n, columns: h); normed1 = Matrix(rows: n, columns: h)
        q = Matrix(rows: n, columns: qd); k = Matrix(rows: n, columns: kvd); v = Matrix(rows: n, columns: kvd)
        attended = Matrix(rows: n, columns: qd); attnOut = Matrix(rows: n, columns: h)
        mid = Matrix(rows: n, columns: h); normed2 = Matrix(rows: n, columns: h)
        gate = Matrix(rows: n, columns: c.intermediateSize); up = Matrix(rows: n, columns: c.intermediateSize)
        product = Matrix(rows: n, columns: c.intermediateSize); mlpOut = Matrix(rows: n, columns: h)
    }

    /// Floats one layer keeps for `n` tokens (to choose between keeping and recomputing).
    static func floats(rows n: Int, config c: TextConfig) -> Int {
        let qd = c.numAttentionHeads * c.headDim, kvd = c.numKeyValueHeads * c.headDim
        return n * (6 * c.hiddenSize + 2 * qd + 2 * kvd + 3 * c.intermediateSize)
    }
}

/// The frozen matrices transposed ([in, out]), so the input gradient `dY · W` is the backend's
/// `linear(dY, Wᵀ)`: the same kernels as inference. bf16 bases stay bf16 (exact); every other
/// format is widened to float32 (exact for f32 and f16, the dequantized values for q8 and q4).
final class TransposedWeights {
    /// `layers[l][target]`
    let layers: [[LoRATarget: WeightMatrix]]
    let lmHead: WeightMatrix
    private let buffers: [UnsafeMutableRawPointer]

    /// Transposed copies of `sources`, in newly allocated memory the caller frees.
    static func transposeAll(_ sources: [WeightMatrix]) -> [WeightMatrix] {
        let results = sources.map { w -> WeightMatrix in
            let bytes = max(4, w.rows * w.columns * (w.format == .bf16 ? 2 : 4))
            return WeightMatrix(format: w.format == .bf16 ? .bf16 : .f32, rows: w.columns, columns: w.rows,
                                data: UnsafeRawPointer(UnsafeMutableRawPointer.allocate(byteCount: bytes, alignment: 64)))
        }
        // The matrices are independent: transpose them on every core.
        DispatchQueue.concurrentPerform(iterations: sources.count) { i in
            transpose(sources[i], into: UnsafeMutableRawPointer(mutating: results[i].data))
        }
        return results
    }

    init(decoder: Gemma2Decoder) {
        let sources = decoder.layers.flatMap { [$0.q, $0.k, $0.v, $0.o, $0.gate, $0.up, $0.down] } + [decoder.lmHead]
        let results = Self.transposeAll(sources)
        buffers = results.map { UnsafeMutableRawPointer(mutating: $0.data) }
        let targets: [LoRATarget] = [.q, .k, .v, .o, .gate, .up, .down]
        layers = (0..<decoder.layers.count).map { l in
            Dictionary(uniqueKeysWithValues: targets.enumerated().map { ($1, results[l * 7 + $0]) })
        }
        lmHead = results.last!
    }

    /// `w` [rows, cols] into `out` [cols, rows]: bf16 copied bit for bit, other formats widened to float32;
    /// 64×64 tiles keep reads and writes in cache.
    private static func transpose(_ w: WeightMatrix, into out: UnsafeMutableRawPointer) {
        let (rows, cols) = (w.rows, w.columns)
        let tile = 64
        if w.format == .bf16 {
            let src = w.data.assumingMemoryBound(to: UInt16.self), dst = out.assumingMemoryBound(to: UInt16.self)
            for r0 in stride(from: 0, to: rows, by: tile) {
                for c0 in stride(from: 0, to: cols, by: tile) {
                    for r in r0..<min(r0 + tile, rows) {
                        for c in c0..<min(c0 + tile, cols) { dst[c * rows + r] = src[r * cols + c] }
                    }
                }
            }
        } else {
            let dst = out.assumingMemoryBound(to: Float.self)
            let block = UnsafeMutablePointer<Float>.allocate(capacity: tile * cols)
            defer { block.deallocate() }
            for r0 in stride(from: 0, to: rows, by: tile) {
                let n = min(tile, rows - r0)
                for i in 0..<n { w.convertRow(r0 + i, into: block + i * cols) }
                for c0 in stride(from: 0, to: cols, by: tile) {
                    for i in 0..<n {
                        for c in c0..<min(c0 + tile, cols) { dst[c * rows + r0 + i] = block[i * cols + c] }
                    }
                }
            }
        }
    }

    deinit { for b in buffers { b.deallocate() } }
}

/// LoRA's gradients, shaped as the adapter's pairs.
final class LoRAGradients {
    let pairs: [[LoRATarget: LoRAPair]]
    /// Of the trainable token rows.
    let tokens: Matrix?
    /// Of the vision tower's pairs.
    let visionPairs: [[VisionTarget: LoRAPair]]

    init(like adapter: LoRAAdapter) {
        pairs = adapter.pairs.map { byTarget in
            byTarget.mapValues { LoRAPair(a: Matrix(rows: $0.a.rows, columns: $0.a.columns),
                                          b: Matrix(rows: $0.b.rows, columns: $0.b.columns)) }
        }
        tokens = adapter.tokens.map { Matrix(rows: $0.rows.rows, columns: $0.rows.columns) }
        visionPairs = adapter.visionPairs.map { byTarget in
            byTarget.mapValues { LoRAPair(a: Matrix(rows: $0.a.rows, columns: $0.a.columns),
                                          b: Matrix(rows: $0.b.rows, columns: $0.b.columns)) }
        }
    }

    func zero() {
        for byTarget in pairs { for p in byTarget.values { p.a.zero(); p.b.zero() } }
        for byTarget in visionPairs { for p in byTarget.values { p.a.zero(); p.b.zero() } }
        tokens?.zero()
    }

    /// Every gradient matrix in `LoRAAdapter.parameters`' order.
    func matrices(for adapter: LoRAAdapter) -> [Matrix] {
        adapter.orderedPairs.flatMap { [pairs[$0.layer][$0.target]!.a, pairs[$0.layer][$0.target]!.b] }
            + adapter.orderedVisionPairs.flatMap { [visionPairs[$0.layer][$0.target]!.a, visionPairs[$0.layer][$0.target]!.b] }
            + (tokens.map { [$0] } ?? [])
    }
}

/// Which elements LoRA's dropout keeps: a pure function of (seed, call, element), so the
/// backward pass regenerates the forward's mask instead of storing it.
struct DropoutMask {
    let probability: Float
    let seed: UInt64

    /// `out = x · keep / (1 − p)` for the mask of `stream`.
    func apply(_ x: Matrix, stream: UInt64, into out: Matrix) {
        out.setRows(x.rows)
        let n = x.rows * x.columns, keepScale = 1 / (1 - probability)
        // One 64-bit hash decides two elements (32 bits each).
        let threshold = UInt32(min(Double(probability) * 0x1p32, Double(UInt32.max)))
        let xs = x.storage, os = out.storage
        var i = 0
        while i < n {
            var z = seed &+ stream &* 0x9E37_79B9_7F4A_7C15 &+ UInt64(i >> 1) &* 0xD1B5_4A32_D192_ED03
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            z ^= z >> 31
            os[i] = UInt32(truncatingIfNeeded: z) < threshold ? 0 : xs[i] * keepScale
            if i + 1 < n { os[i + 1] = UInt32(truncatingIfNeeded: z >> 32) < threshold ? 0 : xs[i + 1] * keepScale }
            i += 2
        }
    }
}

/// A frozen linear layer with a LoRA pair: the forward and its backward.
struct LoRALinear {
    let backend: ComputeBackend
    let scale: Float
    var grad: Gradients { Gradients(backend: backend) }

    /// `y = x·Wᵀ + bias + s·(drop(x)·Aᵀ)·Bᵀ`.
    func forward(_ x: Matrix, _ w: WeightMatrix, bias: [Float]?, pair: LoRAPair?, dropout: DropoutMask?,
                 stream: UInt64, into y: Matrix) {
        backend.linear(x, w, bias: bias, into: y)
        guard let pair else { return }
        let input: Matrix
        if let dropout, dropout.probability > 0 {
            input = Matrix(rows: x.rows, columns: x.columns)
            dropout.apply(x, stream: stream, into: input)
        } else {
            input = x
        }
        let t = Matrix(rows: x.rows, columns: pair.a.rows)
        grad.product(input, pair.a, into: t)
        let u = Matrix(rows: x.rows, columns: y.columns)
        grad.product(t, pair.b, into: u)
        y.add(u, scale: scale)
    }

    /// Backward of `forward`: the pair's gradients into `grads`, and `dx` (+)= dY·W + LoRA's part,
    /// `W`'s product taken with its transposed copy.
    func backward(_ x: Matrix, dY: Matrix, transposed: WeightMatrix, pair: LoRAPair?, grads g: LoRAPair?,
                  dropout: DropoutMask?, stream: UInt64, dx: Matrix?, accumulate: Bool) {
        if let dx {
            if accumulate {
                let part = Matrix(rows: dY.rows, columns: dx.columns)
                backend.linear(dY, transposed, bias: nil, into: part)
                dx.add(part)
            } else {
                backend.linear(dY, transposed, bias: nil, into: dx)
            }
        }
        guard let pair, let g else { return }
        let s = scale
        let n = x.rows, r = pair.a.rows
        var input = x
        if let dropout, dropout.probability > 0 {
            input = Matrix(rows: n, columns: x.columns)
            dropout.apply(x, stream: stream, into: input)
        }
        let t = Matrix(rows: n, columns: r)
        grad.product(input, pair.a, into: t)
        // dB += s · dYᵀ t
        let dB = Matrix(rows: pair.b.rows, columns: r)
        grad.product(dY.transposed(), t.transposed(), into: dB)
        g.b.add(dB, scale: s)
        // dt = s · dY B
        let dt = Matrix(rows: n, columns: r)
        grad.product(dY, pair.b.transposed(), into: dt)
        dt.add(dt, scale: s - 1)
        // dA += dtᵀ · drop(x)
        let dA = Matrix(rows: r, columns: x.columns)
        grad.product(dt.transposed(), input.transposed(), into: dA)
        g.a.add(dA)
        // dx += mask ⊙ (dt A) / (1 − p)
        if let dx {
            let part = Matrix(rows: n, columns: x.columns)
            grad.product(dt, pair.a.transposed(), into: part)
            if let dropout, dropout.probability > 0 {
                let masked = Matrix(rows: n, columns: x.columns)
                dropout.apply(part, stream: stream, into: masked)
                dx.add(masked)
            } else {
                dx.add(part)
            }
        }
    }
}

/// One training pass over a sequence: the decoder's forward with LoRA (and its dropout), keeping
/// what backward needs, then the backward pass accumulating LoRA gradients. Everything else is
/// frozen. Implements the same expressions as `Gemma2Decoder.forward` for a whole sequence.
struct Gemma2Trainer {
    let decoder: Gemma2Decoder
    let adapter: LoRAAdapter
    let transposed: TransposedWeights
    let backend: ComputeBackend
    var grad: Gradients { Gradients(backend: backend) }
    var config: TextConfig { decoder.config }

    private var lora: LoRALinear { LoRALinear(backend: backend, scale: adapter.config.scale) }

    private func adaptedLinear(_ x: Matrix, layer l: Int, _ target: LoRATarget, _ w: WeightMatrix,
                               dropout: DropoutMask?, stream: UInt64, into y: Matrix) {
        lora.forward(x, w, bias: nil, pair: adapter.pairs[l][target], dropout: dropout, stream: stream, into: y)
    }

    private func adaptedLinearBackward(_ x: Matrix, dY: Matrix, layer l: Int, _ target: LoRATarget,
                                       dropout: DropoutMask?, stream: UInt64, grads: LoRAGradients,
                                       dx: Matrix?, accumulate: Bool) {
        lora.backward(x, dY: dY, transposed: transposed.layers[l][target]!, pair: adapter.pairs[l][target],
                      grads: grads.pairs[l][target], dropout: dropout, stream: stream, dx: dx, accumulate: accumulate)
    }

    private func stream(_ base: UInt64, _ l: Int, _ t: LoRATarget) -> UInt64 {
        base &* 1_000_003 &+ UInt64(l) &* 16 &+ UInt64(LoRATarget.allCases.firstIndex(of: t)!)
    }

    private func shape(rows n: Int) -> AttentionShape {
        AttentionShape(heads: config.numAttentionHeads, kvHeads: config.numKeyValueHeads, headDim: config.headDim,
                       scale: 1 / config.queryPreAttnScalar.squareRoot(), softcap: config.attnLogitSoftcapping,
                       queryStart: 0, keyCount: n)
    }

    private func mask(layer l: Int, prefixLength: Int) -> AttentionMask {
        .prefixLM(prefixLength: prefixLength, window: decoder.layers[l].sliding ? config.slidingWindow : nil)
    }

    /// `x += post_norm(out)` (Gemma 2), or `x += out` without a post norm (Gemma 1).
    private func addResidual(_ out: Matrix, postNorm: [Float]?, into x: Matrix) {
        guard let postNorm else { return backend.add(out, into: x) }
        let normed = Matrix(rows: out.rows, columns: out.columns)
        backend.rmsNorm(out, weight: postNorm, weightOffset: 1, eps: config.rmsNormEps, into: normed)
        backend.add(normed, into: x)
    }

    /// The gradient reaching a sublayer's output `out` from the residual stream's `dOut`.
    private func residualBackward(_ out: Matrix, postNorm: [Float]?, dOut: Matrix) -> Matrix {
        let d = Matrix(rows: out.rows, columns: out.columns)
        if let postNorm {
            grad.rmsNorm(x: out, weight: postNorm, weightOffset: 1, eps: config.rmsNormEps, dOut: dOut, into: d, assign: true)
        } else {
            d.copyRows(from: dOut, count: out.rows, to: 0)
        }
        return d
    }

    /// Layer `l` over the sequence in `x` (updated in place to the layer's output), keeping its activations.
    func forward(layer l: Int, x: Matrix, prefixLength: Int, keep a: LayerActivations, dropout: DropoutMask?, stream base: UInt64) {
        let layer = decoder.layers[l], c = config, n = x.rows
        a.input.copyRows(from: x, count: n, to: 0)
        // h = x + post_attention_layernorm(o_proj(attn(rope(q), rope(k), v))), on input_layernorm(x)
        backend.rmsNorm(x, weight: layer.inputNorm, weightOffset: 1, eps: c.rmsNormEps, into: a.normed1)
        adaptedLinear(a.normed1, layer: l, .q, layer.q, dropout: dropout, stream: stream(base, l, .q), into: a.q)
        adaptedLinear(a.normed1, layer: l, .k, layer.k, dropout: dropout, stream: stream(base, l, .k), into: a.k)
        adaptedLinear(a.normed1, layer: l, .v, layer.v, dropout: dropout, stream: stream(base, l, .v), into: a.v)
        backend.rope(a.q, headDim: c.headDim, firstPosition: 1, theta: c.ropeTheta)
        backend.rope(a.k, headDim: c.headDim, firstPosition: 1, theta: c.ropeTheta)
        backend.attention(queries: a.q, keys: a.k, values: a.v, shape: shape(rows: n),
                          mask: mask(layer: l, prefixLength: prefixLength), into: a.attended)
        adaptedLinear(a.attended, layer: l, .o, layer.o, dropout: dropout, stream: stream(base, l, .o), into: a.attnOut)
        addResidual(a.attnOut, postNorm: layer.postAttentionNorm, into: x)
        a.mid.copyRows(from: x, count: n, to: 0)
        // out = h + post_feedforward_layernorm(down(gelu_tanh(gate(m)) · up(m))), m = pre_feedforward_layernorm(h)
        backend.rmsNorm(x, weight: layer.preFeedforwardNorm, weightOffset: 1, eps: c.rmsNormEps, into: a.normed2)
        adaptedLinear(a.normed2, layer: l, .gate, layer.gate, dropout: dropout, stream: stream(base, l, .gate), into: a.gate)
        adaptedLinear(a.normed2, layer: l, .up, layer.up, dropout: dropout, stream: stream(base, l, .up), into: a.up)
        backend.geluTanh(a.gate, times: a.up, into: a.product)
        adaptedLinear(a.product, layer: l, .down, layer.down, dropout: dropout, stream: stream(base, l, .down), into: a.mlpOut)
        addResidual(a.mlpOut, postNorm: layer.postFeedforwardNorm, into: x)
    }

    /// Backward of layer `l`: `dx` holds the gradient of the layer's output and becomes the
    /// gradient of its input (left unchanged beyond the residual when `needInput` is false, for layer 0).
    func backward(layer l: Int, _ a: LayerActivations, dx: Matrix, prefixLength: Int, dropout: DropoutMask?,
                  stream base: UInt64, grads: LoRAGradients, needInput: Bool) {
        let layer = decoder.layers[l], c = config, n = a.input.rows
        let h = c.hiddenSize, inter = c.intermediateSize
        // MLP block: out = mid + norm_pff(mlpOut)
        let dMlpOut = residualBackward(a.mlpOut, postNorm: layer.postFeedforwardNorm, dOut: dx)
        let dProduct = Matrix(rows: n, columns: inter)
        adaptedLinearBackward(a.product, dY: dMlpOut, layer: l, .down, dropout: dropout, stream: stream(base, l, .down),
                              grads: grads, dx: dProduct, accumulate: false)
        let dGate = Matrix(rows: n, columns: inter), dUp = Matrix(rows: n, columns: inter)
        grad.geluTanhProduct(a: a.gate, b: a.up, dOut: dProduct, da: dGate, db: dUp)
        let dNormed2 = Matrix(rows: n, columns: h)
        adaptedLinearBackward(a.normed2, dY: dGate, layer: l, .gate, dropout: dropout, stream: stream(base, l, .gate),
                              grads: grads, dx: dNormed2, accumulate: false)
        adaptedLinearBackward(a.normed2, dY: dUp, layer: l, .up, dropout: dropout, stream: stream(base, l, .up),
                              grads: grads, dx: dNormed2, accumulate: true)
        grad.rmsNorm(x: a.mid, weight: layer.preFeedforwardNorm, weightOffset: 1, eps: c.rmsNormEps, dOut: dNormed2, into: dx)
        // Attention block: mid = input + norm_pa(attnOut)
        let dAttnOut = residualBackward(a.attnOut, postNorm: layer.postAttentionNorm, dOut: dx)
        let dAttended = Matrix(rows: n, columns: a.attended.columns)
        adaptedLinearBackward(a.attended, dY: dAttnOut, layer: l, .o, dropout: dropout, stream: stream(base, l, .o),
                              grads: grads, dx: dAttended, accumulate: false)
        let dq = Matrix(rows: n, columns: a.q.columns), dk = Matrix(rows: n, columns: a.k.columns)
        let dv = Matrix(rows: n, columns: a.v.columns)
        grad.attention(queries: a.q, keys: a.k, values: a.v, shape: shape(rows: n),
                       mask: mask(layer: l, prefixLength: prefixLength), dOut: dAttended, dQueries: dq, dKeys: dk, dValues: dv)
        grad.rope(dq, headDim: c.headDim, firstPosition: 1, theta: c.ropeTheta)
        grad.rope(dk, headDim: c.headDim, firstPosition: 1, theta: c.ropeTheta)
        let dNormed1: Matrix? = needInput ? Matrix(rows: n, columns: h) : nil
        adaptedLinearBackward(a.normed1, dY: dq, layer: l, .q, dropout: dropout, stream: stream(base, l, .q),
                              grads: grads, dx: dNormed1, accumulate: false)
        adaptedLinearBackward(a.normed1, dY: dk, layer: l, .k, dropout: dropout, stream: stream(base, l, .k),
                              grads: grads, dx: dNormed1, accumulate: true)
        adaptedLinearBackward(a.normed1, dY: dv, layer: l, .v, dropout: dropout, stream: stream(base, l, .v),
                              grads: grads, dx: dNormed1, accumulate: true)
        if let dNormed1 {
            grad.rmsNorm(x: a.input, weight: layer.inputNorm, weightOffset: 1, eps: c.rmsNormEps, dOut: dNormed1, into: dx)
        }
    }

    /// One sequence: forward, loss on `targets` (the ids at positions `firstTarget …`, each
    /// predicted from the position before), backward into `grads`, with gradients scaled by
    /// `gradScale` (1 / the step's labelled tokens). Returns the sum of the token losses.
    func lossAndGradients(ids: [Int], embeddings x: Matrix, prefixLength: Int, firstTarget: Int, targets: [Int],
                          gradScale: Float, dropout: DropoutMask?, stream: UInt64, grads: LoRAGradients,
                          keepAll: Bool, inputGradient: Matrix? = nil) -> Float {
        let n = x.rows, c = config, layers = decoder.layers.count
        precondition(firstTarget >= 1 && firstTarget + targets.count == n, "targets must end the sequence")
        // Kept activations hold each layer's input; otherwise the inputs alone are kept, to replay.
        let inputs = keepAll ? [] : (0..<layers).map { _ in Matrix(rows: n, columns: c.hiddenSize) }
        var kept: [LayerActivations] = []
        let scratch = keepAll ? nil : LayerActivations(rows: n, config: c)
        for l in 0..<layers {
            if !keepAll { inputs[l].copyRows(from: x, count: n, to: 0) }
            let acts = scratch ?? LayerActivations(rows: n, config: c)
            forward(layer: l, x: x, prefixLength: prefixLength, keep: acts, dropout: dropout, stream: stream)
            if keepAll { kept.append(acts) }
        }
        // Logits for the rows that predict targets: final norm → lm_head → softcap → cross-entropy.
        let s = targets.count
        let hidden = Matrix(rows: s, columns: c.hiddenSize)
        hidden.copyRows(from: x, sourceRow: firstTarget - 1, count: s, to: 0)
        let normed = Matrix(rows: s, columns: c.hiddenSize)
        backend.rmsNorm(hidden, weight: decoder.finalNorm, weightOffset: 1, eps: c.rmsNormEps, into: normed)
        let logits = Matrix(rows: s, columns: c.vocabSize)
        backend.linear(normed, decoder.lmHead, bias: nil, into: logits)
        decoder.patchTokenLogits(normed: normed, logits: logits)
        if let cap = c.finalLogitSoftcapping { backend.softcap(logits, cap: cap) }
        let dLogits = Matrix(rows: s, columns: c.vocabSize)
        let losses = grad.crossEntropy(logits: logits, targets: targets, gradScale: gradScale, into: dLogits)
        if let cap = c.finalLogitSoftcapping { grad.softcap(capped: logits, cap: cap, grad: dLogits) }
        let dNormed = Matrix(rows: s, columns: c.hiddenSize)
        backend.linear(dLogits, transposed.lmHead, bias: nil, into: dNormed)
        let tokens = adapter.tokens, tied = decoder.lmHeadTied
        if let tokens, tied, let g = grads.tokens {
            // Trained rows replace lm_head's: dNormed uses them, and they get dLogits[:, id] ⊗ normed.
            let original = UnsafeMutablePointer<Float>.allocate(capacity: c.hiddenSize)
            defer { original.deallocate() }
            for (j, id) in tokens.ids.enumerated() {
                decoder.lmHead.convertRow(id, into: original)
                let row = tokens.rows.rowPointer(j), gj = g.rowPointer(j)
                for r in 0..<s {
                    let d = dLogits[r, id]
                    guard d != 0 else { continue }
                    let dn = dNormed.rowPointer(r), nr = normed.rowPointer(r)
                    for col in 0..<c.hiddenSize {
                        dn[col] += d * (row[col] - original[col])
                        gj[col] += d * nr[col]
                    }
                }
            }
        }
        let dHidden = Matrix(rows: s, columns: c.hiddenSize)
        grad.rmsNorm(x: hidden, weight: decoder.finalNorm, weightOffset: 1, eps: c.rmsNormEps, dOut: dNormed, into: dHidden, assign: true)
        let dx = Matrix(rows: n, columns: c.hiddenSize)
        dx.copyRows(from: dHidden, count: s, to: firstTarget - 1)
        for l in stride(from: layers - 1, through: 0, by: -1) {
            let acts: LayerActivations
            if keepAll {
                acts = kept[l]
            } else {
                acts = scratch!
                let replay = Matrix(rows: n, columns: c.hiddenSize)
                replay.copyRows(from: inputs[l], count: n, to: 0)
                forward(layer: l, x: replay, prefixLength: prefixLength, keep: acts, dropout: dropout, stream: stream)
            }
            backward(layer: l, acts, dx: dx, prefixLength: prefixLength, dropout: dropout, stream: stream,
                     grads: grads, needInput: l > 0 || tokens != nil || inputGradient != nil)
        }
        inputGradient?.copyRows(from: dx, count: n, to: 0)
        // Trained input rows: x = row · embed_scale, so d row = embed_scale · dx at each of its positions.
        if let tokens, let g = grads.tokens {
            for (p, id) in ids.enumerated() {
                guard let j = tokens.index[id] else { continue }  // never the image token (LoRATrainer refuses it)
                let src = dx.rowPointer(p), dst = g.rowPointer(j)
                for col in 0..<c.hiddenSize { dst[col] += decoder.embedScale * src[col] }
            }
        }
        return losses.reduce(0, +)
    }
}
