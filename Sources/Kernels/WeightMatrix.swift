import CKernels

/// How a weight matrix's elements are stored.
public enum WeightFormat: Int32, Sendable, CustomStringConvertible {
    case f32 = 0, bf16 = 1, f16 = 2

    public var bytesPerElement: Int { self == .f32 ? 4 : 2 }
    public var description: String {
        switch self {
        case .f32: return "f32"
        case .bf16: return "bf16"
        case .f16: return "f16"
        }
    }
}

/// A read-only matrix of weights (rows = output features, columns = input features), pointing
/// into memory owned elsewhere (normally a memory-mapped checkpoint that outlives it).
public struct WeightMatrix: @unchecked Sendable {
    public let format: WeightFormat
    public let rows: Int
    public let columns: Int
    public let data: UnsafeRawPointer

    public init(format: WeightFormat, rows: Int, columns: Int, data: UnsafeRawPointer) {
        self.format = format
        self.rows = rows
        self.columns = columns
        self.data = data
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
        }
    }

    /// One row as float32.
    public func row(_ r: Int) -> [Float] {
        precondition(r >= 0 && r < rows, "weight row out of range")
        return [Float](unsafeUninitializedCapacity: columns) { buf, n in
            ck_convert_row(data, format.rawValue, Int64(columns), Int64(r), buf.baseAddress!)
            n = columns
        }
    }
}

extension Float {
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
