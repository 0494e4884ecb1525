import Foundation

/// Errors from building the decoder and from decoding.
public enum MaskDecoderError: Error, Equatable, CustomStringConvertible, Sendable {
    /// An array has a shape that does not fit the decoder (`expected` uses −1 for "any").
    case wrongShape(key: String, expected: [Int], actual: [Int])
    case notFloatingPoint(key: String, dtype: String)
    case wrongCodeCount(expected: Int, actual: Int)
    case invalidCode(position: Int, code: Int, codebookSize: Int)
    case wrongMaskSize(expected: Int, actual: Int)
    case invalidImageSize(width: Int, height: Int)
    case invalidRunLengths(reason: String)

    public var description: String {
        switch self {
        case .wrongShape(let k, let e, let a):
            let show = { (s: [Int]) in "(" + s.map { $0 < 0 ? "*" : String($0) }.joined(separator: ", ") + ")" }
            return "vae: '\(k)' has shape \(show(a)), expected \(show(e))"
        case .notFloatingPoint(let k, let d): return "vae: '\(k)' has dtype \(d), expected floating point"
        case .wrongCodeCount(let e, let a): return "mask: expected \(e) <seg> codes, got \(a)"
        case .invalidCode(let p, let c, let n): return "mask: code \(c) at position \(p) is outside 0..<\(n)"
        case .wrongMaskSize(let e, let a): return "mask: expected \(e) values (64×64), got \(a)"
        case .invalidImageSize(let w, let h): return "mask: invalid image size \(w)×\(h)"
        case .invalidRunLengths(let r): return "rle: \(r)"
        }
    }
}

/// big_vision's VQ-VAE mask decoder (`vae-oid.npz`): 16 `<seg>` codes (a 4×4 grid, row-major) →
/// codebook rows → Conv1×1(D→128)+ReLU → 2 residual blocks (x + Conv1×1(ReLU(Conv3×3(ReLU(Conv3×3(x)))))) →
/// 4 × [ConvTranspose(k4, s2, p1) + ReLU] (128→128→64→32→16) → Conv1×1(16→1) → 64×64 logits in about [−1, 1].
///
/// Plain Swift, float32, activations stored pixel-major (HWC) so every inner loop runs over contiguous
/// output channels. The embedding width D and all channel widths are read from the file.
public struct VQVAEMaskDecoder: Sendable {
    /// Number of codebook entries (128 for vae-oid).
    public let codebookSize: Int
    /// Codebook vector width D.
    public let embeddingWidth: Int
    /// Channel widths: hidden (128), then the four transposed-conv outputs (128, 64, 32, 16).
    public let channelWidths: [Int]

    public static let codesPerMask = 16
    public static let gridSide = 4
    public static let maskSide = 64

    private let codebook: [Float]  // (K, D)
    private let inputConv: Conv
    private let resBlocks: [(Conv, Conv, Conv)]
    private let upsamples: [Conv]
    private let outputConv: Conv

    /// Loads the decoder from a `vae-oid.npz`-layout file.
    public init(npz url: URL) throws {
        let npz = try NpzArchive(url: url)

        func load(_ key: String, _ expected: [Int]) throws -> (values: [Float], shape: [Int]) {
            let a = try npz.array(key)
            guard a.dtype.isFloatingPoint else {
                throw MaskDecoderError.notFloatingPoint(key: key, dtype: a.dtype.rawValue)
            }
            let fits = a.shape.count == expected.count
                && zip(a.shape, expected).allSatisfy { $0.1 < 0 ? $0.0 > 0 : $0.0 == $0.1 }
            guard fits else { throw MaskDecoderError.wrongShape(key: key, expected: expected, actual: a.shape) }
            return (a.floats(), a.shape)
        }

        let cb = try load("_vq_vae._embedding", [-1, -1])
        let k = cb.shape[0], d = cb.shape[1]
        let w0 = try load("decoder.0.weight", [-1, d, 1, 1])
        let hidden = w0.shape[0]
        let b0 = try load("decoder.0.bias", [hidden])

        var blocks: [(Conv, Conv, Conv)] = []
        for block in [2, 3] {
            var convs: [Conv] = []
            for (layer, kernel) in [(0, 3), (2, 3), (4, 1)] {
                let name = "decoder.\(block).net.\(layer)"
                let w = try load(name + ".weight", [hidden, hidden, kernel, kernel])
                let b = try load(name + ".bias", [hidden])
                convs.append(Conv(conv: w.values, bias: b.values, cin: hidden, cout: hidden, kernel: kernel))
            }
            blocks.append((convs[0], convs[1], convs[2]))
        }

        var widths = [hidden]
        var ups: [Conv] = []
        var cin = hidden
        for layer in [4, 6, 8, 10] {
            let name = "decoder.\(layer)"
            let w = try load(name + ".weight", [cin, -1, 4, 4])  // ConvTranspose2d: (in, out, kh, kw)
            let cout = w.shape[1]
            let b = try load(name + ".bias", [cout])
            ups.append(Conv(transposed: w.values, bias: b.values, cin: cin, cout: cout))
            widths.append(cout)
            cin = cout
        }
        let w12 = try load("decoder.12.weight", [1, cin, 1, 1])
        let b12 = try load("decoder.12.bias", [1])

        codebookSize = k
        embeddingWidth = d
        channelWidths = widths
        codebook = cb.values
        inputConv = Conv(conv: w0.values, bias: b0.values, cin: d, cout: hidden, kernel: 1)
        resBlocks = blocks
        upsamples = ups
        outputConv = Conv(conv: w12.values, bias: b12.values, cin: cin, cout: 1, kernel: 1)
    }

    /// Decodes 16 codebook indices (row-major 4×4) into 64×64 mask logits, row-major; > 0 is inside.
    public func decode(codes: [Int]) throws -> [Float] {
        guard codes.count == Self.codesPerMask else {
            throw MaskDecoderError.wrongCodeCount(expected: Self.codesPerMask, actual: codes.count)
        }
        for (i, c) in codes.enumerated() where c < 0 || c >= codebookSize {
            throw MaskDecoderError.invalidCode(position: i, code: c, codebookSize: codebookSize)
        }
        var side = Self.gridSide
        var x = [Float](repeating: 0, count: side * side * embeddingWidth)
        for (p, c) in codes.enumerated() {
            for j in 0..<embeddingWidth { x[p * embeddingWidth + j] = codebook[c * embeddingWidth + j] }
        }
        x = inputConv.apply(x, side: side, relu: true)
        for (a, b, c) in resBlocks {
            var h = a.apply(x, side: side, relu: true)
            h = b.apply(h, side: side, relu: true)
            h = c.apply(h, side: side, relu: false)
            for i in 0..<x.count { x[i] += h[i] }
        }
        for up in upsamples {
            x = up.applyTransposed(x, side: side)
            side *= 2
        }
        return outputConv.apply(x, side: side, relu: false)
    }

    /// `clip(logit × 0.5 + 0.5, 0, 1)`: the soft mask in [0, 1] used by Google's demo.
    public static func probabilities(_ logits: [Float]) -> [Float] {
        logits.map { min(max($0 * 0.5 + 0.5, 0), 1) }
    }
}

/// A convolution with weights laid out [ky][kx][cin][cout] so the inner loop is an axpy over cout.
private struct Conv: Sendable {
    let weights: [Float]
    let bias: [Float]
    let cin: Int
    let cout: Int
    let kernel: Int

    /// From a PyTorch Conv2d weight (out, in, kh, kw); square kernel, stride 1, padding (kernel − 1) / 2.
    init(conv w: [Float], bias: [Float], cin: Int, cout: Int, kernel: Int) {
        var t = [Float](repeating: 0, count: w.count)
        for o in 0..<cout {
            for i in 0..<cin {
                for ky in 0..<kernel {
                    for kx in 0..<kernel {
                        t[((ky * kernel + kx) * cin + i) * cout + o] = w[((o * cin + i) * kernel + ky) * kernel + kx]
                    }
                }
            }
        }
        self.weights = t
        self.bias = bias
        self.cin = cin
        self.cout = cout
        self.kernel = kernel
    }

    /// From a PyTorch ConvTranspose2d weight (in, out, 4, 4).
    init(transposed w: [Float], bias: [Float], cin: Int, cout: Int) {
        var t = [Float](repeating: 0, count: w.count)
        for i in 0..<cin {
            for o in 0..<cout {
                for ky in 0..<4 {
                    for kx in 0..<4 {
                        t[((ky * 4 + kx) * cin + i) * cout + o] = w[((i * cout + o) * 4 + ky) * 4 + kx]
                    }
                }
            }
        }
        self.weights = t
        self.bias = bias
        self.cin = cin
        self.cout = cout
        self.kernel = 4
    }

    /// Cross-correlation with zero padding on a side×side HWC input.
    func apply(_ input: [Float], side: Int, relu: Bool) -> [Float] {
        let pad = (kernel - 1) / 2
        var out = [Float](repeating: 0, count: side * side * cout)
        let cin = self.cin, cout = self.cout, kernel = self.kernel
        input.withUnsafeBufferPointer { inp in
            weights.withUnsafeBufferPointer { wp in
                bias.withUnsafeBufferPointer { bp in
                    out.withUnsafeMutableBufferPointer { op in
                        for y in 0..<side {
                            for x in 0..<side {
                                let o = op.baseAddress! + (y * side + x) * cout
                                for c in 0..<cout { o[c] = bp[c] }
                                for ky in 0..<kernel {
                                    let iy = y + ky - pad
                                    if iy < 0 || iy >= side { continue }
                                    for kx in 0..<kernel {
                                        let ix = x + kx - pad
                                        if ix < 0 || ix >= side { continue }
                                        let src = inp.baseAddress! + (iy * side + ix) * cin
                                        let wk = wp.baseAddress! + (ky * kernel + kx) * cin * cout
                                        for i in 0..<cin {
                                            let a = src[i]
                                            if a == 0 { continue }  // post-ReLU inputs are often 0
                                            let w = wk + i * cout
                                            for c in 0..<cout { o[c] += a * w[c] }
                                        }
                                    }
                                }
                                if relu { for c in 0..<cout { o[c] = max(o[c], 0) } }
                            }
                        }
                    }
                }
            }
        }
        return out
    }

    /// ConvTranspose2d(kernel 4, stride 2, padding 1) + ReLU on a side×side HWC input → 2·side square:
    /// input pixel (iy, ix) adds into output (2·iy − 1 + ky, 2·ix − 1 + kx).
    func applyTransposed(_ input: [Float], side: Int) -> [Float] {
        let outSide = side * 2
        var out = [Float](repeating: 0, count: outSide * outSide * cout)
        let cin = self.cin, cout = self.cout
        input.withUnsafeBufferPointer { inp in
            weights.withUnsafeBufferPointer { wp in
                out.withUnsafeMutableBufferPointer { op in
                    for p in 0..<(outSide * outSide) {
                        for c in 0..<cout { op[p * cout + c] = bias[c] }
                    }
                    for iy in 0..<side {
                        for ix in 0..<side {
                            let src = inp.baseAddress! + (iy * side + ix) * cin
                            for ky in 0..<4 {
                                let oy = 2 * iy - 1 + ky
                                if oy < 0 || oy >= outSide { continue }
                                for kx in 0..<4 {
                                    let ox = 2 * ix - 1 + kx
                                    if ox < 0 || ox >= outSide { continue }
                                    let o = op.baseAddress! + (oy * outSide + ox) * cout
                                    let wk = wp.baseAddress! + (ky * 4 + kx) * cin * cout
                                    for i in 0..<cin {
                                        let a = src[i]
                                        if a == 0 { continue }
                                        let w = wk + i * cout
                                        for c in 0..<cout { o[c] += a * w[c] }
                                    }
                                }
                            }
                        }
                    }
                    for j in 0..<op.count { op[j] = max(op[j], 0) }
                }
            }
        }
        return out
    }
}
