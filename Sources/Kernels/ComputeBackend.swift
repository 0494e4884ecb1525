/// Which keys a query may attend to. Positions are indices into the key sequence.
public enum AttentionMask: Sendable, Equatable {
    /// Every query sees every key (vision encoders).
    case bidirectional
    /// A prefix-LM: queries and keys both inside the first `prefixLength` positions see each
    /// other; otherwise a query at i sees keys j ≤ i, and with a `window`, only j > i − window.
    case prefixLM(prefixLength: Int, window: Int?)

    /// The keys query `q` sees among 0..<keyCount: always one contiguous range. A prefix query
    /// sees the whole prefix (bidirectional, no window); a later query sees (q − window, q].
    @inline(__always)
    public func keyRange(query q: Int, keyCount: Int) -> Range<Int> {
        switch self {
        case .bidirectional:
            return 0..<keyCount
        case let .prefixLM(prefix, window):
            if q < prefix { return 0..<min(prefix, keyCount) }
            let end = min(q + 1, keyCount)
            let start = window.map { max(0, q - $0 + 1) } ?? 0
            return min(start, end)..<end
        }
    }

    /// Whether the query at index `q` may attend to the key at index `k`.
    @inline(__always)
    public func allows(query q: Int, key k: Int) -> Bool {
        switch self {
        case .bidirectional:
            return true
        case let .prefixLM(prefix, window):
            if q < prefix && k < prefix { return true }
            guard k <= q else { return false }
            if let window { return k > q - window }
            return true
        }
    }
}

/// The geometry and scalars of one attention call.
public struct AttentionShape: Sendable {
    public var heads: Int
    public var kvHeads: Int
    public var headDim: Int
    /// Multiplies q·k.
    public var scale: Float
    /// When set, scores become `cap · tanh(score / cap)` before masking.
    public var softcap: Float?
    /// Sequence index of the first query row.
    public var queryStart: Int
    /// Keys (and values) 0..<keyCount are valid.
    public var keyCount: Int
    /// Where KV head h's keys and values lie. nil: columns h·headDim ..< (h+1)·headDim of rows
    /// 0..<keyCount, as the projections produce them. n: rows h·n ..< h·n + keyCount of a
    /// headDim-wide matrix, each head's rows contiguous (the decoder's cache: decode then reads
    /// one stream per head instead of rows strided by every head's width).
    public var headRows: Int?

    /// Checks the buffers fit this shape (an internal invariant: callers size them from the config).
    func check(queries: Matrix, keys: Matrix, values: Matrix, out: Matrix) {
        precondition(queries.columns == heads * headDim && out.columns == heads * headDim)
        precondition(heads % kvHeads == 0)
        if let n = headRows {
            precondition(keys.columns == headDim && values.columns == headDim && keyCount <= n)
            precondition(kvHeads * n <= keys.rowCapacity && kvHeads * n <= values.rowCapacity)
        } else {
            precondition(keys.columns == kvHeads * headDim && values.columns == kvHeads * headDim)
            precondition(keyCount <= keys.rowCapacity && keyCount <= values.rowCapacity)
        }
    }

    /// Offset in a key or value matrix's storage (`columns` wide) of KV head `head`'s first
    /// element; its consecutive keys are a row (`columns`) apart in either layout.
    func headOffset(_ head: Int, columns: Int) -> Int {
        headRows.map { head * $0 * columns } ?? head * headDim
    }

    public init(heads: Int, kvHeads: Int, headDim: Int, scale: Float, softcap: Float?, queryStart: Int, keyCount: Int,
                headRows: Int? = nil) {
        self.heads = heads
        self.kvHeads = kvHeads
        self.headDim = headDim
        self.scale = scale
        self.softcap = softcap
        self.queryStart = queryStart
        self.keyCount = keyCount
        self.headRows = headRows
    }
}

/// The numeric operations a transformer needs, over float32 activations. Implementations:
/// `ReferenceBackend` (plain loops, the test oracle) and `FastBackend` (SIMD + threads).
/// Model code calls only these, so kernels can be replaced without touching it.
public protocol ComputeBackend: Sendable {
    var name: String { get }

    /// `out[r] = x[r] · Wᵀ + bias` for each active row r of x. x: [rows, W.columns], out: [rows, W.rows].
    func linear(_ x: Matrix, _ weight: WeightMatrix, bias: [Float]?, into out: Matrix)

    /// `out = x · Wᵀ` with every row computed bit for bit as `linear` computes that row alone,
    /// in one pass over the weights (decode of several sequences at once). Returns false, having
    /// done nothing, when this backend has no such kernel for these weights.
    func linearEachRow(_ x: Matrix, _ weight: WeightMatrix, into out: Matrix) -> Bool

    /// LayerNorm of each row: `(x − mean) / sqrt(var + eps) · gamma + beta` (statistics in float32).
    func layerNorm(_ x: Matrix, gamma: [Float], beta: [Float], eps: Float, into out: Matrix)

    /// RMSNorm of each row: `x · rsqrt(mean(x²) + eps) · (weightOffset + weight)`.
    func rmsNorm(_ x: Matrix, weight: [Float], weightOffset: Float, eps: Float, into out: Matrix)

    /// `out = gelu_tanh(a) · b` elementwise, or `gelu_tanh(a)` when b is nil. out may be a.
    func geluTanh(_ a: Matrix, times b: Matrix?, into out: Matrix)

    /// `x += y` elementwise over the active rows.
    func add(_ y: Matrix, into x: Matrix)

    /// `x = cap · tanh(x / cap)` elementwise.
    func softcap(_ x: Matrix, cap: Float)

    /// Rotary position embedding (rotate-half form) applied in place to every head of each row;
    /// row r has position `firstPosition + r`; `inv_freq[i] = 1 / theta^(2i / headDim)`.
    func rope(_ x: Matrix, headDim: Int, firstPosition: Int, theta: Float)

    /// Scaled dot-product attention. queries: [rows, heads·headDim]; keys/values: [≥ keyCount,
    /// kvHeads·headDim]; kv head j serves query heads j·G ..< (j+1)·G with G = heads / kvHeads.
    /// Softmax in float32 over the keys the mask allows. out: [rows, heads·headDim].
    func attention(queries: Matrix, keys: Matrix, values: Matrix, shape: AttentionShape,
                   mask: AttentionMask, into out: Matrix)

    /// `out[r] = table[ids[r]] · scale` for each id, filling rows 0..<ids.count of out.
    func embed(_ ids: [Int], table: WeightMatrix, scale: Float, into out: Matrix)
}

extension ComputeBackend {
    public func linearEachRow(_ x: Matrix, _ weight: WeightMatrix, into out: Matrix) -> Bool { false }
}
