import CKernels
import Dispatch
import Foundation

/// SIMD kernels of the active ``KernelLevel`` (the best this CPU has unless capped) spread over a
/// fixed number of worker threads. Scratch memory is allocated on first use and reused, so steady-state calls
/// (every decode step) allocate nothing.
// @unchecked Sendable: the mutable state (idle workspaces, the bf16 preference, the rope
// frequencies) is only touched under `lock`; a workspace belongs to one call at a time; the C
// pool runs one parallel region at a time and refuses a second caller, who then uses Dispatch.
public final class FastBackend: ComputeBackend, @unchecked Sendable {
    public let threads: Int
    /// Prefill products with bf16 weights round activations to bf16 and use the CPU's bf16 dot
    /// products (as PyTorch does in bfloat16); false keeps float32 activations (half the speed).
    public let bf16Products: Bool
    /// Products with quantized weights round the input rows to int8 per group of 32 and use the
    /// CPU's integer dot products (VNNI), as llama.cpp does, in decode and prefill; false keeps
    /// float32 inputs.
    public let int8Activations: Bool
    /// Scratch sets not in use. A kernel call checks one out for its whole duration, so
    /// concurrent callers (two generations on one model) never share buffers; one caller at a
    /// time reuses the same set and allocates nothing in steady state.
    private var idleWorkspaces: [Workspace] = []
    private let lock = NSLock()
    /// Persistent workers for parallel regions (nil with one thread).
    private let pool: OpaquePointer?

    /// - Parameter threads: worker threads (default: every core). More than the cores only makes
    ///   the workers wait on each other, so the count is clamped to the cores.
    public init(threads: Int? = nil, bf16Products: Bool = true, int8Activations: Bool = true) {
        let cores = ProcessInfo.processInfo.activeProcessorCount
        self.threads = min(max(1, threads ?? cores), max(1, cores))
        self.bf16Products = bf16Products
        self.int8Activations = int8Activations
        pool = self.threads > 1 ? ck_pool_create(Int64(self.threads)) : nil
    }

    deinit {
        ck_pool_destroy(pool)
    }

    /// Runs `body` with a scratch set that no other call uses meanwhile.
    private func withWorkspace<R>(_ body: (Workspace) -> R) -> R {
        lock.lock()
        let workspace = idleWorkspaces.popLast() ?? Workspace(workers: threads)
        lock.unlock()
        defer {
            lock.lock()
            idleWorkspaces.append(workspace)
            lock.unlock()
        }
        return body(workspace)
    }

    public var name: String {
        let level = KernelLevel.active.name
        guard ck_has_vector_kernels() != 0 else { return "fast (\(level), \(threads) threads)" }
        var products = bf16Products && prefersBF16DotProducts ? "bf16 dot products" : "float32 FMA"
        if int8Activations && ck_has_int8_products() != 0 { products += ", int8 dot products" }
        return "fast (\(level), \(products), \(threads) threads)"
    }

    /// Runs `body(start, end, worker)` over `count` items split into contiguous chunks.
    @inline(__always)
    private func parallel(_ count: Int, minChunk: Int = 1, _ body: (Int, Int, Int) -> Void) {
        let workers = min(threads, max(1, count / max(1, minChunk)))
        if workers == 1 {
            body(0, count, 0)
            return
        }
        let ran = withoutActuallyEscaping(body) { body -> Bool in
            var job = PoolJob(body: body)
            return withUnsafeMutablePointer(to: &job) { ck_pool_run(pool, Int64(count), Int64(workers), runPoolJob, $0) != 0 }
        }
        if ran { return }
        // The pool is busy (another caller's region) or could not start its threads.
        withoutActuallyEscaping(body) { body in
            // concurrentPerform takes a @Sendable closure and `body` is not one: safe because it
            // runs only until concurrentPerform returns (every iteration done), each iteration on
            // its own range, exactly as the pool's workers run it.
            nonisolated(unsafe) let body = body
            DispatchQueue.concurrentPerform(iterations: workers) { w in
                let start = count * w / workers, end = count * (w + 1) / workers
                if start < end { body(start, end, w) }
            }
        }
    }

    public func linear(_ x: Matrix, _ weight: WeightMatrix, bias: [Float]?, into out: Matrix) {
        withWorkspace { linear(x, weight, bias: bias, into: out, $0) }
    }

    private func linear(_ x: Matrix, _ weight: WeightMatrix, bias: [Float]?, into out: Matrix, _ ws: Workspace) {
        precondition(x.columns == weight.columns && out.columns == weight.rows, "linear shape mismatch")
        precondition(bias == nil || bias!.count == weight.rows, "bias length mismatch")
        out.setRows(x.rows)
        let k = weight.columns
        if weight.hasShortLastGroup {
            // The decode GEMVs need whole groups; the integer GEMM and the float32 one (which
            // dequantizes rows first) take a short last group for any number of rows.
            if int8Activations && ck_has_int8_products() != 0 {
                linearQuantizedInt8(x, weight, bias: bias, into: out, ws)
            } else {
                linearPackedF32(x, weight, bias: bias, into: out, ws)
            }
            return
        }
        if x.rows > 1 && weight.format.isQuantized && int8Activations && ck_has_int8_products() != 0 {
            linearQuantizedInt8(x, weight, bias: bias, into: out, ws)
            return
        }
        if x.rows > 1 && ck_has_vector_kernels() != 0 && !(bf16Products && prefersBF16DotProducts) {
            linearPackedF32(x, weight, bias: bias, into: out, ws)
            return
        }
        if weight.format == .bf16 && (x.rows == 1 || (bf16Products && ck_has_bf16_products() != 0)) {
            linearBF16(x, weight, bias: bias, into: out, ws)
            return
        }
        if weight.format.isQuantized {
            linearQuantized(x, weight, bias: bias, into: out, ws)
            return
        }
        let buffers = ws.perWorker(floats: 4 * k)
        let xp = x.storage, yp = out.storage, m = x.rows
        // Split output features in multiples of 4 (the micro-kernel's width).
        let groups = (weight.rows + 3) / 4
        func run(_ b: UnsafePointer<Float>?) {
            parallel(groups, minChunk: 4) { g0, g1, w in
                let n0 = g0 * 4, n1 = min(weight.rows, g1 * 4)
                ck_linear(xp, Int64(m), Int64(k), Int64(x.columns), weight.data, weight.format.rawValue, b,
                          yp, Int64(out.columns), Int64(n0), Int64(n1), buffers[w])
            }
        }
        if let bias { bias.withUnsafeBufferPointer { run($0.baseAddress) } } else { run(nil) }
    }

    /// Quantized weights with int8 inputs: each row quantized as the one-row GEMV quantizes it,
    /// and one pass over the weights computing every row as that GEMV would (`ck_gemv_q_int8_rows`,
    /// same 64-row chunks). bf16 weights (whose one-row product is always `ck_gemv_bf16`): each
    /// row split as that GEMV takes it, one pass computing every row as it would
    /// (`ck_gemv_bf16_rows`). Other formats: false (the caller runs a product per row).
    public func linearEachRow(_ x: Matrix, _ weight: WeightMatrix, into out: Matrix) -> Bool {
        precondition(x.columns == weight.columns && out.columns == weight.rows, "linear shape mismatch")
        if weight.format == .bf16 {
            linearEachRowBF16(x, weight, into: out)
            return true
        }
        guard weight.format.isQuantized, !weight.hasShortLastGroup, int8Activations, ck_has_int8_products() != 0 else {
            return false
        }
        if x.rows == 1 {
            linear(x, weight, bias: nil, into: out)
            return true
        }
        withWorkspace { ws in
            out.setRows(x.rows)
            let k = weight.columns, n = weight.rows, m = x.rows
            // Per row, the one-row path's layout (64-byte aligned parts): value, magnitude,
            // value_q4 (k bytes each), negative, sum4, offset_q4, scale.
            func up(_ v: Int) -> Int { (v + 63) & ~63 }
            let groups = k / 32, kb = up(k)
            let negativeAt = 3 * kb, sum4At = negativeAt + up(max(1, (groups + 1) / 2) * 8)
            let offsetQ4At = sum4At + kb, scaleAt = offsetQ4At + kb, rowBytes = scaleAt + up(groups * 4)
            let inputsAt = up(m * rowBytes)
            let base = ws.shared(bytes: inputsAt + m * MemoryLayout<ck_qinput>.stride)
            let inputs = (base + inputsAt).bindMemory(to: ck_qinput.self, capacity: m)
            for r in 0..<m {
                let b = base + r * rowBytes
                inputs[r] = ck_qinput(
                    value: b.assumingMemoryBound(to: Int8.self),
                    magnitude: (b + kb).assumingMemoryBound(to: UInt8.self),
                    negative: (b + negativeAt).assumingMemoryBound(to: UInt64.self),
                    sum4: (b + sum4At).assumingMemoryBound(to: Int32.self),
                    scale: (b + scaleAt).assumingMemoryBound(to: Float.self),
                    value_q4: (b + 2 * kb).assumingMemoryBound(to: Int8.self),
                    offset_q4: (b + offsetQ4At).assumingMemoryBound(to: Int32.self))
                ck_quantize_input(x.rowPointer(r), Int64(k), inputs + r)
            }
            let yp = out.storage, ldy = Int64(out.columns), format = weight.format.rawValue
            parallel((n + 63) / 64, minChunk: 1) { g0, g1, _ in
                ck_gemv_q_int8_rows(inputs, Int64(m), Int64(k), weight.data, weight.scales, format, nil, yp, ldy,
                                    Int64(g0 * 64), Int64(min(n, g1 * 64)))
            }
        }
        return true
    }

    /// `linearEachRow` for bf16 weights: `linear` takes one row of bf16 weights through
    /// `linearBF16`'s GEMV whatever the level and options, so the rows here are split the same way
    /// and go through its batched form.
    private func linearEachRowBF16(_ x: Matrix, _ weight: WeightMatrix, into out: Matrix) {
        if x.rows == 1 {
            linear(x, weight, bias: nil, into: out)
            return
        }
        withWorkspace { ws in
            out.setRows(x.rows)
            let k = weight.columns, n = weight.rows, m = x.rows
            let xeo = ws.shared(bytes: m * k * 4).assumingMemoryBound(to: Float.self)
            for r in 0..<m { ck_split_even_odd(x.rowPointer(r), Int64(k), xeo + r * k) }
            let yp = out.storage, ldy = Int64(out.columns)
            // The one-row path's chunks of 64 rows.
            parallel((n + 63) / 64, minChunk: 1) { g0, g1, _ in
                ck_gemv_bf16_rows(xeo, Int64(m), Int64(k), Int64(k), weight.data, nil, yp, ldy, Int64(g0 * 64),
                                  Int64(min(n, g1 * 64)))
            }
        }
    }

    /// Whether bf16 dot products beat float32 FMAs on this CPU, measured once on a small product.
    /// (AMD Zen 4 runs bf16 dot products at twice its FMA rate; Intel Sapphire Rapids the reverse.)
    public var prefersBF16DotProducts: Bool {
        lock.lock()
        defer { lock.unlock() }
        let level = Int(ck_level())
        if let measured = measuredBF16Preference[level] { return measured }
        let measured = Self.measureBF16Preference()
        measuredBF16Preference[level] = measured
        return measured
    }
    /// Per kernel level (tests switch levels on one backend).
    private var measuredBF16Preference: [Int: Bool] = [:]

    private static func measureBF16Preference() -> Bool {
        guard ck_has_bf16_products() != 0 else { return false }
        let (m, k, n) = (48, 512, 256)
        let w = UnsafeMutablePointer<UInt16>.allocate(capacity: n * k)
        defer { w.deallocate() }
        for i in 0..<(n * k) { w[i] = UInt16(0x3F80 ^ (i & 0x7F)) }
        let x = UnsafeMutablePointer<Float>.allocate(capacity: m * k)
        defer { x.deallocate() }
        for i in 0..<(m * k) { x[i] = Float(i % 13) * 0.01 }
        let y = UnsafeMutablePointer<Float>.allocate(capacity: m * n)
        defer { y.deallocate() }
        let xb = UnsafeMutablePointer<UInt16>.allocate(capacity: m * k)
        defer { xb.deallocate() }
        let scratch = UnsafeMutablePointer<Float>.allocate(capacity: 64 * k)
        defer { scratch.deallocate() }
        func time(_ body: () -> Void) -> UInt64 {
            var best = UInt64.max
            for _ in 0..<5 {
                let t0 = DispatchTime.now().uptimeNanoseconds
                body()
                best = min(best, DispatchTime.now().uptimeNanoseconds - t0)
            }
            return best
        }
        let dot = time {
            ck_to_bf16_rows(x, Int64(m), Int64(k), Int64(k), xb)
            ck_gemm_bf16(xb, Int64(m), Int64(k), w, nil, y, Int64(n), 0, Int64(n))
        }
        let fma = time {
            ck_gemm_f32_packed(x, Int64(m), Int64(k), Int64(k), w, nil, WeightFormat.bf16.rawValue, nil, y, Int64(n), 0, Int64(n), scratch)
        }
        return dot < fma
    }

    /// Many rows, any weight format: weights widened to float32 per 32-row panel and multiplied
    /// with fused multiply-adds in 12×32 register tiles (exact float32 products).
    private func linearPackedF32(_ x: Matrix, _ weight: WeightMatrix, bias: [Float]?, into out: Matrix,
                                 _ ws: Workspace) {
        let k = weight.columns, n = weight.rows
        let buffers = ws.perWorker(floats: 64 * k)
        let xp = x.storage, yp = out.storage, m = x.rows
        func run(_ b: UnsafePointer<Float>?) {
            // A worker's share is at least ~4M multiply-adds (a fraction of a millisecond): below
            // that, waking a helper costs more than it saves (training's many small products).
            let panelWork = 32 * m * k
            parallel((n + 31) / 32, minChunk: max(1, (1 << 22) / max(1, panelWork))) { p0, p1, w in
                ck_gemm_f32_packed(xp, Int64(m), Int64(k), Int64(x.columns), weight.data, weight.scales,
                                   weight.format.rawValue, b, yp, Int64(out.columns), Int64(p0 * 32),
                                   Int64(min(n, p1 * 32)), buffers[w])
            }
        }
        if let bias { bias.withUnsafeBufferPointer { run($0.baseAddress) } } else { run(nil) }
    }

    /// Many rows, quantized weights, VNNI: activations rounded to int8 per row and group of 32
    /// (as decode does), integer dot products against panels of 32 repacked weight rows.
    private func linearQuantizedInt8(_ x: Matrix, _ weight: WeightMatrix, bias: [Float]?, into out: Matrix,
                                     _ ws: Workspace) {
        let k = weight.columns, n = weight.rows, m = x.rows, groups = weight.groupsPerRow
        let kp = groups * 32  // quantized rows are padded to whole groups
        let scratchFloats = Int(ck_gemm_q_int8_scratch_bytes(Int64(k))) / 4 + 16
        let buffers = ws.perWorker(floats: scratchFloats)
        let quantizedBytes = (m * kp + 63) & ~63
        let base = ws.shared(bytes: quantizedBytes + m * groups * 4)
        let xq = base.assumingMemoryBound(to: UInt8.self)
        let xs = (base + quantizedBytes).assumingMemoryBound(to: Float.self)
        parallel(m, minChunk: 16) { r0, r1, _ in
            ck_quantize_rows_u8(x.rowPointer(r0), Int64(r1 - r0), Int64(k), Int64(x.columns), xq + r0 * kp, xs + r0 * groups)
        }
        let yp = out.storage, ldy = Int64(out.columns)
        func run(_ b: UnsafePointer<Float>?) {
            parallel((n + 31) / 32, minChunk: 1) { p0, p1, w in
                ck_gemm_q_int8(xq, xs, Int64(m), Int64(k), weight.data, weight.scales, weight.format.rawValue, b,
                               yp, ldy, Int64(p0 * 32), Int64(min(n, p1 * 32)), UnsafeMutableRawPointer(buffers[w]))
            }
        }
        if let bias { bias.withUnsafeBufferPointer { run($0.baseAddress) } } else { run(nil) }
    }

    /// bf16 weights: one row streams the weights once (GEMV); many rows use bf16 dot products.
    private func linearBF16(_ x: Matrix, _ weight: WeightMatrix, bias: [Float]?, into out: Matrix,
                            _ ws: Workspace) {
        let k = weight.columns, n = weight.rows, m = x.rows
        let yp = out.storage, ldy = Int64(out.columns)
        func run(_ b: UnsafePointer<Float>?) {
            if m == 1 {
                let xeo = ws.shared(bytes: k * 4).assumingMemoryBound(to: Float.self)
                ck_split_even_odd(x.storage, Int64(k), xeo)
                // Chunks of 64 rows keep every worker streaming long contiguous runs.
                parallel((n + 63) / 64, minChunk: 1) { g0, g1, _ in
                    ck_gemv_bf16(xeo, Int64(k), weight.data, b, yp, Int64(g0 * 64), Int64(min(n, g1 * 64)))
                }
            } else {
                let kp = (k + 31) & ~31
                let xb = ws.shared(bytes: m * kp * 2).assumingMemoryBound(to: UInt16.self)
                ck_to_bf16_rows(x.storage, Int64(m), Int64(k), Int64(x.columns), xb)
                parallel((n + 3) / 4, minChunk: 4) { g0, g1, _ in
                    ck_gemm_bf16(xb, Int64(m), Int64(k), weight.data, b, yp, ldy, Int64(g0 * 4), Int64(min(n, g1 * 4)))
                }
            }
        }
        if let bias { bias.withUnsafeBufferPointer { run($0.baseAddress) } } else { run(nil) }
    }

    /// Quantized weights: one row streams them once (GEMV); many rows dequantize panels of 64
    /// weight rows to bf16 (or float32) per worker and run the dense product on each panel.
    private func linearQuantized(_ x: Matrix, _ weight: WeightMatrix, bias: [Float]?, into out: Matrix,
                                 _ ws: Workspace) {
        let k = weight.columns, n = weight.rows, m = x.rows
        let yp = out.storage, ldy = Int64(out.columns)
        let format = weight.format.rawValue
        let panel = 64
        func run(_ b: UnsafePointer<Float>?) {
            if m == 1 && int8Activations && ck_has_int8_products() != 0 {
                // Layout of the quantized input in the shared buffer, each part 64-byte aligned:
                // value, magnitude, value_q4 (k bytes each), negative, sum4, offset_q4, scale.
                func up(_ v: Int) -> Int { (v + 63) & ~63 }
                let groups = k / 32, kb = up(k)
                let negativeAt = 3 * kb, sum4At = negativeAt + up(max(1, (groups + 1) / 2) * 8)
                let offsetQ4At = sum4At + kb, scaleAt = offsetQ4At + kb
                let base = ws.shared(bytes: scaleAt + up(groups * 4))
                var input = ck_qinput(
                    value: base.assumingMemoryBound(to: Int8.self),
                    magnitude: (base + kb).assumingMemoryBound(to: UInt8.self),
                    negative: (base + negativeAt).assumingMemoryBound(to: UInt64.self),
                    sum4: (base + sum4At).assumingMemoryBound(to: Int32.self),
                    scale: (base + scaleAt).assumingMemoryBound(to: Float.self),
                    value_q4: (base + 2 * kb).assumingMemoryBound(to: Int8.self),
                    offset_q4: (base + offsetQ4At).assumingMemoryBound(to: Int32.self))
                ck_quantize_input(x.storage, Int64(k), &input)
                parallel((n + 63) / 64, minChunk: 1) { g0, g1, _ in
                    ck_gemv_q_int8(&input, Int64(k), weight.data, weight.scales, format, b, yp,
                                   Int64(g0 * 64), Int64(min(n, g1 * 64)))
                }
                return
            }
            if m == 1 {
                parallel((n + 63) / 64, minChunk: 1) { g0, g1, _ in
                    ck_gemv_q(x.storage, Int64(k), weight.data, weight.scales, format, b, yp, Int64(g0 * 64), Int64(min(n, g1 * 64)))
                }
                return
            }
            let useBF16 = bf16Products && ck_has_bf16_products() != 0
            let kp = (k + 31) & ~31
            var xb: UnsafeMutablePointer<UInt16>? = nil
            if useBF16 {
                xb = ws.shared(bytes: m * kp * 2).assumingMemoryBound(to: UInt16.self)
                ck_to_bf16_rows(x.storage, Int64(m), Int64(k), Int64(x.columns), xb)
            }
            let buffers = ws.perWorker(floats: panel * k + 4 * k)
            parallel((n + panel - 1) / panel, minChunk: 1) { p0, p1, w in
                for p in p0..<p1 {
                    let n0 = p * panel, count = min(panel, n - n0)
                    let scratch = buffers[w]
                    let panelBias = b.map { $0 + n0 }
                    if let xb {
                        let wb = UnsafeMutableRawPointer(scratch).assumingMemoryBound(to: UInt16.self)
                        ck_rows_to_bf16(weight.data, weight.scales, format, Int64(k), Int64(n0), Int64(count), wb)
                        ck_gemm_bf16(xb, Int64(m), Int64(k), wb, panelBias, yp + n0, ldy, 0, Int64(count))
                    } else {
                        for r in 0..<count {
                            ck_convert_row_q(weight.data, weight.scales, format, Int64(k), Int64(n0 + r), scratch + r * k)
                        }
                        ck_linear(x.storage, Int64(m), Int64(k), Int64(x.columns), scratch, WeightFormat.f32.rawValue,
                                  panelBias, yp + n0, ldy, 0, Int64(count), scratch + panel * k)
                    }
                }
            }
        }
        if let bias { bias.withUnsafeBufferPointer { run($0.baseAddress) } } else { run(nil) }
    }

    public func layerNorm(_ x: Matrix, gamma: [Float], beta: [Float], eps: Float, into out: Matrix) {
        precondition(gamma.count == x.columns && beta.count == x.columns && out.columns == x.columns)
        out.setRows(x.rows)
        let n = x.columns
        gamma.withUnsafeBufferPointer { g in
            beta.withUnsafeBufferPointer { b in
                parallel(x.rows, minChunk: 8) { r0, r1, _ in
                    for r in r0..<r1 {
                        let src = x.rowPointer(r), dst = out.rowPointer(r)
                        var mean: Float = 0
                        for c in 0..<n { mean += src[c] }
                        mean /= Float(n)
                        var variance: Float = 0
                        for c in 0..<n { let d = src[c] - mean; variance += d * d }
                        variance /= Float(n)
                        let inv = 1 / (variance + eps).squareRoot()
                        for c in 0..<n { dst[c] = (src[c] - mean) * inv * g[c] + b[c] }
                    }
                }
            }
        }
    }

    public func rmsNorm(_ x: Matrix, weight: [Float], weightOffset: Float, eps: Float, into out: Matrix) {
        precondition(weight.count == x.columns && out.columns == x.columns)
        out.setRows(x.rows)
        let n = x.columns
        weight.withUnsafeBufferPointer { w in
            parallel(x.rows, minChunk: max(8, (1 << 16) / max(1, n))) { r0, r1, _ in
                for r in r0..<r1 {
                    let src = x.rowPointer(r), dst = out.rowPointer(r)
                    let inv = 1 / (ck_dot(src, src, Int64(n)) / Float(n) + eps).squareRoot()
                    for c in 0..<n { dst[c] = src[c] * inv * (weightOffset + w[c]) }
                }
            }
        }
    }

    public func geluTanh(_ a: Matrix, times b: Matrix?, into out: Matrix) {
        precondition(out.columns == a.columns && (b == nil || (b!.columns == a.columns && b!.rows == a.rows)))
        out.setRows(a.rows)
        let total = a.rows * a.columns
        let ap = a.storage, bp = b?.storage, op = out.storage
        parallel(total, minChunk: 1 << 14) { i0, i1, _ in
            ck_gelu_tanh(ap + i0, bp.map { $0 + i0 }, op + i0, Int64(i1 - i0))
        }
    }

    public func add(_ y: Matrix, into x: Matrix) {
        precondition(x.columns == y.columns && x.rows == y.rows, "add shape mismatch")
        let xp = x.storage, yp = y.storage
        parallel(x.rows * x.columns, minChunk: 1 << 15) { i0, i1, _ in
            ck_axpy(1, yp + i0, xp + i0, Int64(i1 - i0))
        }
    }

    public func softcap(_ x: Matrix, cap: Float) {
        let xp = x.storage
        parallel(x.rows * x.columns, minChunk: 1 << 14) { i0, i1, _ in
            ck_softcap(xp + i0, Int64(i1 - i0), cap)
        }
    }

    /// inv_freq per (headDim, theta), computed once: decode steps allocate nothing.
    private var invFreqCache: (headDim: Int, theta: Float, values: [Float]) = (0, 0, [])

    private func inverseFrequencies(headDim: Int, theta: Float) -> [Float] {
        lock.lock()
        defer { lock.unlock() }
        if invFreqCache.headDim != headDim || invFreqCache.theta != theta {
            invFreqCache = (headDim, theta, ropeInverseFrequencies(headDim: headDim, theta: theta))
        }
        return invFreqCache.values
    }

    public func rope(_ x: Matrix, headDim: Int, firstPosition: Int, theta: Float) {
        precondition(headDim % 2 == 0 && x.columns % headDim == 0, "rope shape mismatch")
        let half = headDim / 2
        let invFreq = inverseFrequencies(headDim: headDim, theta: theta)
        for r in 0..<x.rows {
            let p = x.rowPointer(r)
            let position = Float(firstPosition + r)
            for i in 0..<half {
                let angle = position * invFreq[i]
                let (c, s) = (cos(angle), sin(angle))
                var base = 0
                while base < x.columns {
                    let x1 = p[base + i], x2 = p[base + half + i]
                    p[base + i] = x1 * c - x2 * s
                    p[base + half + i] = x2 * c + x1 * s
                    base += headDim
                }
            }
        }
    }

    public func attention(queries: Matrix, keys: Matrix, values: Matrix, shape: AttentionShape,
                          mask: AttentionMask, into out: Matrix) {
        withWorkspace { attention(queries: queries, keys: keys, values: values, shape: shape, mask: mask, into: out, $0) }
    }

    private func attention(queries: Matrix, keys: Matrix, values: Matrix, shape: AttentionShape,
                           mask: AttentionMask, into out: Matrix, _ ws: Workspace) {
        let d = shape.headDim
        shape.check(queries: queries, keys: keys, values: values, out: out)
        out.setRows(queries.rows)
        let group = shape.heads / shape.kvHeads
        let rows = queries.rows, block = 32
        let blocks = (rows + block - 1) / block
        let buffers = ws.perWorker(floats: Int(ck_attention_scratch_floats(Int64(block), Int64(d))))
        if rows == 1 && group <= 4 {
            // Decode: the query heads of one GQA group read each cached key and value row once,
            // as one block of `group` queries (adjacent in the row, so the row stride is d).
            let range = mask.keyRange(query: shape.queryStart, keyCount: shape.keyCount)
            parallel(shape.kvHeads) { h0, h1, w in
                withUnsafeTemporaryAllocation(of: Int64.self, capacity: 8) { bounds in
                    let lo = bounds.baseAddress!, hi = lo + 4
                    for i in 0..<group {
                        lo[i] = Int64(range.lowerBound)
                        hi[i] = Int64(range.upperBound)
                    }
                    for kvh in h0..<h1 {
                        ck_attention_block(queries.rowPointer(0) + kvh * group * d, Int64(d), Int64(group),
                                           keys.storage + shape.headOffset(kvh, columns: keys.columns), Int64(keys.columns),
                                           values.storage + shape.headOffset(kvh, columns: values.columns), Int64(values.columns), Int64(d),
                                           shape.scale, shape.softcap ?? 0, lo, hi,
                                           out.rowPointer(0) + kvh * group * d, Int64(d), buffers[w])
                    }
                }
            }
            return
        }
        // Work items: (head, block of query rows); each streams its key/value tiles once.
        parallel(shape.heads * blocks) { i0, i1, w in
            withUnsafeTemporaryAllocation(of: Int64.self, capacity: 2 * block) { bounds in
                let lo = bounds.baseAddress!, hi = lo + block
                for item in i0..<i1 {
                    let h = item / blocks, r0 = (item % blocks) * block
                    let n = min(block, rows - r0)
                    for i in 0..<n {
                        let range = mask.keyRange(query: shape.queryStart + r0 + i, keyCount: shape.keyCount)
                        lo[i] = Int64(range.lowerBound)
                        hi[i] = Int64(range.upperBound)
                    }
                    let kvh = h / group
                    ck_attention_block(queries.rowPointer(r0) + h * d, Int64(queries.columns), Int64(n),
                                       keys.storage + shape.headOffset(kvh, columns: keys.columns), Int64(keys.columns),
                                       values.storage + shape.headOffset(kvh, columns: values.columns), Int64(values.columns), Int64(d),
                                       shape.scale, shape.softcap ?? 0, lo, hi,
                                       out.rowPointer(r0) + h * d, Int64(out.columns), buffers[w])
                }
            }
        }
    }

    public func embed(_ ids: [Int], table: WeightMatrix, scale: Float, into out: Matrix) {
        precondition(out.columns == table.columns && ids.count <= out.rowCapacity)
        out.setRows(ids.count)
        for (r, id) in ids.enumerated() {
            precondition(id >= 0 && id < table.rows, "token id \(id) outside the embedding table")
            let p = out.rowPointer(r)
            table.convertRow(id, into: p)
            if scale != 1 { for c in 0..<table.columns { p[c] *= scale } }
        }
    }
}

/// A parallel region's body, handed to the C pool through its context pointer.
private struct PoolJob {
    let body: (Int, Int, Int) -> Void
}

private let runPoolJob: ck_pool_task = { context, start, end, worker in
    context!.assumingMemoryBound(to: PoolJob.self).pointee.body(Int(start), Int(end), Int(worker))
}

/// Scratch memory for one kernel call at a time: a buffer per worker and one buffer all workers
/// read (inputs prepared before a parallel region), each grown on demand and then reused.
private final class Workspace {
    private var perWorkerBuffers: [UnsafeMutablePointer<Float>] = []
    private var perWorkerFloats = 0
    private var sharedBuffer = UnsafeMutableRawPointer.allocate(byteCount: 64, alignment: 64)
    private var sharedBytes = 64
    private let workers: Int

    init(workers: Int) { self.workers = workers }

    deinit {
        perWorkerBuffers.forEach { $0.deallocate() }
        sharedBuffer.deallocate()
    }

    /// One buffer of at least `floats` floats per worker.
    func perWorker(floats: Int) -> [UnsafeMutablePointer<Float>] {
        if floats > perWorkerFloats || perWorkerBuffers.isEmpty {
            perWorkerBuffers.forEach { $0.deallocate() }
            perWorkerFloats = max(floats, perWorkerFloats)
            perWorkerBuffers = (0..<workers).map { _ in .allocate(capacity: perWorkerFloats) }
        }
        return perWorkerBuffers
    }

    /// One 64-byte aligned buffer of at least `bytes` bytes.
    func shared(bytes: Int) -> UnsafeMutableRawPointer {
        if bytes > sharedBytes {
            sharedBuffer.deallocate()
            sharedBytes = bytes
            sharedBuffer = .allocate(byteCount: bytes, alignment: 64)
        }
        return sharedBuffer
    }
}

/// RoPE's `inv_freq = 1 / theta^(arange(0, d, 2) / d)`, in float32 as the reference computes it.
func ropeInverseFrequencies(headDim: Int, theta: Float) -> [Float] {
    (0..<(headDim / 2)).map { 1 / pow(theta, Float(2 * $0) / Float(headDim)) }
}
