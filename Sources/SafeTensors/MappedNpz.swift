import Foundation

/// Errors from reading a NumPy `.npz` archive in place.
public enum NpzError: Error, Equatable, CustomStringConvertible, Sendable {
    /// Not a ZIP archive, or its directory is damaged or cut short.
    case notAnArchive(file: String, reason: String)
    /// A member is compressed (`np.savez_compressed`) and cannot be mapped.
    case compressedMember(file: String, member: String)
    /// A member's header, dtype or size is unusable.
    case badMember(file: String, member: String, reason: String)

    public var description: String {
        switch self {
        case let .notAnArchive(f, r):
            return "\(f): not a readable .npz archive (\(r))"
        case let .compressedMember(f, m):
            return "\(f): array '\(m)' is compressed (np.savez_compressed); weights are read in place only from "
                + "uncompressed archives. Re-save it with np.savez (big_vision and Kaggle files already are)"
        case let .badMember(f, m, r):
            return "\(f): array '\(m)': \(r)"
        }
    }
}

/// A NumPy `.npz` archive of uncompressed arrays (what `np.savez` writes), memory-mapped: each
/// array is a ``TensorInfo`` pointing into the map, so a multi-gigabyte archive costs no reading
/// until its bytes are used. ZIP64 archives (members or offsets past 4 GB) are read.
///
/// dtypes: `<f4`, `<f2`, `<f8`, integers, and 2-byte void (`|V2`), which is how `ml_dtypes`'
/// bfloat16 arrays (JAX, big_vision) are saved; it is read as bf16.
public final class MappedNpzArchive: Sendable {
    public let path: String
    /// Arrays by member name without `.npy`, in archive order.
    public let keys: [String]
    public let arrays: [String: TensorInfo]
    private let mapping: MappedFile

    public init(path: String, populate: Bool = false) throws {
        let map = try MappedFile(path: path, populate: populate)
        mapping = map
        self.path = path
        let file = (path as NSString).lastPathComponent
        func broken(_ reason: String) -> NpzError { .notAnArchive(file: path, reason: reason) }
        guard let base = map.base, map.count >= 22 else { throw broken("\(map.count) bytes is too short for a ZIP archive") }
        let size = map.count
        func u16(_ at: Int) -> Int { Int(UInt16(littleEndian: base.loadUnaligned(fromByteOffset: at, as: UInt16.self))) }
        func u32(_ at: Int) -> Int { Int(UInt32(littleEndian: base.loadUnaligned(fromByteOffset: at, as: UInt32.self))) }
        func u64(_ at: Int) throws -> Int {
            let v = UInt64(littleEndian: base.loadUnaligned(fromByteOffset: at, as: UInt64.self))
            guard v <= UInt64(size) else { throw broken("a size or offset (\(v)) lies past the end of the \(size)-byte file") }
            return Int(v)
        }

        // End of central directory: the last 22 bytes, or earlier when a comment follows it.
        var eocd = -1
        var at = size - 22
        while at >= max(0, size - 22 - 0xFFFF) {
            if u32(at) == 0x0605_4B50 { eocd = at; break }
            at -= 1
        }
        guard eocd >= 0 else { throw broken("no end-of-central-directory record; the file is cut short or is no ZIP") }
        var entryCount = u16(eocd + 10)
        var directorySize = u32(eocd + 12)
        var directoryOffset = u32(eocd + 16)
        if entryCount == 0xFFFF || directorySize == 0xFFFF_FFFF || directoryOffset == 0xFFFF_FFFF {
            // ZIP64: a locator just before the record gives the offset of the 64-bit record.
            guard eocd >= 20, u32(eocd - 20) == 0x0706_4B50 else { throw broken("ZIP64 fields without a ZIP64 locator") }
            let record = try u64(eocd - 20 + 8)
            guard record + 56 <= size, u32(record) == 0x0606_4B50 else { throw broken("the ZIP64 end record is missing") }
            entryCount = try u64(record + 32)
            directorySize = try u64(record + 40)
            directoryOffset = try u64(record + 48)
        }
        guard directoryOffset <= size, directorySize <= size - directoryOffset else {
            throw broken("the central directory (\(directorySize) bytes at \(directoryOffset)) lies past the end of the \(size)-byte file")
        }

        var keys: [String] = []
        var arrays: [String: TensorInfo] = [:]
        var p = directoryOffset
        let end = directoryOffset + directorySize
        for _ in 0..<entryCount {
            guard p + 46 <= end, u32(p) == 0x0201_4B50 else { throw broken("central directory entry \(keys.count + 1) is damaged") }
            let flags = u16(p + 8), method = u16(p + 10)
            var compressed = u32(p + 20), uncompressed = u32(p + 24)
            let nameLength = u16(p + 28), extraLength = u16(p + 30), commentLength = u16(p + 32)
            var localOffset = u32(p + 46 - 4)
            guard p + 46 + nameLength + extraLength + commentLength <= end else { throw broken("central directory entry \(keys.count + 1) runs past the directory") }
            let nameBytes = UnsafeRawBufferPointer(start: base + p + 46, count: nameLength)
            var name = String(decoding: nameBytes, as: UTF8.self)
            // ZIP64 extra field (id 1): the 64-bit values of the fields saturated above, in order.
            var e = p + 46 + nameLength
            let extraEnd = e + extraLength
            while e + 4 <= extraEnd {
                let id = u16(e), length = u16(e + 2)
                var q = e + 4
                guard q + length <= extraEnd else { break }
                if id == 1 {
                    if uncompressed == 0xFFFF_FFFF, q + 8 <= e + 4 + length { uncompressed = try u64(q); q += 8 }
                    if compressed == 0xFFFF_FFFF, q + 8 <= e + 4 + length { compressed = try u64(q); q += 8 }
                    if localOffset == 0xFFFF_FFFF, q + 8 <= e + 4 + length { localOffset = try u64(q); q += 8 }
                }
                e += 4 + length
            }
            p += 46 + nameLength + extraLength + commentLength
            if name.hasSuffix("/") { continue }  // a folder entry
            if name.hasSuffix(".npy") { name.removeLast(4) }
            guard flags & 1 == 0 else { throw NpzError.badMember(file: path, member: name, reason: "is encrypted") }
            guard method == 0 else {
                if method == 8 { throw NpzError.compressedMember(file: path, member: name) }
                throw NpzError.badMember(file: path, member: name, reason: "uses ZIP compression method \(method)")
            }
            guard compressed == uncompressed else {
                throw NpzError.badMember(file: path, member: name, reason: "is stored, yet its sizes differ (\(compressed) and \(uncompressed) bytes)")
            }
            guard localOffset <= size - 30, u32(localOffset) == 0x0403_4B50 else {
                throw NpzError.badMember(file: path, member: name, reason: "its local header at \(localOffset) is missing")
            }
            let dataStart = localOffset + 30 + u16(localOffset + 26) + u16(localOffset + 28)
            guard dataStart <= size, uncompressed <= size - dataStart else {
                throw NpzError.badMember(file: path, member: name,
                    reason: "its \(uncompressed) bytes run past the end of the \(size)-byte file (cut short?)")
            }
            let member = UnsafeRawBufferPointer(start: base + dataStart, count: uncompressed)
            let info = try Self.array(member, name: name, file: file, path: path)
            if arrays[name] == nil { keys.append(name) }
            arrays[name] = info
        }
        self.keys = keys
        self.arrays = arrays
    }

    /// The tensor inside one `.npy` member: its header read, its data left in place.
    private static func array(_ member: UnsafeRawBufferPointer, name: String, file: String, path: String) throws -> TensorInfo {
        func bad(_ reason: String) -> NpzError { .badMember(file: path, member: name, reason: reason) }
        let magic: [UInt8] = [0x93, 0x4E, 0x55, 0x4D, 0x50, 0x59]
        guard member.count >= 10, Array(member[0..<6]) == magic else { throw bad("not a .npy array (no \\x93NUMPY magic)") }
        let headerStart: Int, headerLength: Int
        switch member[6] {
        case 1: (headerStart, headerLength) = (10, Int(member[8]) | Int(member[9]) << 8)
        case 2, 3:
            guard member.count >= 12 else { throw bad("header cut short") }
            headerStart = 12
            headerLength = Int(member[8]) | Int(member[9]) << 8 | Int(member[10]) << 16 | Int(member[11]) << 24
        default: throw bad(".npy format version \(member[6]) is not supported")
        }
        guard headerLength <= member.count - headerStart else { throw bad("header runs past the array's bytes") }
        let text = String(decoding: member[headerStart..<(headerStart + headerLength)], as: UTF8.self)
        let descr = try field(text, "descr", bad).trimmingCharacters(in: CharacterSet(charactersIn: "'\""))
        let order = try field(text, "fortran_order", bad)
        guard order.hasPrefix("False") else { throw bad("is Fortran-ordered; save it in C order") }
        let shapeText = try field(text, "shape", bad)
        guard shapeText.hasPrefix("("), let close = shapeText.firstIndex(of: ")") else { throw bad("shape is not a tuple") }
        var shape: [Int] = []
        for part in shapeText[shapeText.index(after: shapeText.startIndex)..<close].split(separator: ",") {
            let digits = part.trimmingCharacters(in: .whitespaces).replacingOccurrences(of: "L", with: "")
            if digits.isEmpty { continue }
            guard let d = Int(digits), d >= 0 else { throw bad("shape \(shapeText[...close]) is not a tuple of sizes") }
            shape.append(d)
        }
        let dtypes: [String: SafeTensorsDType] = [
            "<f4": .f32, "<f2": .f16, "<f8": .f64, "|V2": .bf16, "<V2": .bf16, "V2": .bf16,
            "|i1": .i8, "|u1": .u8, "<i2": .i16, "<u2": .u16, "<i4": .i32, "<u4": .u32, "<i8": .i64, "|b1": .bool,
        ]
        guard let dtype = dtypes[descr] else {
            throw bad("dtype \(descr) is not supported (little-endian floats, bfloat16 saved as |V2, or integers)")
        }
        var count = 1
        for d in shape {
            let (product, overflow) = count.multipliedReportingOverflow(by: d)
            guard !overflow else { throw bad("shape \(shape) is too large") }
            count = product
        }
        let (bytes, overflow) = count.multipliedReportingOverflow(by: dtype.size)
        let dataStart = headerStart + headerLength
        guard !overflow, bytes <= member.count - dataStart else {
            throw bad("shape \(shape) of \(descr) needs \(bytes) bytes; the archive holds \(member.count - dataStart)")
        }
        return TensorInfo(name: name, dtype: dtype, shape: shape, data: member.baseAddress! + dataStart,
                          byteCount: bytes, file: file)
    }

    /// The text after `'name':` in a `.npy` header dict, up to the end of the header.
    private static func field(_ header: String, _ name: String, _ bad: (String) -> NpzError) throws -> String {
        for quote in ["'", "\""] {
            if let r = header.range(of: quote + name + quote) {
                var rest = header[r.upperBound...].drop { $0 == " " }
                guard rest.first == ":" else { break }
                rest = rest.dropFirst().drop { $0 == " " }
                if name == "descr", let q = rest.first, q == "'" || q == "\"" {
                    let body = rest.dropFirst()
                    guard let endQuote = body.firstIndex(of: q) else { break }
                    return String(body[..<endQuote])
                }
                return String(rest)
            }
        }
        throw bad("the .npy header has no '\(name)'")
    }
}

/// Tensor bytes owned in memory, 64-byte aligned: weights rearranged while loading (for example
/// transposed from another framework's layout). Released with the last reference.
// @unchecked Sendable: written once by its creator before it is shared, read-only afterwards.
public final class TensorStorage: @unchecked Sendable {
    public let bytes: UnsafeMutableRawPointer
    public let count: Int

    public init(count: Int) {
        self.count = count
        bytes = UnsafeMutableRawPointer.allocate(byteCount: max(count, 1), alignment: 64)
    }

    deinit { bytes.deallocate() }

    /// A tensor over these bytes from `offset`.
    public func tensor(name: String, dtype: SafeTensorsDType, shape: [Int], offset: Int = 0, file: String) -> TensorInfo {
        let n = shape.reduce(1, *) * dtype.size
        precondition(offset >= 0 && offset + n <= count, "tensor \(name) past its storage")
        return TensorInfo(name: name, dtype: dtype, shape: shape, data: UnsafeRawPointer(bytes + offset), byteCount: n, file: file)
    }
}

/// Writes the transpose of a `rows × columns` matrix of `elementSize`-byte elements (row-major,
/// rows `sourceStride` elements apart) to `destination` as `columns × rows`, in cache-sized tiles.
public func transposeElements(_ source: UnsafeRawPointer, rows: Int, columns: Int, sourceStride: Int? = nil,
                              elementSize: Int, into destination: UnsafeMutableRawPointer) {
    let stride = sourceStride ?? columns
    let tile = 32
    // Loads are unaligned: arrays inside an archive start wherever its headers end.
    func run<T: BitwiseCopyable>(_: T.Type) {
        let size = MemoryLayout<T>.size
        let d = destination.bindMemory(to: T.self, capacity: rows * columns)
        var r0 = 0
        while r0 < rows {
            let r1 = min(r0 + tile, rows)
            var c0 = 0
            while c0 < columns {
                let c1 = min(c0 + tile, columns)
                for r in r0..<r1 {
                    for c in c0..<c1 { d[c * rows + r] = source.loadUnaligned(fromByteOffset: (r * stride + c) * size, as: T.self) }
                }
                c0 = c1
            }
            r0 = r1
        }
    }
    switch elementSize {
    case 1: run(UInt8.self)
    case 2: run(UInt16.self)
    case 4: run(UInt32.self)
    case 8: run(UInt64.self)
    default: preconditionFailure("element size \(elementSize)")
    }
}
