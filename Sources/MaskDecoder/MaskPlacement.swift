import Foundation

/// An integer pixel box in an image: columns x0..<x1, rows y0..<y1. May reach outside the image;
/// empty when x1 ≤ x0 or y1 ≤ y0.
public struct PixelBox: Sendable, Equatable, CustomStringConvertible {
    public var x0: Int, y0: Int, x1: Int, y1: Int
    public init(x0: Int, y0: Int, x1: Int, y1: Int) {
        self.x0 = x0; self.y0 = y0; self.x1 = x1; self.y1 = y1
    }
    public var isEmpty: Bool { x1 <= x0 || y1 <= y0 }
    public var description: String { "[\(x0), \(y0), \(x1), \(y1))" }

    /// Pixel edges from a box in (fractional) pixel coordinates, rounded down like big_vision's `int()`
    /// on its non-negative coordinates. NaN makes the box empty; values are clamped to ±2³⁰ first so
    /// nothing overflows.
    public init(x0: Double, y0: Double, x1: Double, y1: Double) {
        func edge(_ v: Double) -> Int? {
            guard !v.isNaN else { return nil }
            return Int(min(max(v, -1_073_741_824), 1_073_741_824).rounded(.down))
        }
        guard let a = edge(x0), let b = edge(y0), let c = edge(x1), let d = edge(y1) else {
            self.init(x0: 0, y0: 0, x1: 0, y1: 0)
            return
        }
        self.init(x0: a, y0: b, x1: c, y1: d)
    }
}

/// How `<locNNNN>` bins (0…1023 of the square model input) map to pixels of the original image.
public enum LocationConvention: Sendable {
    /// big_vision's segmentation evaluator: `bin / 1023 × size`, truncated (`int()`). The default.
    case bigVision
    /// Google's PaliGemma demo (`extract_objs`): `bin / 1024 × size`, rounded half to even (Python `round`).
    case googleDemo

    /// The pixel box for the loc tokens in output order (y0, x0, y1, x1). Bins are clamped to 0…1023.
    public func pixelBox(y0: Int, x0: Int, y1: Int, x1: Int, imageWidth: Int, imageHeight: Int) -> PixelBox {
        let w = Double(max(imageWidth, 0)), h = Double(max(imageHeight, 0))
        func px(_ bin: Int, _ size: Double) -> Int {
            let b = Double(min(max(bin, 0), 1023))
            switch self {
            case .bigVision: return Int((b / 1023 * size).rounded(.towardZero))
            case .googleDemo: return Int((b / 1024 * size).rounded(.toNearestOrEven))
            }
        }
        return PixelBox(x0: px(x0, w), y0: px(y0, h), x1: px(x1, w), y1: px(y1, h))
    }
}

/// Places a decoded 64×64 mask into its box in the original image, the way big_vision's evaluator does:
/// the float logits are resized to the box size with PIL's BILINEAR filter (`Image.resize` on a mode
/// "F" image: a triangle filter, widened when shrinking so it antialiases, pixel centres at +0.5,
/// horizontal pass then vertical, float64 sums stored as float32 between passes), then thresholded
/// (`> 0`). A box reaching outside the image is resized at its full size and cropped; an empty or
/// inverted box gives an all-zero mask. Masks are row-major, `imageWidth × imageHeight`.
public enum MaskPlacement {
    /// A full-size binary mask: 1 where the resized logit is > `threshold`, 0 elsewhere and outside the box.
    public static func binaryMask(_ mask64: [Float], box: PixelBox, imageWidth: Int, imageHeight: Int,
                                  threshold: Float = 0) throws -> [UInt8] {
        let (resized, visible) = try resizeIntoBox(mask64, box: box, imageWidth: imageWidth, imageHeight: imageHeight)
        var out = [UInt8](repeating: 0, count: imageWidth * imageHeight)
        guard let v = visible else { return out }
        let vw = v.x1 - v.x0
        for y in v.y0..<v.y1 {
            let row = (y - v.y0) * vw
            for x in v.x0..<v.x1 where resized[row + x - v.x0] > threshold { out[y * imageWidth + x] = 1 }
        }
        return out
    }

    /// A full-size soft mask in [0, 1]: `clip(resized logit × 0.5 + 0.5, 0, 1)` inside the box, 0 outside.
    public static func softMask(_ mask64: [Float], box: PixelBox, imageWidth: Int, imageHeight: Int) throws -> [Float] {
        let (resized, visible) = try resizeIntoBox(mask64, box: box, imageWidth: imageWidth, imageHeight: imageHeight)
        var out = [Float](repeating: 0, count: imageWidth * imageHeight)
        guard let v = visible else { return out }
        let vw = v.x1 - v.x0
        for y in v.y0..<v.y1 {
            let row = (y - v.y0) * vw
            for x in v.x0..<v.x1 { out[y * imageWidth + x] = min(max(resized[row + x - v.x0] * 0.5 + 0.5, 0), 1) }
        }
        return out
    }

    /// Binary mask for a box in fractional pixel coordinates (edges rounded down, see `PixelBox`).
    public static func binaryMask(_ mask64: [Float], box: (x0: Double, y0: Double, x1: Double, y1: Double),
                                  imageWidth: Int, imageHeight: Int, threshold: Float = 0) throws -> [UInt8] {
        try binaryMask(mask64, box: PixelBox(x0: box.x0, y0: box.y0, x1: box.x1, y1: box.y1),
                       imageWidth: imageWidth, imageHeight: imageHeight, threshold: threshold)
    }

    /// Soft mask for a box in fractional pixel coordinates (edges rounded down, see `PixelBox`).
    public static func softMask(_ mask64: [Float], box: (x0: Double, y0: Double, x1: Double, y1: Double),
                                imageWidth: Int, imageHeight: Int) throws -> [Float] {
        try softMask(mask64, box: PixelBox(x0: box.x0, y0: box.y0, x1: box.x1, y1: box.y1),
                     imageWidth: imageWidth, imageHeight: imageHeight)
    }

    /// The resized logits over the visible part of the box (row-major, visible width × height) and
    /// that visible part in image coordinates; nil when nothing is visible.
    static func resizeIntoBox(_ mask64: [Float], box: PixelBox, imageWidth: Int, imageHeight: Int)
        throws -> ([Float], PixelBox?)
    {
        let side = VQVAEMaskDecoder.maskSide
        guard mask64.count == side * side else {
            throw MaskDecoderError.wrongMaskSize(expected: side * side, actual: mask64.count)
        }
        guard imageWidth >= 0, imageHeight >= 0, !imageWidth.multipliedReportingOverflow(by: imageHeight).overflow else {
            throw MaskDecoderError.invalidImageSize(width: imageWidth, height: imageHeight)
        }
        guard !box.isEmpty else { return ([], nil) }
        let visible = PixelBox(x0: max(box.x0, 0), y0: max(box.y0, 0),
                               x1: min(box.x1, imageWidth), y1: min(box.y1, imageHeight))
        guard !visible.isEmpty else { return ([], nil) }
        let resized = resizeBilinearPIL(
            mask64, width: side, height: side,
            toWidth: box.x1 - box.x0, toHeight: box.y1 - box.y0,
            columns: (visible.x0 - box.x0)..<(visible.x1 - box.x0),
            rows: (visible.y0 - box.y0)..<(visible.y1 - box.y0))
        return (resized, visible)
    }

    /// Filter taps of PIL's resampler for output positions `range` of an `inSize` → `outSize` resize.
    struct Taps {
        var first: [Int] = []     // first input index per output position
        var weights: [[Double]] = []
    }

    static func bilinearTaps(inSize: Int, outSize: Int, range: Range<Int>) -> Taps {
        let scale = Double(inSize) / Double(outSize)
        let filterScale = max(scale, 1)
        let support = 1.0 * filterScale  // the triangle filter's support is 1
        let inverse = 1.0 / filterScale
        var taps = Taps()
        taps.first.reserveCapacity(range.count)
        taps.weights.reserveCapacity(range.count)
        for xx in range {
            let center = (Double(xx) + 0.5) * scale
            let lo = max(Int((center - support + 0.5).rounded(.towardZero)), 0)
            let hi = min(Int((center + support + 0.5).rounded(.towardZero)), inSize)
            var w: [Double] = []
            var total = 0.0
            if hi > lo {
                for x in lo..<hi {
                    let t = abs((Double(x) - center + 0.5) * inverse)
                    let v = t < 1 ? 1 - t : 0
                    w.append(v)
                    total += v
                }
                if total != 0 { for i in w.indices { w[i] /= total } }
            }
            taps.first.append(lo)
            taps.weights.append(w)
        }
        return taps
    }

    /// PIL-compatible BILINEAR resize of a float image (row-major), computing only output
    /// `columns` × `rows` of the full `toWidth × toHeight` result.
    static func resizeBilinearPIL(_ src: [Float], width: Int, height: Int, toWidth: Int, toHeight: Int,
                                  columns: Range<Int>, rows: Range<Int>) -> [Float] {
        let cw = columns.count
        // Horizontal pass (skipped by PIL when the width does not change; the taps are then the identity).
        var tmp = [Float](repeating: 0, count: height * cw)
        if toWidth == width {
            for y in 0..<height { for (j, x) in columns.enumerated() { tmp[y * cw + j] = src[y * width + x] } }
        } else {
            let h = bilinearTaps(inSize: width, outSize: toWidth, range: columns)
            for y in 0..<height {
                for j in 0..<cw {
                    var s = 0.0
                    let first = h.first[j]
                    for (i, k) in h.weights[j].enumerated() { s += Double(src[y * width + first + i]) * k }
                    tmp[y * cw + j] = Float(s)
                }
            }
        }
        // Vertical pass.
        var out = [Float](repeating: 0, count: rows.count * cw)
        if toHeight == height {
            for (r, y) in rows.enumerated() { for j in 0..<cw { out[r * cw + j] = tmp[y * cw + j] } }
        } else {
            let v = bilinearTaps(inSize: height, outSize: toHeight, range: rows)
            for r in 0..<rows.count {
                let first = v.first[r]
                let w = v.weights[r]
                for j in 0..<cw {
                    var s = 0.0
                    for (i, k) in w.enumerated() { s += Double(tmp[(first + i) * cw + j]) * k }
                    out[r * cw + j] = Float(s)
                }
            }
        }
        return out
    }
}
