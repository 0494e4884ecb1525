import CKernels

/// How a weight matrix's elements are stored.
public enum WeightFormat: Int32, Sendable, CustomStringConvertible {
    case f32 = 0, bf16 = 1, f16 = 2
    /// int8, one f16 scale per 32 consecutive inputs (8.5 bits per weight).
    case q8 = 3
    /// 4-bit, one f16 scale per 32 consecutive inputs (4.5 bits per weight); see ckernels.h.
    case q4 = 4

    /// Elements sharing one scale in the quantized formats.
    public static let groupSize = 32

    /// Scale groups per row of `columns` inputs: q8 allows a short last group (any multiple of 4
    /// inputs, e.g. SigLIP So400m's 4304); q4 needs a multiple of 32.
    public static func groups(columns: Int) -> Int { (columns + groupSize - 1) / groupSize }

    /// Whether a matrix with `columns` inputs can be stored in this format.
    public func accepts(columns: Int) -> Bool {
        switch self {
        case .q8: return columns % 4 == 0
        case .q4: return columns % WeightFormat.groupSize == 0
        default: return true
        }
    }

    public var isQuantized: Bool { self == .q8 || self == .q4 }

    /// Bytes one stored row of `columns` inputs takes, scales not included (q4: two per byte).
    public func rowBytes(columns: Int) -> Int {
        switch self {
        case .f32: return columns * 4
        case .bf16, .f16: return columns * 2
        case .q8: return columns
        case .q4: return columns / 2
        }
    }

    /// Storage per weight including scales (one f16 per group of 32 when quantized).
    public var bytesPerWeight: Double {
        Double(rowBytes(columns: 32)) / 32 + (isQuantized ? 2.0 / 32 : 0)
    }

    public var description: String {
        switch self {
        case .f32: return "f32"
        case .bf16: return "bf16"
        case .f16: return "f16"
        case .q8: return "q8"
        case .q4: return "q4"
        }
    }
}

/// A read-only matrix of weights (rows = output features, columns = input features), pointing
/// into memory owned elsewhere (normally a memory-mapped checkpoint that outlives it).
// @unchecked Sendable: every field is a `let` and the pointers are only ever read; the memory
// they point to (a read-only map, or a buffer its owner keeps unchanged) is not written while a
// matrix refers to it.
public struct WeightMatrix: @unchecked Sendable {
    public let format: WeightFormat
    public let rows: Int
    public let columns: Int
    public let data: UnsafeRawPointer
    /// Quantized formats: f16 scales, rows × `groupsPerRow`.
    public let scales: UnsafePointer<UInt16>?

    public init(format: WeightFormat, rows: Int, columns: Int, data: UnsafeRawPointer, scales: UnsafePointer<UInt16>? = nil) {
        precondition(!format.isQuantized || (scales != nil && format.accepts(columns: columns)),
                     "quantized weights need scales and whole groups (q4) or a multiple of 4 columns (q8)")
        self.format = format
        self.rows = rows
        self.columns = columns
        self.data = data
        self.scales = scales
    }

    /// Scale groups per row (quantized formats).
    public var groupsPerRow: Int { WeightFormat.groups(columns: columns) }

    /// Whether a quantized row ends in a short group (only q8 allows it; the decode GEMVs do not
    /// take such matrices, see ckernels.h).
    public var hasShortLastGroup: Bool { format.isQuantized && columns % WeightFormat.groupSize != 0 }

    /// Bytes this matrix occupies, scales included.
    public var byteCount: Int {
        rows * format.rowBytes(columns: columns) + (format.isQuantized ? rows * groupsPerRow * 2 : 0)
    }

    /// One element as float32 (reference paths and tests).
    @inline(__always)
    public func value(row: Int, column: Int) -> Float {
        precondition(row >= 0 && row < rows && column >= 0 && column < columns, "weight index out of range")
        let i = row * columns + column
        switch format {
        case .f32: return data.loadUnaligned(fromByteOffset: i * 4, as: Float.self)
        case .bf16: return Float(bitPattern: UInt32(data.loadUnaligned(fromByteOffset: i * 2, as: UInt16.self)) << 16)
        case .f16: return Float(float16Bits: data.loadUnaligned(fromByteOffset: i * 2, as: UInt16.self))
        case .q8, .q4:
            let scale = Float(float16Bits: scales![row * groupsPerRow + column / 32])
            if format == .q8 { return Float(data.load(fromByteOffset: i, as: Int8.self)) * scale }
            // byte j of a group: element j (low nibble) and j + 16 (high nibble)
            let inGroup = column % 32
            let byte = data.load(fromByteOffset: row * columns / 2 + (column / 32) * 16 + inGroup % 16, as: UInt8.self)
            let nibble = inGroup < 16 ? byte & 0xF : byte >> 4
            return Float(Int(nibble) - 8) * scale
        }
    }

    /// One row as float32.
    public func row(_ r: Int) -> [Float] {
        precondition(r >= 0 && r < rows, "weight row out of range")
        return [Float](unsafeUninitializedCapacity: columns) { buf, n in
            convertRow(r, into: buf.baseAddress!)
            n = columns
        }
    }

    /// Writes row `r` as float32 into `out` (columns floats).
    public func convertRow(_ r: Int, into out: UnsafeMutablePointer<Float>) {
        if format.isQuantized {
            ck_convert_row_q(data, scales, format.rawValue, Int64(columns), Int64(r), out)
        } else {
            ck_convert_row(data, format.rawValue, Int64(columns), Int64(r), out)
        }
    }
}

extension WeightFormat {
    /// Quantizes one float32 row of `columns` values (`accepts(columns:)`) into this quantized
    /// format: `rowBytes(columns:)` bytes of codes at `codes` and `groups(columns:)` f16 scales at
    /// `scales`, the layout ``WeightMatrix`` reads.
    public func quantizeRow(_ row: UnsafePointer<Float>, columns: Int,
                            codes: UnsafeMutableRawPointer, scales: UnsafeMutablePointer<UInt16>) {
        precondition(isQuantized, "quantizeRow needs q8 or q4, not \(self)")
        ck_quantize_row(row, Int64(columns), rawValue, codes, scales)
    }
}

extension Float {
    /// The nearest IEEE half (ties to even) as its bit pattern, as quantized scales are stored.
    public var float16Bits: UInt16 { ck_f32_to_f16(self) }

    /// IEEE half-precision bits to Float.
    public init(float16Bits h: UInt16) {
        let sign = UInt32(h & 0x8000) << 16
        let exp = Int((h >> 10) & 0x1F)
        let mant = UInt32(h & 0x3FF)
        if exp == 0 {
            let v = Float(mant) * 0x1p-24
            self = sign != 0 ? -v : v
        } else if exp == 31 {
            self = Float(bitPattern: sign | 0x7F80_0000 | (mant << 13))
        } else {
            self = Float(bitPattern: sign | UInt32(exp - 15 + 127) << 23 | (mant << 13))
        }
    }

    /// Rounds to the nearest bfloat16 value (ties to even), returned as Float.
    public var roundedToBFloat16: Float {
        let bits = bitPattern
        if isNaN { return self }
        let rounded = bits &+ 0x7FFF &+ ((bits >> 16) & 1)
        return Float(bitPattern: rounded & 0xFFFF_0000)
    }

    /// Rounds to the nearest IEEE half value, returned as Float (normal range; used for scales).
    public var roundedToFloat16: Float {
        // Round the mantissa to 10 bits for normal halves.
        guard isFinite, self != 0 else { return self }
        let e = exponent
        let ulp = Float(sign: .plus, exponent: Swift.max(e, -14) - 10, significand: 1)
        return (self / ulp).rounded(.toNearestOrEven) * ulp
    }
}
