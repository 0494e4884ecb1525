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
        fileNames = checkpoint.files.map { ($0.path as NSString).lastPathComponent }
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

    /// A matrix read in place from the memory map. `shape` is the tensor's shape on disk; every
    /// dimension after the first is flattened into the columns (Conv2d weights become matrices).
    func matrix(_ name: String, shape: [Int]) throws -> WeightMatrix {
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
