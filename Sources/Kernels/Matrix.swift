import CKernels
/// A row-major float32 matrix buffer, allocated once with a row capacity and reused: the active
/// row count changes (prefill → decode) without reallocating.
public final class Matrix {
    /// Most rows this buffer can hold.
    public let rowCapacity: Int
    /// Floats per row.
    public let columns: Int
    /// Active rows (≤ `rowCapacity`).
    public private(set) var rows: Int
    /// The storage, `rowCapacity × columns` floats, zero-initialised.
    public let storage: UnsafeMutablePointer<Float>

    /// A zeroed matrix of `rows × columns`, able to grow up to `rowCapacity` rows.
    public init(rows: Int, columns: Int, rowCapacity: Int? = nil) {
        let capacity = rowCapacity ?? rows
        precondition(rows >= 0 && columns >= 0 && capacity >= rows, "invalid matrix shape")
        self.rowCapacity = capacity
        self.columns = columns
        self.rows = rows
        storage = .allocate(capacity: max(1, capacity * columns))
        storage.initialize(repeating: 0, count: max(1, capacity * columns))
    }

    /// A matrix holding a copy of `values` (row-major, `rows × columns`).
    public convenience init(rows: Int, columns: Int, values: [Float]) {
        precondition(values.count == rows * columns, "values do not fill \(rows)×\(columns)")
        self.init(rows: rows, columns: columns)
        values.withUnsafeBufferPointer { storage.update(from: $0.baseAddress!, count: values.count) }
    }

    deinit { storage.deallocate() }

    /// Changes the active row count (no allocation).
    public func setRows(_ n: Int) {
        precondition(n >= 0 && n <= rowCapacity, "rows \(n) exceed capacity \(rowCapacity)")
        rows = n
    }

    public subscript(row: Int, column: Int) -> Float {
        get {
            precondition(row >= 0 && row < rows && column >= 0 && column < columns, "index out of range")
            return storage[row * columns + column]
        }
        set {
            precondition(row >= 0 && row < rows && column >= 0 && column < columns, "index out of range")
            storage[row * columns + column] = newValue
        }
    }

    /// Pointer to the first float of `row` (kernels only).
    @inline(__always)
    public func rowPointer(_ row: Int) -> UnsafeMutablePointer<Float> {
        storage + row * columns
    }

    /// The active rows as one array (copies; for tests and results).
    public var values: [Float] { Array(UnsafeBufferPointer(start: storage, count: rows * columns)) }

    /// One row as an array (copies).
    public func row(_ r: Int) -> [Float] {
        precondition(r >= 0 && r < rows, "row out of range")
        return Array(UnsafeBufferPointer(start: rowPointer(r), count: columns))
    }

    /// Copies `count` rows of `source` starting at `sourceRow` into this matrix at `destinationRow`.
    public func copyRows(from source: Matrix, sourceRow: Int = 0, count: Int, to destinationRow: Int) {
        precondition(source.columns == columns, "column mismatch \(source.columns) vs \(columns)")
        precondition(sourceRow >= 0 && sourceRow + count <= source.rowCapacity, "source rows out of range")
        precondition(destinationRow >= 0 && destinationRow + count <= rowCapacity, "destination rows out of range")
        (storage + destinationRow * columns).update(from: source.rowPointer(sourceRow), count: count * columns)
    }

    /// Copies columns `sourceColumn ..< sourceColumn + columns` of source rows `0 ..< count` into
    /// whole rows `destinationRow ..< destinationRow + count` (one head of a projection into a
    /// head-major cache).
    public func copyRows(from source: Matrix, columnsFrom sourceColumn: Int, count: Int, to destinationRow: Int) {
        precondition(sourceColumn >= 0 && sourceColumn + columns <= source.columns, "source columns out of range")
        precondition(count >= 0 && count <= source.rowCapacity, "source rows out of range")
        precondition(destinationRow >= 0 && destinationRow + count <= rowCapacity, "destination rows out of range")
        for r in 0..<count {
            (storage + (destinationRow + r) * columns).update(from: source.rowPointer(r) + sourceColumn, count: columns)
        }
    }

    /// Index of the first largest value in row `r` (NaNs never win), as torch.argmax; vectorised.
    public func argmax(row r: Int) -> Int {
        precondition(r >= 0 && r < rows, "row \(r) out of range")
        return Int(ck_argmax(rowPointer(r), Int64(columns)))
    }

    /// Σ exp(x − shift) over row `r`, in float32 (a vectorised exp within 2e-7 of libm's per term):
    /// the normaliser of a softmax over the vocabulary, 256k exponentials per decoded token.
    public func sumOfExponentials(row r: Int, shift: Float) -> Float {
        precondition(r >= 0 && r < rows, "row \(r) out of range")
        return ck_sum_exp(rowPointer(r), Int64(columns), shift)
    }

    /// Writes `values` into `row`.
    public func setRow(_ r: Int, _ values: [Float]) {
        precondition(r >= 0 && r < rowCapacity && values.count == columns, "row write out of range")
        values.withUnsafeBufferPointer { rowPointer(r).update(from: $0.baseAddress!, count: columns) }
    }

    /// Splits CHW images into non-overlapping `patch × patch` patches, one row per patch in
    /// row-major patch order, each row laid out (channel, dy, dx) — the layout of a Conv2d weight
    /// (out, in, kh, kw), so a stride-`patch` convolution becomes a matrix product.
    public static func patches(chw pixels: [Float], channels: Int, height: Int, width: Int, patch: Int) -> Matrix {
        precondition(pixels.count == channels * height * width, "pixel count mismatch")
        precondition(patch > 0 && height % patch == 0 && width % patch == 0, "size not divisible by patch")
        let ph = height / patch, pw = width / patch
        let m = Matrix(rows: ph * pw, columns: channels * patch * patch)
        pixels.withUnsafeBufferPointer { src in
            for py in 0..<ph {
                for px in 0..<pw {
                    let out = m.rowPointer(py * pw + px)
                    var i = 0
                    for c in 0..<channels {
                        for dy in 0..<patch {
                            let base = c * height * width + (py * patch + dy) * width + px * patch
                            for dx in 0..<patch {
                                out[i] = src[base + dx]
                                i += 1
                            }
                        }
                    }
                }
            }
        }
        return m
    }
}
