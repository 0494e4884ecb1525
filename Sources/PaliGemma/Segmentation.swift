import Foundation
import MaskDecoder

/// An object found by `segment`: its box and a full-size mask of the original image.
public struct SegmentedObject: Codable, Sendable {
    public var object: DetectedObject
    /// The decoder's 64×64 output (logits, about −1…1) before placement.
    public var mask64: [Float]
    /// Pixels set in the full-size mask.
    public var area: Int
    /// The full-size binary mask as COCO run lengths (column-major, starting with zeros).
    public var rle: [Int]
    public var width: Int
    public var height: Int

    enum CodingKeys: String, CodingKey { case object, area, rle, width, height }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(object, forKey: .object)
        try c.encode(area, forKey: .area)
        try c.encode(["counts": rle, "size": [height, width]], forKey: .rle)
        try c.encode(width, forKey: .width)
        try c.encode(height, forKey: .height)
    }

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        object = try c.decode(DetectedObject.self, forKey: .object)
        area = try c.decode(Int.self, forKey: .area)
        let r = try c.decode([String: [Int]].self, forKey: .rle)
        rle = r["counts"] ?? []
        width = try c.decode(Int.self, forKey: .width)
        height = try c.decode(Int.self, forKey: .height)
        mask64 = []
    }

    init(object: DetectedObject, mask64: [Float], area: Int, rle: [Int], width: Int, height: Int) {
        self.object = object
        self.mask64 = mask64
        self.area = area
        self.rle = rle
        self.width = width
        self.height = height
    }

    /// The full-size binary mask, row-major (decoded from the run lengths).
    public func mask() throws -> [UInt8] { try RunLengthEncoding.decodeCOCO(rle, width: width, height: height) }
}

/// Turns `segment` output into masks with big_vision's VQ-VAE decoder (`vae-oid.npz`).
public struct Segmenter: Sendable {
    public let decoder: VQVAEMaskDecoder

    /// Loads `vae-oid.npz` (big_vision's file, or one in the same layout).
    public init(vaeFile: URL) throws {
        decoder = try VQVAEMaskDecoder(npz: vaeFile)
    }

    /// The one rule every front end uses to find the mask decoder: the file named by the user
    /// (which must exist), else `vae-oid.npz` in the model directory, else none (segment answers
    /// then carry boxes only, with a note saying so).
    public static func locate(explicit: URL?, modelDirectory: URL?) throws -> Segmenter? {
        if let explicit {
            var isDirectory: ObjCBool = false
            guard FileManager.default.fileExists(atPath: explicit.path, isDirectory: &isDirectory), !isDirectory.boolValue else {
                throw CheckpointError.missingFile(path: explicit.path, hint:
                    "The mask decoder is big_vision's vae-oid.npz (gs://big_vision/paligemma/vae-oid.npz); name an existing file.")
            }
            return try Segmenter(vaeFile: explicit)
        }
        // A big_vision tree is given as its .npz file: the decoder sits beside it.
        let folder = modelDirectory.map { $0.pathExtension.lowercased() == "npz" ? $0.deletingLastPathComponent() : $0 }
        if let file = folder?.appendingPathComponent("vae-oid.npz"), FileManager.default.fileExists(atPath: file.path) {
            return try Segmenter(vaeFile: file)
        }
        return nil
    }

    /// Objects with 4 locations and 16 codes in `text`, each with its mask placed in the box
    /// (big_vision's evaluator convention: bins / 1023, bilinear resize, threshold 0). Objects whose
    /// codes are out of range are skipped, as any other malformed output.
    public func segment(text: String, imageWidth: Int, imageHeight: Int) -> [SegmentedObject] {
        LocationParser.parse(text, imageWidth: imageWidth, imageHeight: imageHeight, requireSegmentation: true)
            .compactMap { object in
                guard let codes = object.segmentationCodes, let mask64 = try? decoder.decode(codes: codes) else { return nil }
                let box = LocationConvention.bigVision.pixelBox(y0: object.bins[0], x0: object.bins[1], y1: object.bins[2],
                                                                x1: object.bins[3], imageWidth: imageWidth, imageHeight: imageHeight)
                guard let mask = try? MaskPlacement.binaryMask(mask64, box: box, imageWidth: imageWidth, imageHeight: imageHeight),
                      let rle = try? RunLengthEncoding.cocoCounts(mask, width: imageWidth, height: imageHeight) else { return nil }
                return SegmentedObject(object: object, mask64: mask64, area: mask.reduce(0) { $0 + Int($1) },
                                       rle: rle, width: imageWidth, height: imageHeight)
            }
    }
}
