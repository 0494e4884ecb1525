import Foundation

/// How `ImagePreprocessor` scales pictures to the model's square input.
public enum ResizeFilter: Sendable {
    /// PIL's `Image.resize(..., BICUBIC)`, bit-identical; what transformers'
    /// `SiglipImageProcessor` (PIL backend) uses.
    case bicubicPIL
    /// Antialiased bilinear on floats as in big_vision (`jax.image.resize` / `tf.image.resize`
    /// with `antialias=True`), the resize the model was trained with.
    case bilinearAntialias
}

/// Turns an `RGBImage` into PaliGemma's pixel tensor: a `size × size` resize ignoring the
/// aspect ratio, then `x / 255`, then `(x − 0.5) / 0.5`, channels first.
public struct ImagePreprocessor: Sendable {
    /// The square side length in pixels (224, 448 or 896 for PaliGemma 2).
    public let size: Int
    /// The resize algorithm.
    public let filter: ResizeFilter

    /// A preprocessor for `size × size` inputs.
    public init(size: Int, filter: ResizeFilter = .bicubicPIL) {
        precondition(size > 0, "ImagePreprocessor: size must be positive")
        self.size = size
        self.filter = filter
    }

    /// The picture resized to `size × size` (for `.bilinearAntialias`, rounded to 8 bits).
    public func resized(_ image: RGBImage) -> RGBImage {
        switch filter {
        case .bicubicPIL:
            return PILResample.resize(image, width: size, height: size)
        case .bilinearAntialias:
            let f = resizedFloat(image)
            return RGBImage(width: size, height: size,
                            pixels: f.map { UInt8(max(0, min(255, $0.rounded()))) })
        }
    }

    func resizedFloat(_ image: RGBImage) -> [Float] {
        AntialiasBilinear.resize(image.pixels.map(Float.init), width: image.width, height: image.height,
                                 outW: size, outH: size)
    }

    /// The values transformers produces for one pixel byte: `float32(float64(v) * (1/255))`,
    /// then `(x − 0.5) / 0.5` in float32.
    static let byteToValue: [Float] = (0..<256).map { v in
        let rescaled = Float(Double(v) * (1.0 / 255.0))
        return (rescaled - Float(0.5)) / Float(0.5)
    }

    /// `3 × size × size` floats in `[-1, 1]`, channel-first (all R, then G, then B).
    public func pixelValues(_ image: RGBImage) -> [Float] {
        let plane = size * size
        var out = [Float](repeating: 0, count: 3 * plane)
        switch filter {
        case .bicubicPIL:
            let r = resized(image)
            let lut = Self.byteToValue
            r.pixels.withUnsafeBufferPointer { p in
                out.withUnsafeMutableBufferPointer { o in
                    for i in 0..<plane {
                        o[i] = lut[Int(p[3 * i])]
                        o[plane + i] = lut[Int(p[3 * i + 1])]
                        o[2 * plane + i] = lut[Int(p[3 * i + 2])]
                    }
                }
            }
        case .bilinearAntialias:
            let f = resizedFloat(image)
            for i in 0..<plane {
                for c in 0..<3 { out[c * plane + i] = f[3 * i + c] / 127.5 - 1 }
            }
        }
        return out
    }
}
