import Foundation

/// An 8-bit RGB picture: `width × height` pixels, interleaved `R, G, B`, rows top to bottom.
public struct RGBImage: Sendable, Equatable {
    /// Width in pixels.
    public let width: Int
    /// Height in pixels.
    public let height: Int
    /// `width * height * 3` bytes, RGB interleaved, row-major.
    public var pixels: [UInt8]

    /// Wraps existing pixels; `pixels.count` must be `width * height * 3`.
    public init(width: Int, height: Int, pixels: [UInt8]) {
        precondition(width >= 0 && height >= 0 && pixels.count == width * height * 3,
                     "RGBImage: \(pixels.count) bytes do not make a \(width)×\(height) RGB image")
        self.width = width
        self.height = height
        self.pixels = pixels
    }

    /// A `width × height` image filled with one colour.
    public init(width: Int, height: Int, fill: (UInt8, UInt8, UInt8) = (0, 0, 0)) {
        precondition(width >= 0 && height >= 0, "RGBImage: negative size")
        var p = [UInt8](repeating: 0, count: width * height * 3)
        if fill != (0, 0, 0) {
            for i in stride(from: 0, to: p.count, by: 3) {
                p[i] = fill.0; p[i + 1] = fill.1; p[i + 2] = fill.2
            }
        }
        self.init(width: width, height: height, pixels: p)
    }

    /// This picture scaled to `width × height` with PIL's bicubic filter (thumbnails, sheets).
    public func resized(width: Int, height: Int) -> RGBImage {
        precondition(width > 0 && height > 0, "RGBImage.resized: empty target size")
        return PILResample.resize(self, width: width, height: height)
    }

    /// The `width × height` rectangle whose top-left corner is `x, y`; it must lie inside.
    public func cropped(x: Int, y: Int, width w: Int, height h: Int) -> RGBImage {
        precondition(x >= 0 && y >= 0 && w > 0 && h > 0 && x + w <= width && y + h <= height,
                     "RGBImage.cropped: \(w)×\(h) at \(x),\(y) is outside \(width)×\(height)")
        var out = [UInt8](repeating: 0, count: w * h * 3)
        for row in 0..<h {
            let from = ((y + row) * width + x) * 3
            out.replaceSubrange(row * w * 3..<(row + 1) * w * 3, with: pixels[from..<from + w * 3])
        }
        return RGBImage(width: w, height: h, pixels: out)
    }

    /// Copies `other` in with its top-left corner at `x, y`; what falls outside is clipped.
    public mutating func paste(_ other: RGBImage, x: Int, y: Int) {
        let x0 = max(0, x), x1 = min(width, x + other.width)
        let y0 = max(0, y), y1 = min(height, y + other.height)
        guard x0 < x1, y0 < y1 else { return }
        for row in y0..<y1 {
            let src = ((row - y) * other.width + (x0 - x)) * 3
            let dst = (row * width + x0) * 3
            pixels.replaceSubrange(dst..<dst + (x1 - x0) * 3, with: other.pixels[src..<src + (x1 - x0) * 3])
        }
    }

    /// The colour at column `x`, row `y` (both must be in range).
    public func pixel(x: Int, y: Int) -> (r: UInt8, g: UInt8, b: UInt8) {
        let i = (y * width + x) * 3
        return (pixels[i], pixels[i + 1], pixels[i + 2])
    }
}
