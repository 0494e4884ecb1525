import Foundation

/// A labelled rectangle in image pixel coordinates (`x0, y0` top-left, `x1, y1` bottom-right).
public struct AnnotationBox: Sendable {
    /// Text drawn above the box.
    public var label: String
    /// Left edge in pixels.
    public var x0: Double
    /// Top edge in pixels.
    public var y0: Double
    /// Right edge in pixels.
    public var x1: Double
    /// Bottom edge in pixels.
    public var y1: Double

    /// A box with a label.
    public init(label: String, x0: Double, y0: Double, x1: Double, y1: Double) {
        self.label = label
        self.x0 = x0; self.y0 = y0; self.x1 = x1; self.y1 = y1
    }
}

/// A soft mask (`width × height` values in 0…1, row-major) stretched over a box of the image,
/// e.g. PaliGemma's 64×64 segmentation masks placed in their detection box.
public struct AnnotationMask: Sendable {
    /// Where the mask lies on the image.
    public var box: AnnotationBox
    /// Mask width in cells.
    public var width: Int
    /// Mask height in cells.
    public var height: Int
    /// `width * height` values; cells ≥ 0.5 are painted.
    public var values: [Float]

    /// A mask over `box`.
    public init(box: AnnotationBox, width: Int, height: Int, values: [Float]) {
        self.box = box
        self.width = width
        self.height = height
        self.values = values
    }
}

/// Draws detections and segmentation masks onto a picture: translucent masks first, then box
/// outlines and labels in a built-in 5×7 bitmap font, one colour per object.
public enum Annotator {
    /// The colour of object `i` (cycles through 10 distinct colours).
    public static func color(_ i: Int) -> (UInt8, UInt8, UInt8) {
        let palette: [(UInt8, UInt8, UInt8)] = [
            (230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180),
            (70, 240, 240), (240, 50, 230), (210, 245, 60), (255, 225, 25), (0, 128, 128),
        ]
        return palette[((i % palette.count) + palette.count) % palette.count]
    }

    /// A copy of `image` with `masks` blended at `opacity` and `boxes` outlined and labelled.
    /// Object `i` of either list gets `color(i)`, so box `i` and mask `i` match.
    public static func draw(image: RGBImage, boxes: [AnnotationBox], masks: [AnnotationMask] = [],
                            opacity: Double = 0.45) -> RGBImage {
        var canvas = Canvas(image: image)
        let a = max(0, min(1, opacity))
        for (i, m) in masks.enumerated() { canvas.paint(mask: m, color: color(i), opacity: a) }
        let thickness = max(2, min(image.width, image.height) / 150)
        let scale = max(1, min(image.width, image.height) / 250)
        for (i, b) in boxes.enumerated() {
            canvas.outline(b, color: color(i), thickness: thickness)
            canvas.label(b, color: color(i), scale: scale)
        }
        return canvas.image
    }

    /// A copy of `image` with `text` written in the built-in 5×7 font (capitals), its top-left
    /// corner at `x, y`, each font pixel `scale`×`scale` image pixels; what falls outside is
    /// clipped. For captions beside pictures (a video's contact sheet).
    public static func write(_ text: String, on image: RGBImage, x: Int, y: Int, scale: Int = 1,
                             color: (UInt8, UInt8, UInt8) = (0, 0, 0)) -> RGBImage {
        var canvas = Canvas(image: image)
        canvas.text(Array(text.uppercased().unicodeScalars), x: x, y: y, scale: max(1, scale), ink: color)
        return canvas.image
    }

    /// Convenience for tuples `(label, x0, y0, x1, y1)`.
    public static func draw(image: RGBImage, boxes: [(String, Double, Double, Double, Double)],
                            masks: [AnnotationMask] = []) -> RGBImage {
        draw(image: image, boxes: boxes.map { AnnotationBox(label: $0.0, x0: $0.1, y0: $0.2, x1: $0.3, y1: $0.4) },
             masks: masks)
    }
}

struct Canvas {
    var image: RGBImage

    static func clampInt(_ v: Double, _ lo: Int, _ hi: Int) -> Int {
        guard v.isFinite else { return lo }
        return Int(max(Double(lo), min(Double(hi), v.rounded(.down))))
    }

    mutating func fill(x0: Int, y0: Int, x1: Int, y1: Int, color: (UInt8, UInt8, UInt8)) {
        let w = image.width, h = image.height
        let ax = max(0, x0), bx = min(w, x1), ay = max(0, y0), by = min(h, y1)
        guard ax < bx, ay < by else { return }
        for y in ay..<by {
            for x in ax..<bx {
                let i = (y * w + x) * 3
                image.pixels[i] = color.0; image.pixels[i + 1] = color.1; image.pixels[i + 2] = color.2
            }
        }
    }

    mutating func outline(_ b: AnnotationBox, color: (UInt8, UInt8, UInt8), thickness t: Int) {
        let w = image.width, h = image.height
        guard w > 0, h > 0 else { return }
        let x0 = Self.clampInt(min(b.x0, b.x1), 0, w - 1), x1 = Self.clampInt(max(b.x0, b.x1), 0, w - 1)
        let y0 = Self.clampInt(min(b.y0, b.y1), 0, h - 1), y1 = Self.clampInt(max(b.y0, b.y1), 0, h - 1)
        fill(x0: x0, y0: y0, x1: x1 + 1, y1: y0 + t, color: color)
        fill(x0: x0, y0: y1 - t + 1, x1: x1 + 1, y1: y1 + 1, color: color)
        fill(x0: x0, y0: y0, x1: x0 + t, y1: y1 + 1, color: color)
        fill(x0: x1 - t + 1, y0: y0, x1: x1 + 1, y1: y1 + 1, color: color)
    }

    mutating func label(_ b: AnnotationBox, color: (UInt8, UInt8, UInt8), scale s: Int) {
        let text = Array(b.label.uppercased().unicodeScalars.prefix(60))
        guard !text.isEmpty, image.width > 0, image.height > 0 else { return }
        let w = image.width, h = image.height
        let gw = 6 * s, gh = 9 * s
        let boxW = text.count * gw + 2 * s
        let bx = Self.clampInt(min(b.x0, b.x1), 0, max(0, w - 1))
        var by = Self.clampInt(min(b.y0, b.y1), 0, h - 1) - gh
        if by < 0 { by = Self.clampInt(min(b.y0, b.y1), 0, h - 1) }  // no room above: draw inside
        fill(x0: bx, y0: by, x1: bx + boxW, y1: by + gh, color: color)
        let lum = 299 * Int(color.0) + 587 * Int(color.1) + 114 * Int(color.2)
        let ink: (UInt8, UInt8, UInt8) = lum > 150_000 ? (0, 0, 0) : (255, 255, 255)
        self.text(text, x: bx + s, y: by + s, scale: s, ink: ink)
    }

    /// Glyphs left to right from `x, y` (top-left), 6×9 font pixels per character cell.
    mutating func text(_ text: [Unicode.Scalar], x: Int, y: Int, scale s: Int, ink: (UInt8, UInt8, UInt8)) {
        let gw = 6 * s
        for (n, ch) in text.enumerated() {
            let rows = BitmapFont.glyph(ch)
            let gx = x + n * gw, gy = y
            if gx >= image.width { break }
            for (r, bits) in rows.enumerated() {
                for c in 0..<5 where bits & (0x10 >> c) != 0 {
                    fill(x0: gx + c * s, y0: gy + r * s, x1: gx + (c + 1) * s, y1: gy + (r + 1) * s, color: ink)
                }
            }
        }
    }

    mutating func paint(mask m: AnnotationMask, color: (UInt8, UInt8, UInt8), opacity a: Double) {
        let w = image.width, h = image.height
        guard m.width > 0, m.height > 0, m.values.count == m.width * m.height, w > 0, h > 0 else { return }
        let bx0 = min(m.box.x0, m.box.x1), bx1 = max(m.box.x0, m.box.x1)
        let by0 = min(m.box.y0, m.box.y1), by1 = max(m.box.y0, m.box.y1)
        guard bx1 > bx0, by1 > by0 else { return }
        let x0 = Self.clampInt(bx0, 0, w), x1 = Self.clampInt(bx1.rounded(.up), 0, w)
        let y0 = Self.clampInt(by0, 0, h), y1 = Self.clampInt(by1.rounded(.up), 0, h)
        guard x0 < x1, y0 < y1 else { return }
        let ca = (Double(color.0) * a, Double(color.1) * a, Double(color.2) * a)
        for y in y0..<y1 {
            let my = min(m.height - 1, max(0, Int((Double(y) + 0.5 - by0) / (by1 - by0) * Double(m.height))))
            for x in x0..<x1 {
                let mx = min(m.width - 1, max(0, Int((Double(x) + 0.5 - bx0) / (bx1 - bx0) * Double(m.width))))
                guard m.values[my * m.width + mx] >= 0.5 else { continue }
                let i = (y * w + x) * 3
                image.pixels[i] = UInt8((Double(image.pixels[i]) * (1 - a) + ca.0).rounded())
                image.pixels[i + 1] = UInt8((Double(image.pixels[i + 1]) * (1 - a) + ca.1).rounded())
                image.pixels[i + 2] = UInt8((Double(image.pixels[i + 2]) * (1 - a) + ca.2).rounded())
            }
        }
    }
}
