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
        var header = "{"
        var parts: [String] = []
        if !metadata.isEmpty {
            let m = metadata.sorted { $0.key < $1.key }.map { "\(jsonString($0.key)):\(jsonString($0.value))" }
            parts.append("\"__metadata__\":{\(m.joined(separator: ","))}")
        }
        var offset = 0
        for e in entries {
            let end = offset + e.bytes.count
            parts.append("\(jsonString(e.name)):{\"dtype\":\"\(e.dtype.rawValue)\",\"shape\":[\(e.shape.map(String.init).joined(separator: ","))],\"data_offsets\":[\(offset),\(end)]}")
            offset = end
        }
        header += parts.joined(separator: ",") + "}"
        var headerData = Data(header.utf8)
        while headerData.count % 8 != 0 { headerData.append(0x20) }
        var out = Data()
        var n = UInt64(headerData.count).littleEndian
        withUnsafeBytes(of: &n) { out.append(contentsOf: $0) }
        out.append(headerData)
        for e in entries { out.append(e.bytes) }
        return out
    }

    public func write(to url: URL) throws {
        try serialized().write(to: url, options: .atomic)
    }

    private func jsonString(_ s: String) -> String {
        let data = try! JSONSerialization.data(withJSONObject: [s], options: [.fragmentsAllowed])
        let text = String(decoding: data, as: UTF8.self)
        return String(text.dropFirst().dropLast())
    }
}
