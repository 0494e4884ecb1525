import Dispatch
import Foundation
import Kernels

/// The activations of one SigLIP encoder layer that its backward pass reads.
final class SigLIPLayerActivations {
    let input, normed1, q, k, v, attended, mid, normed2, fc1Out, hidden: Matrix

    init(rows n: Int, config c: VisionConfig) {
        let d = c.hiddenSize, i = c.intermediateSize
        input = Matrix(rows: n, columns: d); normed1 = Matrix(rows: n, columns: d)
        q = Matrix(rows: n, columns: d); k = Matrix(rows: n, columns: d); v = Matrix(rows: n, columns: d)
        attended = Matrix(rows: n, columns: d); mid = Matrix(rows: n, columns: d); normed2 = Matrix(rows: n, columns: d)
        fc1Out = Matrix(rows: n, columns: i); hidden = Matrix(rows: n, columns: i)
    }
}

/// LoRA training through the vision tower (`--train-vision`): SigLIP's forward keeping what its
/// backward needs, the projector, and the backward from the gradient of the image tokens' rows
/// down to the first layer. Implements the expressions of `SigLIPVisionTower.encode`.
final class SigLIPTrainer {
    let tower: SigLIPVisionTower
    let projector: WeightMatrix
    let projectorBias: [Float]
    let adapter: LoRAAdapter
    let backend: ComputeBackend
    /// `layers[l][target]` transposed ([in, out]), and the projector's.
    let transposedLayers: [[VisionTarget: WeightMatrix]]
    let transposedProjector: WeightMatrix
    private let buffers: [UnsafeMutableRawPointer]

    var grad: Gradients { Gradients(backend: backend) }
    var lora: LoRALinear { LoRALinear(backend: backend, scale: adapter.config.scale) }
    var config: VisionConfig { tower.config }

    init(model: PaliGemmaModel, adapter: LoRAAdapter) {
        tower = model.vision
        projector = model.projector
        projectorBias = model.projectorBias
        self.adapter = adapter
        backend = model.backend
        let sources = tower.layers.flatMap { [$0.q, $0.k, $0.v, $0.out, $0.fc1, $0.fc2] } + [model.projector]
        let copies = TransposedWeights.transposeAll(sources)
        buffers = copies.map { UnsafeMutableRawPointer(mutating: $0.data) }
        let targets: [VisionTarget] = [.q, .k, .v, .out, .fc1, .fc2]
        transposedLayers = (0..<tower.layers.count).map { l in
            Dictionary(uniqueKeysWithValues: targets.enumerated().map { ($1, copies[l * 6 + $0]) })
        }
        transposedProjector = copies.last!
    }

    deinit { for b in buffers { b.deallocate() } }

    private var shape: AttentionShape {
        AttentionShape(heads: config.numAttentionHeads, kvHeads: config.numAttentionHeads, headDim: config.headDim,
                       scale: 1 / Float(config.headDim).squareRoot(), softcap: nil, queryStart: 0, keyCount: config.numPatches)
    }

    /// The image's rows for the decoder, keeping every layer's activations and the tower's
    /// output before `post_layernorm`.
    func forward(pixels: [Float]) -> (rows: Matrix, layers: [SigLIPLayerActivations], beforePostNorm: Matrix, features: Matrix) {
        let c = config, n = c.numPatches, d = c.hiddenSize
        let patches = Matrix.patches(chw: pixels, channels: c.numChannels, height: c.imageSize, width: c.imageSize, patch: c.patchSize)
        let x = Matrix(rows: n, columns: d)
        backend.linear(patches, tower.patchEmbedding, bias: tower.patchBias, into: x)
        let positions = Matrix(rows: n, columns: d)
        for r in 0..<n { positions.setRow(r, tower.positionEmbedding.row(r)) }
        backend.add(positions, into: x)
        var kept: [SigLIPLayerActivations] = []
        let projected = Matrix(rows: n, columns: d)
        for (l, layer) in tower.layers.enumerated() {
            let a = SigLIPLayerActivations(rows: n, config: c)
            a.input.copyRows(from: x, count: n, to: 0)
            // x += out_proj(attention(LN1(x)))
            backend.layerNorm(x, gamma: layer.layerNorm1Weight, beta: layer.layerNorm1Bias, eps: c.layerNormEps, into: a.normed1)
            lora.forward(a.normed1, layer.q, bias: layer.qBias, pair: adapter.visionPairs[l][.q], dropout: nil, stream: 0, into: a.q)
            lora.forward(a.normed1, layer.k, bias: layer.kBias, pair: adapter.visionPairs[l][.k], dropout: nil, stream: 0, into: a.k)
            lora.forward(a.normed1, layer.v, bias: layer.vBias, pair: adapter.visionPairs[l][.v], dropout: nil, stream: 0, into: a.v)
            backend.attention(queries: a.q, keys: a.k, values: a.v, shape: shape, mask: .bidirectional, into: a.attended)
            lora.forward(a.attended, layer.out, bias: layer.outBias, pair: adapter.visionPairs[l][.out], dropout: nil, stream: 0, into: projected)
            backend.add(projected, into: x)
            a.mid.copyRows(from: x, count: n, to: 0)
            // x += fc2(gelu_tanh(fc1(LN2(x))))
            backend.layerNorm(x, gamma: layer.layerNorm2Weight, beta: layer.layerNorm2Bias, eps: c.layerNormEps, into: a.normed2)
            lora.forward(a.normed2, layer.fc1, bias: layer.fc1Bias, pair: adapter.visionPairs[l][.fc1], dropout: nil, stream: 0, into: a.fc1Out)
            backend.geluTanh(a.fc1Out, times: nil, into: a.hidden)
            lora.forward(a.hidden, layer.fc2, bias: layer.fc2Bias, pair: adapter.visionPairs[l][.fc2], dropout: nil, stream: 0, into: projected)
            backend.add(projected, into: x)
            kept.append(a)
        }
        let features = Matrix(rows: n, columns: d)
        backend.layerNorm(x, gamma: tower.postLayerNormWeight, beta: tower.postLayerNormBias, eps: c.layerNormEps, into: features)
        let rows = Matrix(rows: n, columns: projector.rows)
        backend.linear(features, projector, bias: projectorBias, into: rows)
        return (rows, kept, x, features)
    }

    /// From the gradient of the image rows, the vision LoRA gradients (into `grads[layer][target]`).
    func backward(dRows: Matrix, layers kept: [SigLIPLayerActivations], beforePostNorm: Matrix,
                  grads: [[VisionTarget: LoRAPair]]) {
        let c = config, n = c.numPatches, d = c.hiddenSize
        // rows = features·Pᵀ + b → dFeatures = dRows·P; features = post_layernorm(x).
        let dFeatures = Matrix(rows: n, columns: d)
        backend.linear(dRows, transposedProjector, bias: nil, into: dFeatures)
        let dx = Matrix(rows: n, columns: d)
        grad.layerNorm(x: beforePostNorm, gamma: tower.postLayerNormWeight, eps: c.layerNormEps, dOut: dFeatures, into: dx)
        let dNormed = Matrix(rows: n, columns: d), part = Matrix(rows: n, columns: d)
        for l in stride(from: tower.layers.count - 1, through: 0, by: -1) {
            let layer = tower.layers[l], a = kept[l], t = transposedLayers[l], g = grads[l], pairs = adapter.visionPairs[l]
            // MLP: x = mid + fc2(gelu(fc1(LN2(mid))))
            let dHidden = Matrix(rows: n, columns: c.intermediateSize)
            lora.backward(a.hidden, dY: dx, transposed: t[.fc2]!, pair: pairs[.fc2], grads: g[.fc2], dropout: nil, stream: 0,
                          dx: dHidden, accumulate: false)
            grad.geluTanh(a: a.fc1Out, grad: dHidden)
            lora.backward(a.normed2, dY: dHidden, transposed: t[.fc1]!, pair: pairs[.fc1], grads: g[.fc1], dropout: nil, stream: 0,
                          dx: dNormed, accumulate: false)
            grad.layerNorm(x: a.mid, gamma: layer.layerNorm2Weight, eps: c.layerNormEps, dOut: dNormed, into: part)
            dx.add(part)
            // Attention: mid = input + out_proj(attention(LN1(input)))
            let dAttended = Matrix(rows: n, columns: d)
            lora.backward(a.attended, dY: dx, transposed: t[.out]!, pair: pairs[.out], grads: g[.out], dropout: nil, stream: 0,
                          dx: dAttended, accumulate: false)
            let dq = Matrix(rows: n, columns: d), dk = Matrix(rows: n, columns: d), dv = Matrix(rows: n, columns: d)
            grad.attention(queries: a.q, keys: a.k, values: a.v, shape: shape, mask: .bidirectional, dOut: dAttended,
                           dQueries: dq, dKeys: dk, dValues: dv)
            lora.backward(a.normed1, dY: dq, transposed: t[.q]!, pair: pairs[.q], grads: g[.q], dropout: nil, stream: 0,
                          dx: dNormed, accumulate: false)
            lora.backward(a.normed1, dY: dk, transposed: t[.k]!, pair: pairs[.k], grads: g[.k], dropout: nil, stream: 0,
                          dx: dNormed, accumulate: true)
            lora.backward(a.normed1, dY: dv, transposed: t[.v]!, pair: pairs[.v], grads: g[.v], dropout: nil, stream: 0,
                          dx: dNormed, accumulate: true)
            if l > 0 {
                grad.layerNorm(x: a.input, gamma: layer.layerNorm1Weight, eps: c.layerNormEps, dOut: dNormed, into: part)
                dx.add(part)
            }
        }
    }
}
