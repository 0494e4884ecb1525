import Foundation
import ZIPFoundation

/// Errors from reading `.npy` arrays and `.npz` archives.
public enum NumPyError: Error, Equatable, CustomStringConvertible, Sendable {
    case fileNotFound(path: String)
    /// The file is not a readable ZIP archive (garbage, truncated, or an unsupported ZIP feature).
    case notAZipArchive(path: String, reason: String)
    /// An entry could not be extracted (bad compression data, checksum mismatch, too large).
    case unreadableEntry(key: String, reason: String)
    case missingKey(key: String, available: [String])
    case badHeader(key: String, reason: String)
    case unsupportedDType(key: String, descr: String)
    case fortranOrder(key: String)
    /// The payload holds fewer bytes than the header's shape and dtype need.
    case truncatedData(key: String, expectedBytes: Int, actualBytes: Int)

    public var description: String {
        switch self {
        case .fileNotFound(let p): return "npz: no such file: \(p)"
        case .notAZipArchive(let p, let r): return "npz: \(p) is not a readable ZIP archive (\(r))"
        case .unreadableEntry(let k, let r): return "npz: cannot read array '\(k)': \(r)"
        case .missingKey(let k, let a): return "npz: no array '\(k)' (has: \(a.joined(separator: ", ")))"
        case .badHeader(let k, let r): return "npy '\(k)': bad header: \(r)"
        case .unsupportedDType(let k, let d): return "npy '\(k)': unsupported dtype \(d) (little-endian f2/f4/f8, i1–i8, u1–u8, b1 only)"
        case .fortranOrder(let k): return "npy '\(k)': Fortran-ordered arrays are not supported; save with C order (np.ascontiguousarray)"
        case .truncatedData(let k, let e, let a): return "npy '\(k)': data has \(a) bytes, shape and dtype need \(e)"
        }
    }
}

/// Element types of `.npy` files that can be read (little-endian or byte-sized).
public enum NpyDType: String, Sendable, Equatable {
    case float16 = "f2", float32 = "f4", float64 = "f8"
    case int8 = "i1", int16 = "i2", int32 = "i4", int64 = "i8"
    case uint8 = "u1", uint16 = "u2", uint32 = "u4", uint64 = "u8"
    case bool = "b1"

    public var itemSize: Int {
        switch self {
        case .int8, .uint8, .bool: return 1
        case .float16, .int16, .uint16: return 2
        case .float32, .int32, .uint32: return 4
        case .float64, .int64, .uint64: return 8
        }
    }

    public var isFloatingPoint: Bool { self == .float16 || self == .float32 || self == .float64 }

    /// Parses a numpy `descr` such as `<f4`, `|u1`, `=i8`. Big-endian multi-byte types are refused.
    init?(descr: String) {
        guard descr.count == 3, let order = descr.first else { return nil }
        guard let t = NpyDType(rawValue: String(descr.dropFirst())) else { return nil }
        switch order {
        case "<", "=": break  // `=` is native; every platform Swift runs this on is little-endian
        case "|", ">": if t.itemSize != 1 { return nil }
        default: return nil
        }
        self = t
    }
}

/// One array from a `.npy` file: C-ordered elements, shape and dtype.
public struct NpyArray: Sendable {
    public let dtype: NpyDType
    public let shape: [Int]
    /// Number of elements (product of `shape`; 1 for a 0-d array).
    public let count: Int
    /// Exactly `count × dtype.itemSize` little-endian bytes.
    public let payload: Data

    /// Parses a complete `.npy` file. `key` names the array in errors.
    public init(npy data: Data, key: String = "array") throws {
        let bytes = [UInt8](data)
        let magic: [UInt8] = [0x93, 0x4E, 0x55, 0x4D, 0x50, 0x59]  // \x93NUMPY
        guard bytes.count >= 10, Array(bytes[0..<6]) == magic else {
            throw NumPyError.badHeader(key: key, reason: "missing \\x93NUMPY magic")
        }
        let major = bytes[6]
        let headerLength: Int
        let headerStart: Int
        switch major {
        case 1:
            headerLength = Int(bytes[8]) | Int(bytes[9]) << 8
            headerStart = 10
        case 2, 3:
            guard bytes.count >= 12 else { throw NumPyError.badHeader(key: key, reason: "file too short") }
            headerLength = Int(bytes[8]) | Int(bytes[9]) << 8 | Int(bytes[10]) << 16 | Int(bytes[11]) << 24
            headerStart = 12
        default:
            throw NumPyError.badHeader(key: key, reason: "unsupported format version \(major).\(bytes[7])")
        }
        guard headerLength <= bytes.count - headerStart else {
            throw NumPyError.badHeader(key: key, reason: "header length \(headerLength) runs past the end of the file")
        }
        let headerBytes = bytes[headerStart..<(headerStart + headerLength)]
        guard let header = String(bytes: headerBytes, encoding: major == 3 ? .utf8 : .isoLatin1) else {
            throw NumPyError.badHeader(key: key, reason: "header is not text")
        }
        let fields = try NpyHeader(parsing: header, key: key)
        guard let dtype = NpyDType(descr: fields.descr) else {
            throw NumPyError.unsupportedDType(key: key, descr: fields.descr)
        }
        if fields.fortranOrder {
            // A Fortran-ordered array with at most one dimension longer than 1 has the same bytes as C
            // order, but numpy still marks some of those; refuse all of them for a clear contract.
            throw NumPyError.fortranOrder(key: key)
        }
        var count = 1
        for d in fields.shape {
            let (p, overflow) = count.multipliedReportingOverflow(by: d)
            guard d >= 0, !overflow else {
                throw NumPyError.badHeader(key: key, reason: "shape \(fields.shape) is too large")
            }
            count = p
        }
        let (needed, overflow) = count.multipliedReportingOverflow(by: dtype.itemSize)
        guard !overflow else { throw NumPyError.badHeader(key: key, reason: "shape \(fields.shape) is too large") }
        let dataStart = headerStart + headerLength
        let available = bytes.count - dataStart
        guard available >= needed else {
            throw NumPyError.truncatedData(key: key, expectedBytes: needed, actualBytes: available)
        }
        self.dtype = dtype
        self.shape = fields.shape
        self.count = count
        self.payload = Data(bytes[dataStart..<(dataStart + needed)])
    }

    /// Makes an array from values (for tests and writers).
    public init(shape: [Int], float32 values: [Float]) {
        self.dtype = .float32
        self.shape = shape
        self.count = values.count
        self.payload = values.withUnsafeBufferPointer { Data(buffer: $0) }
    }

    /// The elements converted to `Float` (integers and bools by value).
    public func floats() -> [Float] {
        if dtype == .float32 {
            return [Float](unsafeUninitializedCapacity: count) { buf, n in
                _ = payload.copyBytes(to: buf)
                n = count
            }
        }
        return doubles().map { Float($0) }
    }

    /// The elements converted to `Double`.
    public func doubles() -> [Double] {
        payload.withUnsafeBytes { (raw: UnsafeRawBufferPointer) -> [Double] in
            var out = [Double](repeating: 0, count: count)
            let s = dtype.itemSize
            for i in 0..<count {
                let o = i * s
                switch dtype {
                case .float16: out[i] = Double(halfToFloat(raw.loadUnaligned(fromByteOffset: o, as: UInt16.self).littleEndian))
                case .float32: out[i] = Double(Float(bitPattern: raw.loadUnaligned(fromByteOffset: o, as: UInt32.self).littleEndian))
                case .float64: out[i] = Double(bitPattern: raw.loadUnaligned(fromByteOffset: o, as: UInt64.self).littleEndian)
                case .int8: out[i] = Double(Int8(bitPattern: raw[o]))
                case .int16: out[i] = Double(Int16(littleEndian: raw.loadUnaligned(fromByteOffset: o, as: Int16.self)))
                case .int32: out[i] = Double(Int32(littleEndian: raw.loadUnaligned(fromByteOffset: o, as: Int32.self)))
                case .int64: out[i] = Double(Int64(littleEndian: raw.loadUnaligned(fromByteOffset: o, as: Int64.self)))
                case .uint8, .bool: out[i] = Double(raw[o])
                case .uint16: out[i] = Double(UInt16(littleEndian: raw.loadUnaligned(fromByteOffset: o, as: UInt16.self)))
                case .uint32: out[i] = Double(UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: o, as: UInt32.self)))
                case .uint64: out[i] = Double(UInt64(littleEndian: raw.loadUnaligned(fromByteOffset: o, as: UInt64.self)))
                }
            }
            return out
        }
    }

    /// The elements of an integer or bool array as `Int64`; nil for floating-point arrays
    /// and for uint64 values above `Int64.max`.
    public func int64s() -> [Int64]? {
        guard !dtype.isFloatingPoint else { return nil }
        return payload.withUnsafeBytes { (raw: UnsafeRawBufferPointer) -> [Int64]? in
            var out = [Int64](repeating: 0, count: count)
            let s = dtype.itemSize
            for i in 0..<count {
                let o = i * s
                switch dtype {
                case .int8: out[i] = Int64(Int8(bitPattern: raw[o]))
                case .int16: out[i] = Int64(Int16(littleEndian: raw.loadUnaligned(fromByteOffset: o, as: Int16.self)))
                case .int32: out[i] = Int64(Int32(littleEndian: raw.loadUnaligned(fromByteOffset: o, as: Int32.self)))
                case .int64: out[i] = Int64(littleEndian: raw.loadUnaligned(fromByteOffset: o, as: Int64.self))
                case .uint8, .bool: out[i] = Int64(raw[o])
                case .uint16: out[i] = Int64(UInt16(littleEndian: raw.loadUnaligned(fromByteOffset: o, as: UInt16.self)))
                case .uint32: out[i] = Int64(UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: o, as: UInt32.self)))
                case .uint64:
                    let v = UInt64(littleEndian: raw.loadUnaligned(fromByteOffset: o, as: UInt64.self))
                    guard v <= UInt64(Int64.max) else { return nil }
                    out[i] = Int64(v)
                case .float16, .float32, .float64: return nil
                }
            }
            return out
        }
    }
}

/// IEEE 754 binary16 → binary32 by bits (Swift's `Float16` is missing on Intel macOS).
@inline(__always)
func halfToFloat(_ h: UInt16) -> Float {
    let sign = UInt32(h & 0x8000) << 16
    let exponent = Int((h >> 10) & 0x1F)
    let mantissa = UInt32(h & 0x03FF)
    if exponent == 0x1F {  // inf / nan
        return Float(bitPattern: sign | 0x7F80_0000 | (mantissa << 13))
    }
    if exponent == 0 {  // zero / subnormal: mantissa × 2^-24
        let magnitude = Float(mantissa) * Float(bitPattern: 0x3380_0000)
        return sign != 0 ? -magnitude : magnitude
    }
    return Float(bitPattern: sign | UInt32(exponent - 15 + 127) << 23 | (mantissa << 13))
}

/// The three fields of a `.npy` header dict, e.g. `{'descr': '<f4', 'fortran_order': False, 'shape': (128, 16), }`.
struct NpyHeader {
    var descr: String
    var fortranOrder: Bool
    var shape: [Int]

    init(parsing text: String, key: String) throws {
        let chars = Array(text.unicodeScalars)
        func fail(_ reason: String) -> NumPyError { .badHeader(key: key, reason: reason) }
        /// Index just past `'name':` (either quote style).
        func valueStart(_ name: String) throws -> Int {
            for q in ["'", "\""] {
                let pattern = Array((q + name + q).unicodeScalars)
                guard chars.count >= pattern.count else { continue }
                var i = 0
                while i + pattern.count <= chars.count {
                    if Array(chars[i..<(i + pattern.count)]) == pattern {
                        var j = i + pattern.count
                        while j < chars.count, chars[j] == " " { j += 1 }
                        guard j < chars.count, chars[j] == ":" else { throw fail("no ':' after '\(name)'") }
                        j += 1
                        while j < chars.count, chars[j] == " " { j += 1 }
                        return j
                    }
                    i += 1
                }
            }
            throw fail("no '\(name)' field")
        }
        guard chars.first == "{" else { throw fail("header is not a dict") }

        var i = try valueStart("descr")
        guard i < chars.count, chars[i] == "'" || chars[i] == "\"" else {
            throw NumPyError.unsupportedDType(key: key, descr: "structured or non-string descr")
        }
        let quote = chars[i]
        i += 1
        var descr = ""
        while i < chars.count, chars[i] != quote { descr.unicodeScalars.append(chars[i]); i += 1 }
        guard i < chars.count else { throw fail("unterminated descr") }
        self.descr = descr

        i = try valueStart("fortran_order")
        let rest = String(String.UnicodeScalarView(chars[i...]))
        if rest.hasPrefix("True") { fortranOrder = true } else if rest.hasPrefix("False") { fortranOrder = false } else {
            throw fail("fortran_order is neither True nor False")
        }

        i = try valueStart("shape")
        guard i < chars.count, chars[i] == "(" else { throw fail("shape is not a tuple") }
        i += 1
        var dims: [Int] = []
        var digits = ""
        while i < chars.count, chars[i] != ")" {
            let c = chars[i]
            if c >= "0" && c <= "9" {
                digits.unicodeScalars.append(c)
            } else if c == "," || c == " " {
                if !digits.isEmpty {
                    guard let d = Int(digits) else { throw fail("shape dimension \(digits) is too large") }
                    dims.append(d)
                    digits = ""
                }
            } else if c == "L" {  // Python 2 longs
            } else {
                throw fail("unexpected '\(c)' in shape")
            }
            i += 1
        }
        guard i < chars.count else { throw fail("unterminated shape") }
        if !digits.isEmpty {
            guard let d = Int(digits) else { throw fail("shape dimension \(digits) is too large") }
            dims.append(d)
        }
        shape = dims
    }
}

/// A `.npz` archive (`np.savez` stored entries or `np.savez_compressed` deflated ones) of `.npy` arrays.
/// Arrays are read when asked for; keys are the entry names without `.npy`.
public struct NpzArchive {
    public let url: URL
    public let keys: [String]
    private let archive: Archive
    private let entries: [String: Entry]
    private let fileBytes: UInt64
    /// Entries larger than this are refused (guards against decompression bombs).
    public static let maximumEntryBytes: UInt64 = 1 << 32

    public init(url: URL) throws {
        self.url = url
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: url.path, isDirectory: &isDirectory), !isDirectory.boolValue else {
            throw NumPyError.fileNotFound(path: url.path)
        }
        fileBytes = UInt64((try? url.resourceValues(forKeys: [.fileSizeKey]).fileSize) ?? Int.max)
        do {
            archive = try Archive(url: url, accessMode: .read)
        } catch {
            throw NumPyError.notAZipArchive(path: url.path, reason: "\(error)")
        }
        var entries: [String: Entry] = [:]
        var keys: [String] = []
        for entry in archive where entry.type == .file {
            var name = entry.path
            if name.hasSuffix(".npy") { name.removeLast(4) }
            if entries[name] == nil { keys.append(name) }
            entries[name] = entry
        }
        self.entries = entries
        self.keys = keys
    }

    public func contains(_ key: String) -> Bool { entries[key] != nil }

    /// Reads and parses one array.
    public func array(_ key: String) throws -> NpyArray {
        guard let entry = entries[key] else { throw NumPyError.missingKey(key: key, available: keys) }
        guard entry.uncompressedSize <= NpzArchive.maximumEntryBytes else {
            throw NumPyError.unreadableEntry(key: key, reason: "entry of \(entry.uncompressedSize) bytes is too large")
        }
        // Both sizes come from the archive's headers, which a damaged file can fill with anything:
        // refuse a size that the entry's data cannot hold (stored data is as long as it is, deflate
        // expands at most 1032:1) before reserving memory for it.
        let (holds, overflow) = entry.compressedSize.multipliedReportingOverflow(by: entry.isCompressed ? 1032 : 1)
        guard entry.compressedSize <= fileBytes, overflow || entry.uncompressedSize <= holds else {
            throw NumPyError.unreadableEntry(key: key, reason:
                "the archive claims \(entry.uncompressedSize) bytes from \(entry.compressedSize) bytes of data in a \(fileBytes)-byte file")
        }
        var data = Data()
        data.reserveCapacity(Int(entry.uncompressedSize))
        let checksum: CRC32
        do {
            checksum = try archive.extract(entry, skipCRC32: false) { chunk in
                guard UInt64(data.count + chunk.count) <= NpzArchive.maximumEntryBytes else {
                    throw NumPyError.unreadableEntry(key: key, reason: "entry inflates past its size")
                }
                data.append(chunk)
            }
        } catch let e as NumPyError {
            throw e
        } catch {
            throw NumPyError.unreadableEntry(key: key, reason: "\(error)")
        }
        guard checksum == entry.checksum else {
            throw NumPyError.unreadableEntry(key: key, reason: "CRC-32 mismatch")
        }
        return try NpyArray(npy: data, key: key)
    }
}
