import Foundation

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Element types a safetensors file can declare (the `dtype` strings of the format).
public enum SafeTensorsDType: String, Sendable, CaseIterable, Codable {
    case f64 = "F64", f32 = "F32", f16 = "F16", bf16 = "BF16"
    case i64 = "I64", i32 = "I32", i16 = "I16", i8 = "I8"
    case u64 = "U64", u32 = "U32", u16 = "U16", u8 = "U8"
    case bool = "BOOL"
    case f8e4m3 = "F8_E4M3", f8e5m2 = "F8_E5M2"

    /// Bytes per element.
    public var size: Int {
        switch self {
        case .f64, .i64, .u64: return 8
        case .f32, .i32, .u32: return 4
        case .f16, .bf16, .i16, .u16: return 2
        case .i8, .u8, .bool, .f8e4m3, .f8e5m2: return 1
        }
    }
}

/// What can go wrong reading a safetensors file or a sharded checkpoint. Every case names the file.
public enum SafeTensorsError: Error, CustomStringConvertible, Equatable, Sendable {
    case cannotOpen(file: String, reason: String)
    case truncated(file: String, size: Int, needed: Int)
    case headerTooLarge(file: String, headerBytes: UInt64, fileBytes: Int)
    case headerNotJSON(file: String, reason: String)
    case badEntry(file: String, tensor: String, reason: String)
    case unsupportedDType(file: String, tensor: String, dtype: String)
    case offsetsOutOfBounds(file: String, tensor: String, end: Int, dataBytes: Int)
    case sizeMismatch(file: String, tensor: String, shape: [Int], dtype: String, bytes: Int)
    case overlapping(file: String, first: String, second: String)
    case badIndex(file: String, reason: String)
    case missingShard(index: String, shard: String)
    case missingTensor(name: String, checkedFiles: [String])

    public var description: String {
        switch self {
        case let .cannotOpen(file, reason):
            return "\(file): cannot open (\(reason))"
        case let .truncated(file, size, needed):
            return "\(file): file is truncated: \(size) bytes, but its header needs \(needed). Re-download the file."
        case let .headerTooLarge(file, headerBytes, fileBytes):
            return "\(file): header claims \(headerBytes) bytes but the file has only \(fileBytes). The file is truncated or not safetensors."
        case let .headerNotJSON(file, reason):
            return "\(file): header is not valid safetensors JSON (\(reason)). The file is corrupt or not safetensors."
        case let .badEntry(file, tensor, reason):
            return "\(file): tensor '\(tensor)': \(reason)"
        case let .unsupportedDType(file, tensor, dtype):
            return "\(file): tensor '\(tensor)' has unsupported dtype '\(dtype)'"
        case let .offsetsOutOfBounds(file, tensor, end, dataBytes):
            return "\(file): tensor '\(tensor)' ends at byte \(end) of the data section, which has only \(dataBytes) bytes. The file is truncated or its header lies."
        case let .sizeMismatch(file, tensor, shape, dtype, bytes):
            return "\(file): tensor '\(tensor)' of shape \(shape) and dtype \(dtype) cannot occupy \(bytes) bytes"
        case let .overlapping(file, first, second):
            return "\(file): tensors '\(first)' and '\(second)' overlap in the data section"
        case let .badIndex(file, reason):
            return "\(file): bad checkpoint index (\(reason))"
        case let .missingShard(index, shard):
            return "\(index) lists shard '\(shard)', which is missing. Download every shard of the checkpoint."
        case let .missingTensor(name, files):
            return "tensor '\(name)' not found in \(files.joined(separator: ", "))"
        }
    }
}

/// One tensor inside a mapped file: its dtype, shape and bytes (valid while the file is alive).
// @unchecked Sendable: every field is a `let`, and `data` points into a read-only (PROT_READ)
// memory map that nothing writes.
public struct TensorInfo: @unchecked Sendable {
    public let name: String
    public let dtype: SafeTensorsDType
    public let shape: [Int]
    /// Start of the tensor's bytes inside the memory map.
    public let data: UnsafeRawPointer
    public let byteCount: Int
    /// The file this tensor lives in (for error messages).
    public let file: String
    public var elementCount: Int { shape.reduce(1, *) }

    public init(name: String, dtype: SafeTensorsDType, shape: [Int], data: UnsafeRawPointer, byteCount: Int, file: String) {
        self.name = name
        self.dtype = dtype
        self.shape = shape
        self.data = data
        self.byteCount = byteCount
        self.file = file
    }

    /// Copies the tensor out as float32 (F32, F16, BF16 only). For tests and small tensors.
    public func floats() throws -> [Float] {
        let n = elementCount
        switch dtype {
        case .f32:
            return (0..<n).map { data.loadUnaligned(fromByteOffset: $0 * 4, as: Float.self) }
        case .bf16:
            return (0..<n).map { Float(bitPattern: UInt32(data.loadUnaligned(fromByteOffset: $0 * 2, as: UInt16.self)) << 16) }
        case .f16:
            return (0..<n).map { halfToFloat(data.loadUnaligned(fromByteOffset: $0 * 2, as: UInt16.self)) }
        default:
            throw SafeTensorsError.unsupportedDType(file: file, tensor: name, dtype: dtype.rawValue)
        }
    }

    /// Copies an integer tensor out as Int (I64, I32, I16, I8, U8 …).
    public func integers() throws -> [Int] {
        let n = elementCount
        switch dtype {
        case .i64: return (0..<n).map { Int(data.loadUnaligned(fromByteOffset: $0 * 8, as: Int64.self)) }
        case .i32: return (0..<n).map { Int(data.loadUnaligned(fromByteOffset: $0 * 4, as: Int32.self)) }
        case .i16: return (0..<n).map { Int(data.loadUnaligned(fromByteOffset: $0 * 2, as: Int16.self)) }
        case .i8: return (0..<n).map { Int(data.load(fromByteOffset: $0, as: Int8.self)) }
        case .u8, .bool: return (0..<n).map { Int(data.load(fromByteOffset: $0, as: UInt8.self)) }
        case .u16: return (0..<n).map { Int(data.loadUnaligned(fromByteOffset: $0 * 2, as: UInt16.self)) }
        case .u32: return (0..<n).map { Int(data.loadUnaligned(fromByteOffset: $0 * 4, as: UInt32.self)) }
        default:
            throw SafeTensorsError.unsupportedDType(file: file, tensor: name, dtype: dtype.rawValue)
        }
    }
}

/// IEEE half-precision bits to Float.
func halfToFloat(_ h: UInt16) -> Float {
    let sign = UInt32(h & 0x8000) << 16
    let exp = Int((h >> 10) & 0x1F)
    let mant = UInt32(h & 0x3FF)
    if exp == 0 {
        let v = Float(mant) * 0x1p-24
        return sign != 0 ? -v : v
    } else if exp == 31 {
        return Float(bitPattern: sign | 0x7F80_0000 | (mant << 13))
    }
    return Float(bitPattern: sign | UInt32(exp - 15 + 127) << 23 | (mant << 13))
}

/// A read-only memory map of a whole file, unmapped when released.
// @unchecked Sendable: immutable after init, and the map is read-only (PROT_READ); it is unmapped
// only in deinit, when no reference to it is left.
public final class MappedFile: @unchecked Sendable {
    public let path: String
    public let base: UnsafeRawPointer?
    public let count: Int

    /// - Parameter populate: fault every page in now (one sequential read) rather than on first use.
    public init(path: String, populate: Bool = false) throws {
        self.path = path
        let fd = open(path, O_RDONLY)
        guard fd >= 0 else {
            throw SafeTensorsError.cannotOpen(file: path, reason: String(cString: strerror(errno)))
        }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0 else {
            throw SafeTensorsError.cannotOpen(file: path, reason: String(cString: strerror(errno)))
        }
        if (st.st_mode & S_IFMT) == S_IFDIR {
            throw SafeTensorsError.cannotOpen(file: path, reason: "is a directory")
        }
        count = Int(st.st_size)
        if count == 0 {
            base = nil
            return
        }
        var flags = MAP_PRIVATE
        #if os(Linux)
        if populate { flags |= MAP_POPULATE }
        #endif
        let p = mmap(nil, count, PROT_READ, flags, fd, 0)
        guard let p, p != MAP_FAILED else {
            throw SafeTensorsError.cannotOpen(file: path, reason: "mmap failed: \(String(cString: strerror(errno)))")
        }
        base = UnsafeRawPointer(p)
    }

    deinit {
        if let base { munmap(UnsafeMutableRawPointer(mutating: base), count) }
    }
}

/// One `.safetensors` file, memory-mapped; its header is fully validated on open.
public final class SafeTensorsFile: Sendable {
    public let path: String
    public let metadata: [String: String]
    /// Tensors by name.
    public let tensors: [String: TensorInfo]
    private let mapping: MappedFile

    public init(path: String, populate: Bool = false) throws {
        let map = try MappedFile(path: path, populate: populate)
        mapping = map
        self.path = path
        let file = (path as NSString).lastPathComponent
        guard map.count >= 8, let base = map.base else {
            throw SafeTensorsError.truncated(file: path, size: map.count, needed: 8)
        }
        let headerLength = UInt64(littleEndian: base.loadUnaligned(as: UInt64.self))
        guard headerLength <= UInt64(map.count - 8) else {
            throw SafeTensorsError.headerTooLarge(file: path, headerBytes: headerLength, fileBytes: map.count)
        }
        let headerBytes = Data(bytes: base + 8, count: Int(headerLength))
        let json: Any
        do {
            json = try JSONSerialization.jsonObject(with: headerBytes)
        } catch {
            throw SafeTensorsError.headerNotJSON(file: path, reason: "\(error.localizedDescription)")
        }
        guard let object = json as? [String: Any] else {
            throw SafeTensorsError.headerNotJSON(file: path, reason: "top level is not an object")
        }
        let dataStart = 8 + Int(headerLength)
        let dataBytes = map.count - dataStart
        var meta: [String: String] = [:]
        var found: [String: TensorInfo] = [:]
        var spans: [(begin: Int, end: Int, name: String)] = []
        for (name, value) in object {
            if name == "__metadata__" {
                if let m = value as? [String: Any] {
                    for (k, v) in m { meta[k] = "\(v)" }
                }
                continue
            }
            guard let entry = value as? [String: Any] else {
                throw SafeTensorsError.badEntry(file: path, tensor: name, reason: "entry is not an object")
            }
            guard let dtypeName = entry["dtype"] as? String else {
                throw SafeTensorsError.badEntry(file: path, tensor: name, reason: "missing dtype")
            }
            guard let dtype = SafeTensorsDType(rawValue: dtypeName) else {
                throw SafeTensorsError.unsupportedDType(file: path, tensor: name, dtype: dtypeName)
            }
            guard let shapeValues = entry["shape"] as? [Any],
                  let shape = Self.nonNegativeInts(shapeValues) else {
                throw SafeTensorsError.badEntry(file: path, tensor: name, reason: "shape is not a list of non-negative integers")
            }
            guard let offsetValues = entry["data_offsets"] as? [Any], offsetValues.count == 2,
                  let offsets = Self.nonNegativeInts(offsetValues), offsets[0] <= offsets[1] else {
                throw SafeTensorsError.badEntry(file: path, tensor: name, reason: "data_offsets must be [begin, end] with 0 ≤ begin ≤ end")
            }
            let (begin, end) = (offsets[0], offsets[1])
            guard end <= dataBytes else {
                throw SafeTensorsError.offsetsOutOfBounds(file: path, tensor: name, end: end, dataBytes: dataBytes)
            }
            var elements = 1
            var overflow = false
            for d in shape {
                let (r, o) = elements.multipliedReportingOverflow(by: d)
                elements = r
                overflow = overflow || o
            }
            let (bytes, o2) = elements.multipliedReportingOverflow(by: dtype.size)
            guard !overflow, !o2, bytes == end - begin else {
                throw SafeTensorsError.sizeMismatch(file: path, tensor: name, shape: shape, dtype: dtypeName, bytes: end - begin)
            }
            found[name] = TensorInfo(name: name, dtype: dtype, shape: shape, data: base + dataStart + begin,
                                     byteCount: bytes, file: file)
            if bytes > 0 { spans.append((begin, end, name)) }
        }
        spans.sort { $0.begin < $1.begin }
        for i in spans.indices.dropFirst() where spans[i].begin < spans[i - 1].end {
            throw SafeTensorsError.overlapping(file: path, first: spans[i - 1].name, second: spans[i].name)
        }
        metadata = meta
        tensors = found
    }

    private static func nonNegativeInts(_ values: [Any]) -> [Int]? {
        var out: [Int] = []
        for v in values {
            // JSONSerialization yields NSNumber; refuse fractions, negatives and huge values.
            guard let n = v as? NSNumber else { return nil }
            let d = n.doubleValue
            guard d >= 0, d < 9.0e15, d == d.rounded() else { return nil }
            out.append(Int(d))
        }
        return out
    }
}

/// A checkpoint: one `model.safetensors`, or the shards named by `model.safetensors.index.json`.
public final class SafeTensorsCheckpoint: Sendable {
    /// The safetensors files mapped (none for a checkpoint assembled from other tensors).
    public let files: [SafeTensorsFile]
    private let byName: [String: TensorInfo]
    /// What the tensors of an assembled checkpoint point into, kept alive with it.
    private let owners: [any AnyObject & Sendable]

    /// Opens the checkpoint in `directory`: the index when present, else `model.safetensors`,
    /// else every `*.safetensors` file.
    public convenience init(directory: URL) throws {
        let fm = FileManager.default
        let index = directory.appendingPathComponent("model.safetensors.index.json")
        var paths: [String] = []
        if fm.fileExists(atPath: index.path) {
            let data: Data
            do { data = try Data(contentsOf: index) } catch {
                throw SafeTensorsError.badIndex(file: index.path, reason: error.localizedDescription)
            }
            guard let obj = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any],
                  let map = obj["weight_map"] as? [String: Any] else {
                throw SafeTensorsError.badIndex(file: index.path, reason: "no weight_map object")
            }
            var shards = Set<String>()
            for (tensor, file) in map {
                guard let f = file as? String, !f.contains("/"), !f.isEmpty else {
                    throw SafeTensorsError.badIndex(file: index.path, reason: "tensor '\(tensor)' maps to an invalid file name")
                }
                shards.insert(f)
            }
            for shard in shards.sorted() {
                let p = directory.appendingPathComponent(shard).path
                guard fm.fileExists(atPath: p) else {
                    throw SafeTensorsError.missingShard(index: index.path, shard: shard)
                }
                paths.append(p)
            }
        } else {
            let single = directory.appendingPathComponent("model.safetensors").path
            if fm.fileExists(atPath: single) {
                paths = [single]
            } else {
                let names = (try? fm.contentsOfDirectory(atPath: directory.path)) ?? []
                paths = names.filter { $0.hasSuffix(".safetensors") }.sorted().map {
                    directory.appendingPathComponent($0).path
                }
            }
            guard !paths.isEmpty else {
                throw SafeTensorsError.cannotOpen(file: directory.path,
                    reason: "no model.safetensors, model.safetensors.index.json or *.safetensors file")
            }
        }
        try self.init(paths: paths)
    }

    /// Opens the given files as one checkpoint. A tensor name present in two files is an error.
    /// Files that together fit in half the machine's memory are pre-faulted on open, so the first
    /// request does not pay for page faults; larger ones are paged in on demand.
    public init(paths: [String]) throws {
        let total = paths.reduce(0) { sum, p in
            sum + ((try? FileManager.default.attributesOfItem(atPath: p)[.size] as? Int) ?? 0)
        }
        let populate = Double(total) < 0.5 * Double(ProcessInfo.processInfo.physicalMemory)
        files = try paths.map { try SafeTensorsFile(path: $0, populate: populate) }
        var merged: [String: TensorInfo] = [:]
        for f in files {
            for (name, info) in f.tensors {
                if let other = merged[name] {
                    throw SafeTensorsError.badEntry(file: f.path, tensor: name,
                        reason: "also present in \(other.file)")
                }
                merged[name] = info
            }
        }
        byName = merged
        owners = []
    }

    /// A checkpoint assembled from tensors read another way (a converted layout): `owners` hold
    /// the memory they point into and live as long as the checkpoint.
    public init(tensors: [TensorInfo], owners: [any AnyObject & Sendable]) throws {
        var merged: [String: TensorInfo] = [:]
        for t in tensors {
            guard merged[t.name] == nil else { throw SafeTensorsError.badEntry(file: t.file, tensor: t.name, reason: "given twice") }
            merged[t.name] = t
        }
        files = []
        byName = merged
        self.owners = owners
    }

    /// The files the tensors come from, for messages.
    public var fileNames: [String] { Set(byName.values.map { ($0.file as NSString).lastPathComponent }).sorted() }

    /// Every tensor, in name order.
    public var tensors: [TensorInfo] { names.compactMap { byName[$0] } }

    public var names: [String] { byName.keys.sorted() }
    public subscript(name: String) -> TensorInfo? { byName[name] }

    /// The tensor called `name`, or an error naming the files searched.
    public func tensor(_ name: String) throws -> TensorInfo {
        guard let t = byName[name] else {
            throw SafeTensorsError.missingTensor(name: name, checkedFiles: files.map { ($0.path as NSString).lastPathComponent })
        }
        return t
    }
}
