import Foundation

/// Writes tensors into the safetensors format (used by quantization and by tests that build
/// deliberately broken checkpoints).
public struct SafeTensorsWriter {
    public struct Entry {
        public var name: String
        public var dtype: SafeTensorsDType
        public var shape: [Int]
        public var bytes: Data
        public init(name: String, dtype: SafeTensorsDType, shape: [Int], bytes: Data) {
            self.name = name; self.dtype = dtype; self.shape = shape; self.bytes = bytes
        }
    }

    public private(set) var entries: [Entry] = []
    public var metadata: [String: String] = [:]

    public init() {}

    public mutating func add(_ name: String, dtype: SafeTensorsDType, shape: [Int], bytes: Data) {
        entries.append(Entry(name: name, dtype: dtype, shape: shape, bytes: bytes))
    }

    public mutating func add(_ name: String, shape: [Int], floats: [Float]) {
        let data = floats.withUnsafeBufferPointer { Data(buffer: $0) }
        add(name, dtype: .f32, shape: shape, bytes: data)
    }

    /// The serialized file: 8-byte header length, JSON header padded to 8 bytes, data.
    public func serialized() -> Data {
        var out = safeTensorsHeader(entries.map { ($0.name, $0.dtype, $0.shape, $0.bytes.count) }, metadata: metadata)
        for e in entries { out.append(e.bytes) }
        return out
    }

    public func write(to url: URL) throws {
        try serialized().write(to: url, options: .atomic)
    }

}

/// Writes a safetensors file whose tensors are too large to hold in memory: the header is written
/// from the declared entries, then each tensor's bytes are appended in order. The file appears
/// under its name only when complete (written to `<name>.partial`, then moved).
public final class SafeTensorsStreamWriter {
    public struct Entry: Sendable {
        public var name: String
        public var dtype: SafeTensorsDType
        public var shape: [Int]
        public var byteCount: Int { shape.reduce(1, *) * dtype.size }
        public init(name: String, dtype: SafeTensorsDType, shape: [Int]) {
            self.name = name; self.dtype = dtype; self.shape = shape
        }
    }

    public let url: URL
    private let partial: URL
    private let handle: FileHandle
    private let entries: [Entry]
    private var current = 0
    private var writtenInCurrent = 0
    public private(set) var totalBytes = 0
    public private(set) var bytesWritten = 0

    public init(url: URL, entries: [Entry], metadata: [String: String] = ["format": "pt"]) throws {
        self.url = url
        self.entries = entries
        partial = url.appendingPathExtension("partial")
        FileManager.default.createFile(atPath: partial.path, contents: nil)
        handle = try FileHandle(forWritingTo: partial)
        totalBytes = entries.reduce(0) { $0 + $1.byteCount }
        try handle.write(contentsOf: safeTensorsHeader(entries.map { ($0.name, $0.dtype, $0.shape, $0.byteCount) },
                                                       metadata: metadata))
        skipEmpty()
    }

    private func skipEmpty() {
        while current < entries.count && entries[current].byteCount == 0 { current += 1 }
    }

    /// Appends bytes of the current tensor (a tensor may be written in several pieces).
    public func write(_ bytes: UnsafeRawBufferPointer) throws {
        var rest = bytes
        while !rest.isEmpty {
            precondition(current < entries.count, "more bytes than the declared tensors hold")
            let room = entries[current].byteCount - writtenInCurrent
            let n = min(room, rest.count)
            try handle.write(contentsOf: Data(bytes: rest.baseAddress!, count: n))
            writtenInCurrent += n
            bytesWritten += n
            rest = UnsafeRawBufferPointer(rebasing: rest[n...])
            if writtenInCurrent == entries[current].byteCount {
                current += 1
                writtenInCurrent = 0
                skipEmpty()
            }
        }
    }

    public func write(_ data: Data) throws {
        try data.withUnsafeBytes { try write($0) }
    }

    /// Checks every declared byte was written and moves the file into place.
    public func finish() throws {
        precondition(current == entries.count, "tensor '\(current < entries.count ? entries[current].name : "")' incomplete")
        try handle.close()
        if FileManager.default.fileExists(atPath: url.path) { try FileManager.default.removeItem(at: url) }
        try FileManager.default.moveItem(at: partial, to: url)
    }

}

/// The 8-byte length and the JSON header (padded to 8 bytes) of a safetensors file whose tensors
/// follow back to back in the given order.
func safeTensorsHeader(_ entries: [(name: String, dtype: SafeTensorsDType, shape: [Int], byteCount: Int)],
                       metadata: [String: String]) -> Data {
    func quote(_ s: String) -> String {
        let data = try! JSONSerialization.data(withJSONObject: [s], options: [.fragmentsAllowed])
        return String(String(decoding: data, as: UTF8.self).dropFirst().dropLast())
    }
    var parts: [String] = []
    if !metadata.isEmpty {
        let m = metadata.sorted { $0.key < $1.key }.map { "\(quote($0.key)):\(quote($0.value))" }
        parts.append("\"__metadata__\":{\(m.joined(separator: ","))}")
    }
    var offset = 0
    for e in entries {
        let shape = e.shape.map(String.init).joined(separator: ",")
        parts.append("\(quote(e.name)):{\"dtype\":\"\(e.dtype.rawValue)\",\"shape\":[\(shape)],\"data_offsets\":[\(offset),\(offset + e.byteCount)]}")
        offset += e.byteCount
    }
    var header = Data(("{" + parts.joined(separator: ",") + "}").utf8)
    while header.count % 8 != 0 { header.append(0x20) }
    var out = Data()
    var n = UInt64(header.count).littleEndian
    withUnsafeBytes(of: &n) { out.append(contentsOf: $0) }
    out.append(header)
    return out
}
