import Foundation
import Kernels
import SafeTensors

/// Reads typed, shape-checked weights out of a checkpoint, accepting the tensor-name layouts
/// in circulation, and remembers what it consumed so leftovers can be reported.
final class CheckpointReader {
    let checkpoint: SafeTensorsCheckpoint
    private(set) var consumed = Set<String>()
    private let fileNames: [String]

    init(checkpoint: SafeTensorsCheckpoint) {
        self.checkpoint = checkpoint
        fileNames = checkpoint.fileNames
    }

    /// The first prefix under which `probe` exists, e.g. "vision_tower.vision_model." (hub) or
    /// "vision_tower." (transformers 5.x `save_pretrained`).
    func prefix(among candidates: [String], probe: String) throws -> String {
        for c in candidates where checkpoint[c + probe] != nil { return c }
        throw CheckpointError.missingTensor(name: candidates[0] + probe, files: fileNames)
    }

    func has(_ name: String) -> Bool { checkpoint[name] != nil }

    private func info(_ name: String, shape: [Int]) throws -> TensorInfo {
        guard let t = checkpoint[name] else {
            throw CheckpointError.missingTensor(name: name, files: fileNames)
        }
        guard t.shape == shape else {
            throw CheckpointError.wrongShape(name: name, file: t.file, expected: shape, found: t.shape)
        }
        consumed.insert(name)
        return t
    }

    private func format(of t: TensorInfo) throws -> WeightFormat {
        switch t.dtype {
        case .f32: return .f32
        case .bf16: return .bf16
        case .f16: return .f16
        default: throw CheckpointError.unsupportedDType(name: t.name, file: t.file, dtype: t.dtype.rawValue)
        }
    }

    /// A matrix read in place from the memory map. `shape` is the tensor's logical shape; every
    /// dimension after the first is flattened into the columns (Conv2d weights become matrices).
    /// Quantized matrices (layout in docs/quantization.md) are recognised by their `<name>_scales` tensor.
    func matrix(_ name: String, shape: [Int]) throws -> WeightMatrix {
        if checkpoint[name + "_scales"] != nil, let t = checkpoint[name], shape.count == 2 {
            let (rows, columns) = (shape[0], shape[1])
            let format: WeightFormat
            switch t.dtype {
            case .i8: format = .q8
            case .u8: format = .q4
            default: throw CheckpointError.unsupportedQuantizedDType(name: name, file: t.file, dtype: t.dtype.rawValue)
            }
            guard format.accepts(columns: columns) else {
                throw CheckpointError.wrongShape(name: name, file: t.file, expected: shape, found: t.shape)
            }
            let stored = [rows, format.rowBytes(columns: columns)]
            _ = try info(name, shape: stored)
            let s = try info(name + "_scales", shape: [rows, WeightFormat.groups(columns: columns)])
            guard s.dtype == .f16, Int(bitPattern: s.data) % 2 == 0 else {
                throw CheckpointError.unsupportedQuantizedDType(name: name + "_scales", file: s.file, dtype: s.dtype.rawValue)
            }
            return WeightMatrix(format: format, rows: rows, columns: columns, data: t.data,
                                scales: s.data.assumingMemoryBound(to: UInt16.self))
        }
        let t = try info(name, shape: shape)
        let rows = shape.first ?? 1
        let columns = shape.dropFirst().reduce(1, *)
        return WeightMatrix(format: try format(of: t), rows: rows, columns: columns, data: t.data)
    }

    /// A small vector (norm weights, biases) copied out as float32.
    func vector(_ name: String, count: Int) throws -> [Float] {
        let t = try info(name, shape: [count])
        _ = try format(of: t)
        return try t.floats()
    }

    /// Throws for the first tensor no loader asked for: a checkpoint that disagrees with its config.
    func checkNothingLeft() throws {
        for name in checkpoint.names where !consumed.contains(name) {
            throw CheckpointError.unexpectedTensor(name: name, file: checkpoint[name]?.file ?? "?")
        }
    }
}
