import Foundation

/// Reads the EXIF Orientation tag (0x0112) from JPEG APP1, PNG `eXIf` and WebP `EXIF` blocks
/// and applies it like PIL's `ImageOps.exif_transpose`.
public enum ExifOrientation {
    /// The orientation value (1…8) stored in `data`, or `nil` when absent or unreadable.
    public static func read(from data: Data, format: ImageFormat) -> Int? {
        let bytes = [UInt8](data)
        let tiff: ArraySlice<UInt8>?
        switch format {
        case .jpeg: tiff = jpegExif(bytes)
        case .png: tiff = pngExif(bytes)
        case .webp: tiff = webpExif(bytes)
        }
        guard let t = tiff else { return nil }
        return orientation(inTIFF: Array(t))
    }

    static func be16(_ b: [UInt8], _ i: Int) -> Int { Int(b[i]) << 8 | Int(b[i + 1]) }
    static func be32(_ b: [UInt8], _ i: Int) -> Int { be16(b, i) << 16 | be16(b, i + 2) }
    static func le32(_ b: [UInt8], _ i: Int) -> Int {
        Int(b[i]) | Int(b[i + 1]) << 8 | Int(b[i + 2]) << 16 | Int(b[i + 3]) << 24
    }

    static let exifHeader: [UInt8] = Array("Exif".utf8) + [0, 0]

    static func stripExifHeader(_ s: ArraySlice<UInt8>) -> ArraySlice<UInt8> {
        if s.count >= 6, s.prefix(6).elementsEqual(exifHeader) { return s.dropFirst(6) }
        return s
    }

    /// The TIFF block of the first APP1 "Exif" segment before the scan data.
    static func jpegExif(_ b: [UInt8]) -> ArraySlice<UInt8>? {
        var i = 2
        while i + 4 <= b.count {
            guard b[i] == 0xFF else { return nil }
            let marker = b[i + 1]
            if marker == 0xFF { i += 1; continue }           // fill byte
            if marker == 0xD8 || (0xD0...0xD7).contains(marker) || marker == 0x01 { i += 2; continue }
            if marker == 0xDA || marker == 0xD9 { return nil } // start of scan / end of image
            let len = be16(b, i + 2)
            guard len >= 2, i + 2 + len <= b.count else { return nil }
            if marker == 0xE1 {
                let seg = b[(i + 4)..<(i + 2 + len)]
                if seg.count >= 6, seg.prefix(6).elementsEqual(exifHeader) { return seg.dropFirst(6) }
            }
            i += 2 + len
        }
        return nil
    }

    static func pngExif(_ b: [UInt8]) -> ArraySlice<UInt8>? {
        var i = 8
        while i + 12 <= b.count {
            let len = be32(b, i)
            let type = String(decoding: b[(i + 4)..<(i + 8)], as: UTF8.self)
            guard len >= 0, len <= b.count - i - 12 else { return nil }
            if type == "eXIf" { return stripExifHeader(b[(i + 8)..<(i + 8 + len)]) }
            if type == "IEND" { return nil }
            i += 12 + len
        }
        return nil
    }

    static func webpExif(_ b: [UInt8]) -> ArraySlice<UInt8>? {
        var i = 12
        while i + 8 <= b.count {
            let type = String(decoding: b[i..<(i + 4)], as: UTF8.self)
            let len = le32(b, i + 4)
            guard len >= 0, len <= b.count - i - 8 else { return nil }
            if type == "EXIF" { return stripExifHeader(b[(i + 8)..<(i + 8 + len)]) }
            i += 8 + len + (len & 1)
        }
        return nil
    }

    /// Finds tag 0x0112 in IFD0 of a TIFF structure; every offset is bounds-checked.
    static func orientation(inTIFF t: [UInt8]) -> Int? {
        guard t.count >= 8 else { return nil }
        let little: Bool
        if t[0] == 0x49, t[1] == 0x49 { little = true } else if t[0] == 0x4D, t[1] == 0x4D { little = false } else { return nil }
        func u16(_ i: Int) -> Int? {
            guard i >= 0, i + 2 <= t.count else { return nil }
            return little ? Int(t[i]) | Int(t[i + 1]) << 8 : Int(t[i]) << 8 | Int(t[i + 1])
        }
        func u32(_ i: Int) -> Int? {
            guard let a = u16(i), let b = u16(i + 2) else { return nil }
            return little ? a | b << 16 : a << 16 | b
        }
        guard u16(2) == 42, let ifd = u32(4), let count = u16(ifd) else { return nil }
        for e in 0..<count {
            let at = ifd + 2 + 12 * e
            guard let tag = u16(at) else { return nil }
            if tag == 0x0112 {
                guard let type = u16(at + 2) else { return nil }
                let value: Int?
                switch type {
                case 3: value = u16(at + 8)                       // SHORT
                case 4, 9: value = u32(at + 8)                    // LONG / SLONG
                case 1, 7: value = at + 8 < t.count ? Int(t[at + 8]) : nil // BYTE
                default: value = nil
                }
                guard let v = value, (1...8).contains(v) else { return nil }
                return v
            }
        }
        return nil
    }

    /// Applies orientation `o` (2…8) as PIL's `exif_transpose` does; 1 and others are identity.
    public static func apply(_ o: Int, to image: RGBImage) -> RGBImage {
        let w = image.width, h = image.height
        guard (2...8).contains(o), w > 0, h > 0 else { return image }
        let swaps = o >= 5
        let ow = swaps ? h : w, oh = swaps ? w : h
        var out = [UInt8](repeating: 0, count: ow * oh * 3)
        image.pixels.withUnsafeBufferPointer { src in
            out.withUnsafeMutableBufferPointer { dst in
                for y in 0..<oh {
                    for x in 0..<ow {
                        // (sx, sy): the source pixel that lands on (x, y).
                        let sx: Int, sy: Int
                        switch o {
                        case 2: sx = w - 1 - x; sy = y              // mirror horizontally
                        case 3: sx = w - 1 - x; sy = h - 1 - y      // rotate 180
                        case 4: sx = x; sy = h - 1 - y              // mirror vertically
                        case 5: sx = y; sy = x                      // transpose
                        case 6: sx = y; sy = h - 1 - x              // rotate 90 clockwise
                        case 7: sx = w - 1 - y; sy = h - 1 - x      // transverse
                        default: sx = w - 1 - y; sy = x             // 8: rotate 90 counter-clockwise
                        }
                        let si = (sy * w + sx) * 3, di = (y * ow + x) * 3
                        dst[di] = src[si]; dst[di + 1] = src[si + 1]; dst[di + 2] = src[si + 2]
                    }
                }
            }
        }
        return RGBImage(width: ow, height: oh, pixels: out)
    }
}
