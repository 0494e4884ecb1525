import CKernels
import Foundation
import Kernels
import XCTest

/// Every fast kernel against its plain twin. Bounds follow the standard forward-error bound of a
/// float32 sum of n products, γ_n·Σ|terms| with γ_n = n·u/(1 − n·u), u = 2⁻²⁴ (each side may
/// err by that much, so their difference by twice it).
final class FastVersusReferenceTests: XCTestCase {
    var rng = SystemRandomNumberGenerator()
    let u: Float = 0x1p-24

    func gamma(_ n: Int) -> Float { Float(n) * u / (1 - Float(n) * u) }

    /// Runs `body` once per kernel level this CPU supports, that level active.
    func eachKernelLevel(_ body: (KernelLevel) -> Void) {
        for level in KernelLevel.available {
            let previous = KernelLevel.activate(level)
            defer { KernelLevel.activate(previous) }
            body(level)
        }
    }

    func randomMatrix(_ rows: Int, _ cols: Int, scale: Float = 1) -> Matrix {
        Matrix(rows: rows, columns: cols, values: (0..<(rows * cols)).map { _ in Float.random(in: -scale...scale, using: &rng) })
    }

    /// Weights stored in `format`, plus their exact float32 values.
    func randomWeights(_ rows: Int, _ cols: Int, format: WeightFormat) -> (WeightMatrix, [Float], UnsafeMutableRawPointer) {
        let n = rows * cols
        let raw = UnsafeMutableRawPointer.allocate(byteCount: n * Int(format.bytesPerWeight), alignment: 64)
        var exact = [Float](repeating: 0, count: n)
        for i in 0..<n {
            let v = Float.random(in: -1...1, using: &rng)
            switch format {
            case .f32:
                raw.storeBytes(of: v, toByteOffset: i * 4, as: Float.self); exact[i] = v
            case .bf16:
                let b = UInt16(v.roundedToBFloat16.bitPattern >> 16)
                raw.storeBytes(of: b, toByteOffset: i * 2, as: UInt16.self)
                exact[i] = Float(bitPattern: UInt32(b) << 16)
            case .f16:
                #if arch(x86_64) || arch(arm64)
                let h = Float16(v)
                raw.storeBytes(of: h.bitPattern, toByteOffset: i * 2, as: UInt16.self)
                exact[i] = Float(h)
                #endif
            case .q8, .q4:
                XCTFail("use QuantizedKernelTests")
            }
        }
        return (WeightMatrix(format: format, rows: rows, columns: cols, data: UnsafeRawPointer(raw)), exact, raw)
    }

    func testLinearAllFormatsAndShapes() {
        let fast = FastBackend(threads: 2), reference = ReferenceBackend()
        for level in KernelLevel.available {
            let previous = KernelLevel.activate(level)
            defer { KernelLevel.activate(previous) }
            for format in [WeightFormat.f32, .bf16, .f16] {
                // (13, 4500, 37): more than one 4096-wide block of the float32 GEMM's K loop
                for (m, k, n) in [(1, 7, 5), (1, 64, 33), (1, 300, 70), (3, 100, 17), (5, 257, 9), (9, 48, 64), (16, 33, 3),
                                  (70, 96, 13), (13, 4500, 37)] {
                    let x = randomMatrix(m, k)
                    let (w, exact, raw) = randomWeights(n, k, format: format)
                    defer { raw.deallocate() }
                    let bias = (0..<n).map { _ in Float.random(in: -1...1, using: &rng) }
                    let a = Matrix(rows: m, columns: n), b = Matrix(rows: m, columns: n)
                    fast.linear(x, w, bias: bias, into: a)
                    reference.linear(x, w, bias: bias, into: b)
                    // Many rows × bf16 weights take the bf16 dot-product path, which first rounds
                    // activations to bf16 (relative error ≤ 2⁻⁹ each), as PyTorch's bfloat16 does.
                    let roundsActivations = format == .bf16 && m > 1 && fast.prefersBF16DotProducts
                    let activationRounding: Float = roundsActivations ? 0x1p-9 : 0
                    for r in 0..<m {
                        for c in 0..<n {
                            var magnitude = abs(bias[c])
                            for i in 0..<k { magnitude += abs(x[r, i] * exact[c * k + i]) }
                            let bound = (2 * gamma(k + 1) + activationRounding) * magnitude
                            XCTAssertLessThanOrEqual(abs(a[r, c] - b[r, c]), bound,
                                "\(format) level \(level) m\(m) k\(k) n\(n) at (\(r),\(c))")
                        }
                    }
                }
            }
        }
    }

    func testNormsActivationsAndRope() {
        eachKernelLevel { level in
            let fast = FastBackend(threads: 2), reference = ReferenceBackend()
            let x = randomMatrix(7, 96, scale: 3)
            let w = (0..<96).map { _ in Float.random(in: -0.5...0.5, using: &rng) }
            let beta = (0..<96).map { _ in Float.random(in: -0.5...0.5, using: &rng) }
            let a = Matrix(rows: 7, columns: 96), b = Matrix(rows: 7, columns: 96)
            // Sums of 96 squares: relative error a few γ_96; allow 4γ on values of size ≤ a few units.
            let tol = 4 * gamma(96) * 10
            fast.rmsNorm(x, weight: w, weightOffset: 1, eps: 1e-6, into: a)
            reference.rmsNorm(x, weight: w, weightOffset: 1, eps: 1e-6, into: b)
            for i in 0..<(7 * 96) { XCTAssertEqual(a.storage[i], b.storage[i], accuracy: tol, "\(level)") }
            fast.layerNorm(x, gamma: w, beta: beta, eps: 1e-6, into: a)
            reference.layerNorm(x, gamma: w, beta: beta, eps: 1e-6, into: b)
            for i in 0..<(7 * 96) { XCTAssertEqual(a.storage[i], b.storage[i], accuracy: tol, "\(level)") }
            let up = randomMatrix(7, 96)
            fast.geluTanh(x, times: up, into: a)
            reference.geluTanh(x, times: up, into: b)
            for i in 0..<(7 * 96) { XCTAssertEqual(a.storage[i], b.storage[i], accuracy: 4 * u * 10, "\(level)") }
            let r1 = Matrix(rows: 7, columns: 96, values: x.values), r2 = Matrix(rows: 7, columns: 96, values: x.values)
            fast.rope(r1, headDim: 32, firstPosition: 5, theta: 10000)
            reference.rope(r2, headDim: 32, firstPosition: 5, theta: 10000)
            for i in 0..<(7 * 96) { XCTAssertEqual(r1.storage[i], r2.storage[i], accuracy: 8 * u * 4, "\(level)") }
        }
    }

    func testAttentionMasksGQAAndSoftcap() {
        eachKernelLevel { level in
            let fast = FastBackend(threads: 2), reference = ReferenceBackend()
            let heads = 4, kv = 2, d = 16, keys = 23
            let k = randomMatrix(keys, kv * d, scale: 2), v = randomMatrix(keys, kv * d)
            let masks: [AttentionMask] = [.bidirectional, .prefixLM(prefixLength: 9, window: nil),
                                          .prefixLM(prefixLength: 9, window: 4), .prefixLM(prefixLength: 0, window: 6)]
            for mask in masks {
                for (queryStart, rows) in [(0, keys), (keys - 1, 1), (15, 8)] {
                    let q = randomMatrix(rows, heads * d, scale: 2)
                    let shape = AttentionShape(heads: heads, kvHeads: kv, headDim: d, scale: 0.25, softcap: 5,
                                               queryStart: queryStart, keyCount: queryStart + rows)
                    let a = Matrix(rows: rows, columns: heads * d), b = Matrix(rows: rows, columns: heads * d)
                    fast.attention(queries: q, keys: k, values: v, shape: shape, mask: mask, into: a)
                    reference.attention(queries: q, keys: k, values: v, shape: shape, mask: mask, into: b)
                    // Softmax-weighted means of values in [-1, 1]: errors of order γ_keys.
                    for i in 0..<(rows * heads * d) {
                        XCTAssertEqual(a.storage[i], b.storage[i], accuracy: 8 * gamma(keys + d), "\(level) \(mask)")
                    }
                }
            }
        }
    }

    func testArgmaxAndSumOfExponentialsOverAVocabulary() {
        // The sampler's per-token work over 256k logits: the first largest value (NaNs never
        // win, ties go to the lower index, as torch.argmax) and Σ exp(x − max), against plain
        // loops (the sum in Double), with the vector code and the portable code.
        for n in [1, 15, 17, 1000, 257_216] {
            var values = (0..<n).map { _ in Float.random(in: -30...30, using: &rng) }
            if n > 20 {
                values[3] = .nan
                let top = values.max()! + 1
                values[n / 2] = top
                values[n - 1] = top  // a tie: the earlier index wins
            }
            let m = Matrix(rows: 1, columns: n, values: values)
            var expected = 0
            for i in 0..<n where values[i] > values[expected] || values[expected].isNaN { expected = i }
            let shift = values[expected]
            let exact = values.reduce(0.0) { $1.isNaN ? $0 : $0 + Foundation.exp(Double($1 - shift)) }
            for level in KernelLevel.available {
                let previous = KernelLevel.activate(level)
                defer { KernelLevel.activate(previous) }
                XCTAssertEqual(m.argmax(row: 0), expected, "n \(n) level \(level)")
                if n > 20 { continue }  // (a NaN in the row makes the sum NaN)
                let sum = m.sumOfExponentials(row: 0, shift: shift)
                XCTAssertEqual(Double(sum), exact, accuracy: exact * (Double(n) * 0x1p-24 + 1e-6), "n \(n) level \(level)")
            }
        }
        // Without NaNs, the full vocabulary's sum.
        let n = 257_216
        let values = (0..<n).map { _ in Float.random(in: -30...30, using: &rng) }
        let m = Matrix(rows: 1, columns: n, values: values)
        let shift = values.max()!
        let exact = values.reduce(0.0) { $0 + Foundation.exp(Double($1 - shift)) }
        for level in KernelLevel.available {
            let previous = KernelLevel.activate(level)
            defer { KernelLevel.activate(previous) }
            let sum = m.sumOfExponentials(row: 0, shift: shift)
            XCTAssertEqual(Double(sum), exact, accuracy: exact * (Double(n) * 0x1p-24 + 1e-6), "level \(level)")
        }
    }

    func testKeyRangeAgreesWithAllows() {
        for mask in [AttentionMask.bidirectional, .prefixLM(prefixLength: 5, window: nil), .prefixLM(prefixLength: 5, window: 3),
                     .prefixLM(prefixLength: 0, window: 2), .prefixLM(prefixLength: 12, window: 4)] {
            for keyCount in [1, 7, 12] {
                for q in 0..<keyCount {
                    let expected = (0..<keyCount).filter { mask.allows(query: q, key: $0) }
                    XCTAssertEqual(Array(mask.keyRange(query: q, keyCount: keyCount)), expected, "\(mask) q\(q) n\(keyCount)")
                }
            }
        }
    }

    func testLongAttentionTilesMatchReference() {
        eachKernelLevel { level in
            // More keys than one 64-key tile and more rows than one 32-row block; blocks of 16–32
            // rows take the queries-in-lanes kernel, shorter ones the row-at-a-time one; head
            // dimensions that are not multiples of the 6-feature and 16-lane register tiles.
            let fast = FastBackend(threads: 2), reference = ReferenceBackend()
            for (d, keys) in [(8, 150), (72, 140), (20, 45)] {
                let k = randomMatrix(keys, 2 * d, scale: 3), v = randomMatrix(keys, 2 * d)
                let q = randomMatrix(keys, 4 * d, scale: 3 / Float(d).squareRoot())
                let shape = AttentionShape(heads: 4, kvHeads: 2, headDim: d, scale: 0.5, softcap: 50, queryStart: 0, keyCount: keys)
                for mask in [AttentionMask.prefixLM(prefixLength: 70, window: 40), .bidirectional, .prefixLM(prefixLength: 0, window: nil)] {
                    let a = Matrix(rows: keys, columns: 4 * d), b = Matrix(rows: keys, columns: 4 * d)
                    fast.attention(queries: q, keys: k, values: v, shape: shape, mask: mask, into: a)
                    reference.attention(queries: q, keys: k, values: v, shape: shape, mask: mask, into: b)
                    for i in 0..<(keys * 4 * d) { XCTAssertEqual(a.storage[i], b.storage[i], accuracy: 8 * gamma(keys + d), "\(level) d\(d) \(mask)") }
                }
            }
            // Decode: one query row per head (the single-query kernel), long caches, head sizes up to 256.
            for (d, keys) in [(256, 150), (72, 300), (20, 70)] {
                let k = randomMatrix(keys, 2 * d, scale: 3), v = randomMatrix(keys, 2 * d)
                let q = randomMatrix(1, 4 * d, scale: 3 / Float(d).squareRoot())
                let shape = AttentionShape(heads: 4, kvHeads: 2, headDim: d, scale: 0.5, softcap: 50, queryStart: keys - 1, keyCount: keys)
                for mask in [AttentionMask.prefixLM(prefixLength: 10, window: nil), .prefixLM(prefixLength: 10, window: 33)] {
                    let a = Matrix(rows: 1, columns: 4 * d), b = Matrix(rows: 1, columns: 4 * d)
                    fast.attention(queries: q, keys: k, values: v, shape: shape, mask: mask, into: a)
                    reference.attention(queries: q, keys: k, values: v, shape: shape, mask: mask, into: b)
                    for i in 0..<(4 * d) { XCTAssertEqual(a.storage[i], b.storage[i], accuracy: 8 * gamma(keys + d), "\(level) decode d\(d) \(mask)") }
                }
            }
        }
    }

    func testHeadMajorKeysAndValuesGiveTheSameAttention() {
        // The decoder's cache keeps each KV head's rows together (headRows = capacity). The same
        // keys laid out that way, with rows past keyCount holding garbage, must give each
        // backend's own result for the projections' layout bit for bit: only the addresses differ.
        // (How close the levels come to the reference is the other attention tests' matter.)
        eachKernelLevel { level in
            let fast = FastBackend(threads: 2), reference = ReferenceBackend()
            for (d, keys, rows) in [(256, 150, 1), (72, 90, 1), (32, 60, 20), (20, 45, 45)] {
                let kv = 2, capacity = keys + 7
                let k = randomMatrix(keys, kv * d, scale: 3), v = randomMatrix(keys, kv * d)
                let kc = randomMatrix(kv * capacity, d, scale: 100), vc = randomMatrix(kv * capacity, d, scale: 100)
                for h in 0..<kv {
                    for t in 0..<keys {
                        for i in 0..<d {
                            kc[h * capacity + t, i] = k[t, h * d + i]
                            vc[h * capacity + t, i] = v[t, h * d + i]
                        }
                    }
                }
                let q = randomMatrix(rows, 4 * d, scale: 3 / Float(d).squareRoot())
                let plain = AttentionShape(heads: 4, kvHeads: kv, headDim: d, scale: 0.5, softcap: 50,
                                           queryStart: keys - rows, keyCount: keys)
                var cached = plain
                cached.headRows = capacity
                let mask = AttentionMask.prefixLM(prefixLength: keys / 2, window: 33)
                for (name, backend) in [("fast", fast as ComputeBackend), ("reference", reference)] {
                    let expected = Matrix(rows: rows, columns: 4 * d), out = Matrix(rows: rows, columns: 4 * d)
                    backend.attention(queries: q, keys: k, values: v, shape: plain, mask: mask, into: expected)
                    backend.attention(queries: q, keys: kc, values: vc, shape: cached, mask: mask, into: out)
                    XCTAssertEqual(out.values, expected.values, "\(level) \(name) d\(d) rows \(rows)")
                }
            }
        }
    }

    func testVectorGeluAndSoftcapAcrossTheRange() {
        eachKernelLevel { level in
            // The SIMD tanh is exp-based; over a dense grid it must track the double-precision formula.
            let xs = stride(from: -12.0, through: 12.0, by: 0.0037).map { Float($0) }
            let a = Matrix(rows: 1, columns: xs.count, values: xs), out = Matrix(rows: 1, columns: xs.count)
            FastBackend(threads: 1).geluTanh(a, times: nil, into: out)
            for (i, x) in xs.enumerated() {
                let d = Double(x)
                let expected = 0.5 * d * (1 + Foundation.tanh(0.7978845608028654 * (d + 0.044715 * d * d * d)))
                XCTAssertEqual(Double(out[0, i]), expected, accuracy: 2e-6 * max(1, abs(expected)), "\(level) gelu(\(x))")
            }
            let capped = Matrix(rows: 1, columns: xs.count, values: xs.map { $0 * 10 })
            FastBackend(threads: 1).softcap(capped, cap: 30)
            for (i, x) in xs.enumerated() {
                let expected = 30 * Foundation.tanh(Double(x) * 10 / 30)
                XCTAssertEqual(Double(capped[0, i]), expected, accuracy: 3e-6 * 30, "\(level) softcap(\(x * 10))")
            }
        }
    }

    func testMaskSemantics() {
        let m = AttentionMask.prefixLM(prefixLength: 4, window: 3)
        XCTAssertTrue(m.allows(query: 0, key: 3), "prefix is bidirectional")
        XCTAssertTrue(m.allows(query: 3, key: 0), "prefix ignores the window")
        XCTAssertFalse(m.allows(query: 4, key: 5), "suffix is causal")
        XCTAssertTrue(m.allows(query: 6, key: 4))
        XCTAssertFalse(m.allows(query: 6, key: 3), "window excludes k ≤ q − window")
        XCTAssertTrue(AttentionMask.bidirectional.allows(query: 0, key: 100))
    }

    func testEmbedAndConversions() {
        let (w, exact, raw) = randomWeights(10, 24, format: .bf16)
        defer { raw.deallocate() }
        let out = Matrix(rows: 0, columns: 24, rowCapacity: 4)
        FastBackend(threads: 1).embed([3, 9, 0], table: w, scale: 2, into: out)
        XCTAssertEqual(out.rows, 3)
        for c in 0..<24 { XCTAssertEqual(out[1, c], exact[9 * 24 + c] * 2) }
        XCTAssertEqual(Float(2304).squareRoot().roundedToBFloat16, 48)
        XCTAssertEqual(Float(3584).squareRoot().roundedToBFloat16, 59.75)
        XCTAssertEqual(Float(4608).squareRoot().roundedToBFloat16, 68)
        XCTAssertEqual(Float(float16Bits: 0x3C00), 1)
        XCTAssertEqual(Float(float16Bits: 0xC000), -2)
        XCTAssertEqual(Float(float16Bits: 0x0001), 0x1p-24)
    }

    func testPatchesMatchConvolutionLayout() {
        // 2 channels, 4×4 image, patch 2: patch (py, px) row holds c, dy, dx in that order.
        let pixels = (0..<32).map(Float.init)
        let m = Matrix.patches(chw: pixels, channels: 2, height: 4, width: 4, patch: 2)
        XCTAssertEqual(m.rows, 4)
        XCTAssertEqual(m.row(1), [2, 3, 6, 7, 18, 19, 22, 23])
    }
}

/// Quantized weights: the fast GEMV/GEMM against the reference on the same dequantized values.
final class QuantizedKernelTests: XCTestCase {
    func quantized(_ rows: Int, _ cols: Int, _ format: WeightFormat) -> (WeightMatrix, [Float], () -> Void) {
        var original = [Float](repeating: 0, count: rows * cols)
        var g = SystemRandomNumberGenerator()
        for i in original.indices { original[i] = Float.random(in: -1...1, using: &g) }
        let rowBytes = format.rowBytes(columns: cols)
        let data = UnsafeMutableRawPointer.allocate(byteCount: rows * rowBytes, alignment: 64)
        let groups = WeightFormat.groups(columns: cols)
        let scales = UnsafeMutablePointer<UInt16>.allocate(capacity: rows * groups)
        original.withUnsafeBufferPointer { src in
            for r in 0..<rows {
                ck_quantize_row(src.baseAddress! + r * cols, Int64(cols), format.rawValue, data + r * rowBytes, scales + r * groups)
            }
        }
        let w = WeightMatrix(format: format, rows: rows, columns: cols, data: UnsafeRawPointer(data), scales: UnsafePointer(scales))
        return (w, original, { data.deallocate(); scales.deallocate() })
    }

    func testQuantizationErrorIsBoundedByHalfAStep() {
        // q8 also with a short last group (100 = 3·32 + 4), which has its own scale.
        for (format, cols) in [(WeightFormat.q8, 96), (.q4, 96), (.q8, 100)] {
            let (w, original, free) = quantized(5, cols, format)
            defer { free() }
            XCTAssertEqual(w.groupsPerRow, (cols + 31) / 32)
            for r in 0..<5 {
                for g in 0..<w.groupsPerRow {
                    let length = min(32, cols - g * 32)
                    let group = (0..<length).map { original[r * cols + g * 32 + $0] }
                    let step = group.map(abs).max()! / (format == .q8 ? 127 : 7)
                    var row = [Float](repeating: .nan, count: cols)
                    w.convertRow(r, into: &row)
                    for i in 0..<length {
                        XCTAssertEqual(row[g * 32 + i], w.value(row: r, column: g * 32 + i))
                        // half a step, plus the f16 rounding of the scale (≤ 2⁻¹¹ relative) times |q|
                        let bound = step * (0.5 + (format == .q8 ? 127 : 8) * 0x1p-11) + 1e-7
                        XCTAssertEqual(w.value(row: r, column: g * 32 + i), group[i], accuracy: bound, "\(format)")
                    }
                }
            }
        }
    }

    func testFastQuantizedProductsMatchReference() {
        let fast = FastBackend(threads: 2), reference = ReferenceBackend()
        for level in KernelLevel.available {
            let previous = KernelLevel.activate(level)
            defer { KernelLevel.activate(previous) }
            for format in [WeightFormat.q8, .q4] {
                // q8 also with short last groups (k = 52, 80: the So400m fc2 case 4304 = 134·32 + 16)
                // One-row (decode) shapes cover the 4-bit GEMV's blocks of 16 groups, quads of 4 and
                // up to three scalar tail groups: k/32 = 2, 7 (4 + 3), 17 (16 + 1), 20 (16 + 4).
                let shapes = [(1, 64, 70), (1, 256, 9), (1, 224, 11), (1, 544, 5), (1, 640, 6),
                              (3, 96, 17), (20, 128, 130), (7, 64, 33)]
                    + (format == .q8 ? [(1, 52, 9), (13, 80, 40), (20, 116, 33)] : [])
                for (m, k, n) in shapes {
                    let (w, _, free) = quantized(n, k, format)
                    defer { free() }
                    var g = SystemRandomNumberGenerator()
                    let x = Matrix(rows: m, columns: k, values: (0..<(m * k)).map { _ in Float.random(in: -1...1, using: &g) })
                    let bias = (0..<n).map { Float($0) * 0.01 }
                    let a = Matrix(rows: m, columns: n), b = Matrix(rows: m, columns: n)
                    fast.linear(x, w, bias: bias, into: a)
                    reference.linear(x, w, bias: bias, into: b)
                    let int8Inputs = ck_has_int8_products() != 0
                    let roundsActivations = m > 1 && !int8Inputs && fast.prefersBF16DotProducts
                    for r in 0..<m {
                        for c in 0..<n {
                            var magnitude = abs(bias[c])
                            for i in 0..<k { magnitude += abs(x[r, i] * w.value(row: c, column: i)) }
                            // float32 sums (γ_k each side), plus bf16 rounding of activations and of
                            // dequantized weights on the prefill path (2⁻⁹ each).
                            let gamma = Float(k + 1) * 0x1p-24 * 2
                            var bound = (gamma + (roundsActivations ? 0x1p-8 : 0)) * magnitude + 1e-6
                            if int8Inputs {
                                // int8 inputs (decode and prefill): each |x| errs by at most half a
                                // step of its group's max|x|/127, and |x| ≤ 1 here.
                                var wsum: Float = 0
                                for i in 0..<k { wsum += abs(w.value(row: c, column: i)) }
                                bound += 0.5 / 127 * wsum
                            }
                            XCTAssertEqual(a[r, c], b[r, c], accuracy: bound, "\(format) level \(level) m\(m) k\(k)")
                        }
                    }
                }
            }
        }
    }

    /// The integer prefill kernel (VNNI where present) and its portable twin against the same
    /// formula evaluated here from the quantized inputs: Σ_g xs[g]·Σ_i (u_i − 128)·w_i. Both sides
    /// compute the same integers, so they differ only by float32 rounding of the group sums (tails:
    /// rows past a 6-row tile, columns past a 32-column panel).
    func testIntegerPrefillKernelMatchesItsFormula() {
        var g = SystemRandomNumberGenerator()
        for format in [WeightFormat.q8, .q4] {
            // q8 also with short last groups (k = 52, 80, 116); quantized rows are then padded
            // to whole groups with the zero input (u = 128).
            let shapes = [(1, 32, 5), (6, 64, 32), (13, 96, 70), (40, 256, 33)]
                + (format == .q8 ? [(1, 52, 5), (7, 80, 40), (13, 116, 33)] : [])
            for (m, k, n) in shapes {
                let (w, _, free) = quantized(n, k, format)
                defer { free() }
                let groups = (k + 31) / 32, kp = groups * 32
                let x: [Float] = (0..<(m * k)).map { _ in Float.random(in: -3...3, using: &g) }
                let bias: [Float] = (0..<n).map { Float($0) * 0.1 }
                var xq = [UInt8](repeating: 0, count: m * kp), xs = [Float](repeating: 0, count: m * groups)
                ck_quantize_rows_u8(x, Int64(m), Int64(k), Int64(k), &xq, &xs)
                // Shifted integer inputs q = u − 128, checked against x: |q·xs − x| ≤ xs/2.
                var q = [Float](repeating: 0, count: m * k)
                for r in 0..<m {
                    for gi in 0..<groups {
                        let length = min(32, k - gi * 32)
                        var amax: Float = 0
                        for i in 0..<length { amax = max(amax, abs(x[r * k + gi * 32 + i])) }
                        let scale = xs[r * groups + gi]
                        XCTAssertEqual(scale, amax / 127, accuracy: amax * 1e-6)
                        for i in 0..<length {
                            let j = r * k + gi * 32 + i
                            q[j] = Float(Int(xq[r * kp + gi * 32 + i]) - 128)
                            XCTAssertEqual(q[j] * scale, x[j], accuracy: amax / 254 * 1.0001)
                        }
                        for i in length..<32 { XCTAssertEqual(xq[r * kp + gi * 32 + i], 128, "padding is x = 0") }
                    }
                }
                for level in KernelLevel.available {
                    let previous = KernelLevel.activate(level)
                    defer { KernelLevel.activate(previous) }
                    var y = [Float](repeating: .nan, count: m * n)
                    var scratch = [UInt8](repeating: 0, count: Int(ck_gemm_q_int8_scratch_bytes(Int64(k))))
                    ck_gemm_q_int8(xq, xs, Int64(m), Int64(k), w.data, w.scales, format.rawValue, bias, &y,
                                   Int64(n), 0, Int64(n), &scratch)
                    for r in 0..<m {
                        for c in 0..<n {
                            var expected: Float = bias[c]
                            var magnitude: Float = abs(bias[c])
                            for gi in 0..<groups {
                                var sum: Float = 0
                                var absSum: Float = 0
                                for i in 0..<min(32, k - gi * 32) {
                                    let term: Float = q[r * k + gi * 32 + i] * w.value(row: c, column: gi * 32 + i)
                                    sum += term
                                    absSum += abs(term)
                                }
                                let scale: Float = xs[r * groups + gi]
                                expected += scale * sum
                                magnitude += scale * absSum
                            }
                            // float32 sums of at most k + k/32 + 3 terms on either side (the kernel's
                            // integer sums are exact), relative to Σ|terms|.
                            let bound: Float = 2 * gammaBound(k + groups + 3) * magnitude + 1e-6
                            XCTAssertEqual(y[r * n + c], expected, accuracy: bound, "\(format) level \(level) m\(m) k\(k) n\(n)")
                        }
                    }
                }
            }
        }
    }

    func gammaBound(_ n: Int) -> Float { Float(n) * 0x1p-24 / (1 - Float(n) * 0x1p-24) }
}

extension QuantizedKernelTests {
    /// Decode of several sequences at once: every row `linearEachRow` writes equals, bit for bit,
    /// the one-row product of that row alone, at every level, for 1…11 rows (past the batched
    /// kernels' chunks of 4 and 8), odd and even output counts, q8 and q4, and bf16 (also with K
    /// not a multiple of 32).
    func testEachRowEqualsItsOneRowProductBitForBit() {
        let backend = FastBackend(threads: 2)
        for level in KernelLevel.available {
            let previous = KernelLevel.activate(level)
            defer { KernelLevel.activate(previous) }
            for format in [WeightFormat.q8, .q4, .bf16] {
                let shapes = format == .bf16 ? [(130, 256), (67, 100), (9, 4500)] : [(130, 256), (67, 96)]
                for (n, k) in shapes {
                    let (w, _, release) = format == .bf16 ? bf16Weights(n, k) : quantized(n, k, format)
                    defer { release() }
                    for m in [1, 2, 3, 8, 11] {
                        let x = Matrix(rows: m, columns: k, values: (0..<(m * k)).map { _ in Float.random(in: -2...2) })
                        let out = Matrix(rows: m, columns: n)
                        let batched = backend.linearEachRow(x, w, into: out)
                        guard batched else {
                            XCTAssertNotEqual(format, .bf16, "\(level.name): no batched product for bf16 weights")
                            XCTAssertEqual(ck_has_int8_products(), 0, "\(level.name): no batched product although int8 products exist")
                            continue
                        }
                        let one = Matrix(rows: 1, columns: k), alone = Matrix(rows: 1, columns: n)
                        for r in 0..<m {
                            one.setRow(0, x.row(r))
                            backend.linear(one, w, bias: nil, into: alone)
                            XCTAssertEqual(out.row(r).map(\.bitPattern), alone.row(0).map(\.bitPattern),
                                           "\(level.name) \(format) \(n)×\(k), \(m) rows: row \(r) differs from its one-row product")
                        }
                    }
                }
            }
        }
    }

    /// bf16 weights of random values, and their exact float32 values.
    func bf16Weights(_ rows: Int, _ cols: Int) -> (WeightMatrix, [Float], () -> Void) {
        let data = UnsafeMutablePointer<UInt16>.allocate(capacity: rows * cols)
        var exact = [Float](repeating: 0, count: rows * cols)
        var g = SystemRandomNumberGenerator()
        for i in exact.indices {
            data[i] = UInt16(Float.random(in: -1...1, using: &g).roundedToBFloat16.bitPattern >> 16)
            exact[i] = Float(bitPattern: UInt32(data[i]) << 16)
        }
        let w = WeightMatrix(format: .bf16, rows: rows, columns: cols, data: UnsafeRawPointer(data))
        return (w, exact, { data.deallocate() })
    }
}
