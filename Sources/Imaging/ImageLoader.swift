import CImageShims
import Foundation

/// The container formats `ImageLoader` recognises from their first bytes.
public enum ImageFormat: String, Sendable {
    /// JPEG / JFIF / Exif (`FF D8 FF`).
    case jpeg = "JPEG"
    /// PNG (`89 50 4E 47 0D 0A 1A 0A`).
    case png = "PNG"
    /// WebP (`RIFF....WEBP`).
    case webp = "WebP"

    /// Detects the format from magic bytes; `nil` when none matches.
    public static func detect(_ data: Data) -> ImageFormat? {
        let b = [UInt8](data.prefix(12))
        if b.count >= 3, b[0] == 0xFF, b[1] == 0xD8, b[2] == 0xFF { return .jpeg }
        if b.count >= 8, b[0..<8].elementsEqual([0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A]) { return .png }
        if b.count >= 12, b[0..<4].elementsEqual(Array("RIFF".utf8)), b[8..<12].elementsEqual(Array("WEBP".utf8)) {
            return .webp
        }
        return nil
    }
}

/// What to do with transparency when turning a picture into RGB.
public enum AlphaHandling: Sendable {
    /// Drop alpha and keep the colours as stored, like PIL's `Image.convert("RGB")`: what
    /// transformers' `load_image` (the path its documentation uses) and big_vision's
    /// `decode_image(channels=3)` do, and how the checkpoints were trained. The default.
    case drop
    /// Composite over an opaque white background with PIL's integer `alpha_composite`
    /// arithmetic: what transformers' `convert_to_rgb` does when a PIL image that still carries
    /// an alpha channel (or a `transparency` entry) is given straight to the processor.
    case compositeOnWhite
}

/// Decodes JPEG, PNG and WebP files into `RGBImage`, applying the EXIF orientation and
/// converting to RGB the way PIL does (palette expanded, grey replicated, 16-bit grey clipped
/// like `I;16 → RGB`, 16-bit colour reduced to its high byte, CMYK with PIL's formula).
public struct ImageLoader: Sendable {
    /// Largest `width * height` accepted; checked from the header before any pixel memory is
    /// allocated, so decompression bombs are refused cheaply.
    public var maxPixels: Int = 100_000_000
    /// How transparency is flattened; by default dropped, as the checkpoints were trained.
    public var alpha: AlphaHandling = .drop
    /// Whether to apply the EXIF Orientation tag (as PIL's `ImageOps.exif_transpose`).
    public var applyExifOrientation: Bool = true

    /// A loader with the default limits.
    public init(maxPixels: Int = 100_000_000, alpha: AlphaHandling = .drop,
                applyExifOrientation: Bool = true) {
        self.maxPixels = maxPixels
        self.alpha = alpha
        self.applyExifOrientation = applyExifOrientation
    }

    /// Largest image read from a pipe or device, where the size is not known beforehand.
    public static let maxStreamBytes = 1 << 30

    /// Reads and decodes the file at `url` (also a pipe such as /dev/stdin); errors name the
    /// file's path.
    public func load(contentsOf url: URL) throws -> RGBImage {
        let data: Data
        // stat follows symbolic links (/dev/stdin → /proc/self/fd/0 → a pipe).
        var info = stat()
        let known = stat(url.path, &info) == 0
        let kind = info.st_mode & S_IFMT
        if known && kind == S_IFDIR {
            throw ImageError.unreadable(file: url.path, reason: "it is a directory, not an image file")
        }
        do {
            if !known || kind == S_IFREG {
                data = try Data(contentsOf: url)
            } else {
                // A pipe or device (/dev/stdin, a named pipe): read it as a stream, bounded so
                // that an endless one is refused rather than held in memory.
                let handle = try FileHandle(forReadingFrom: url)
                defer { try? handle.close() }
                var bytes = Data()
                while let chunk = try handle.read(upToCount: 1 << 20), !chunk.isEmpty {
                    bytes += chunk
                    if bytes.count > Self.maxStreamBytes {
                        throw ImageError.unreadable(file: url.path, reason: "the stream holds more than \(Self.maxStreamBytes >> 20) MB")
                    }
                }
                data = bytes
            }
        } catch let error as ImageError {
            throw error
        } catch {
            throw ImageError.unreadable(file: url.path, reason: (error as NSError).localizedDescription)
        }
        return try decode(data, name: url.path)
    }

    /// Decodes in-memory bytes; `name` is used in error messages.
    public func decode(_ data: Data, name: String) throws -> RGBImage {
        let raw = try decodeRaw(data, name: name)
        var image = toRGB(raw)
        if applyExifOrientation, let o = ExifOrientation.read(from: data, format: raw.format), o != 1 {
            image = ExifOrientation.apply(o, to: image)
        }
        return image
    }

    // MARK: - Decoding through the C shim

    struct RawImage {
        var format: ImageFormat
        var width: Int
        var height: Int
        var channels: Int
        var bits: Int
        var isCMYK: Bool
        var samples: [UInt8]   // bits == 16: native-endian UInt16 pairs
    }

    func decodeRaw(_ data: Data, name: String) throws -> RawImage {
        if data.isEmpty { throw ImageError.empty(file: name) }
        guard let format = ImageFormat.detect(data) else {
            throw ImageError.unsupportedFormat(file: name, detected: Self.describeMagic(data))
        }
        if format == .png, data.count >= 24 {
            // libpng rejects a zero dimension as a generic IHDR error; report it precisely.
            let b = [UInt8](data.prefix(24))
            let w = Int(b[16]) << 24 | Int(b[17]) << 16 | Int(b[18]) << 8 | Int(b[19])
            let h = Int(b[20]) << 24 | Int(b[21]) << 16 | Int(b[22]) << 8 | Int(b[23])
            if w == 0 || h == 0 { throw ImageError.zeroSize(file: name, format: format.rawValue) }
        }
        var img = cis_image()
        let limit = Int64(max(0, maxPixels))
        let rc: Int32 = data.withUnsafeBytes { buf -> Int32 in
            let p = buf.bindMemory(to: UInt8.self).baseAddress!
            switch format {
            case .jpeg: return cis_jpeg_decode(p, buf.count, limit, &img)
            case .png: return cis_png_decode(p, buf.count, limit, &img)
            case .webp: return cis_webp_decode(p, buf.count, limit, &img)
            }
        }
        defer { cis_free(img.pixels) }
        let message = withUnsafeBytes(of: img.message) { raw -> String in
            let bytes = raw.bindMemory(to: UInt8.self)
            let end = bytes.firstIndex(of: 0) ?? bytes.count
            return String(decoding: bytes[0..<end], as: UTF8.self)
        }
        switch Int(rc) {
        case Int(CIS_OK): break
        case Int(CIS_TRUNCATED): throw ImageError.truncated(file: name, format: format.rawValue)
        case Int(CIS_TOO_LARGE):
            throw ImageError.tooLarge(file: name, width: Int(img.width), height: Int(img.height), limit: maxPixels)
        case Int(CIS_ZERO_SIZE): throw ImageError.zeroSize(file: name, format: format.rawValue)
        case Int(CIS_NO_MEMORY): throw ImageError.outOfMemory(file: name)
        case Int(CIS_UNSUPPORTED):
            throw ImageError.unsupportedVariant(file: name, format: format.rawValue, detail: message)
        default:
            throw ImageError.corrupt(file: name, format: format.rawValue,
                                     detail: message.isEmpty ? "decoder error" : message)
        }
        let w = Int(img.width), h = Int(img.height), c = Int(img.channels), bits = Int(img.bits)
        guard w > 0, h > 0, (1...4).contains(c), bits == 8 || bits == 16, let px = img.pixels else {
            throw ImageError.corrupt(file: name, format: format.rawValue, detail: "decoder returned no pixels")
        }
        let count = w * h * c * (bits / 8)
        let samples = [UInt8](UnsafeBufferPointer(start: px, count: count))
        return RawImage(format: format, width: w, height: h, channels: c, bits: bits,
                        isCMYK: img.is_cmyk != 0, samples: samples)
    }

    static func describeMagic(_ data: Data) -> String {
        let b = [UInt8](data.prefix(16))
        func starts(_ s: [UInt8]) -> Bool { b.count >= s.count && b[0..<s.count].elementsEqual(s) }
        if starts([0x47, 0x49, 0x46, 0x38]) { return "looks like GIF" }
        if starts([0x42, 0x4D]) { return "looks like BMP" }
        if starts([0x49, 0x49, 0x2A, 0x00]) || starts([0x4D, 0x4D, 0x00, 0x2A]) { return "looks like TIFF" }
        if b.count >= 12, b[4..<8].elementsEqual(Array("ftyp".utf8)) { return "looks like HEIF/AVIF/MP4" }
        if starts([0xFF, 0xD8]) { return "JPEG start marker without a segment" }
        let hex = b.prefix(8).map { String(format: "%02X", $0) }.joined(separator: " ")
        return "unknown magic bytes \(hex)"
    }

    // MARK: - Conversion to RGB

    func toRGB(_ raw: RawImage) -> RGBImage {
        let n = raw.width * raw.height
        var out = [UInt8](repeating: 0, count: n * 3)
        raw.samples.withUnsafeBufferPointer { s in
            out.withUnsafeMutableBufferPointer { o in
                switch (raw.channels, raw.bits) {
                case (1, 16):
                    // PIL: I;16 → RGB clips each value to 255.
                    s.withMemoryRebound(to: UInt16.self) { s16 in
                        for i in 0..<n {
                            let v = UInt8(min(Int(s16[i]), 255))
                            o[3 * i] = v; o[3 * i + 1] = v; o[3 * i + 2] = v
                        }
                    }
                case (1, _):
                    for i in 0..<n {
                        let v = s[i]
                        o[3 * i] = v; o[3 * i + 1] = v; o[3 * i + 2] = v
                    }
                case (2, _):
                    for i in 0..<n {
                        let v = s[2 * i], a = s[2 * i + 1]
                        let c = alpha == .drop ? v : Self.overWhite(v, a)
                        o[3 * i] = c; o[3 * i + 1] = c; o[3 * i + 2] = c
                    }
                case (3, _):
                    for i in 0..<(n * 3) { o[i] = s[i] }
                case (4, _) where raw.isCMYK:
                    // PIL's cmyk2rgb: (255 − k) − (c·(255 − k))/255 with its rounding divide.
                    for i in 0..<n {
                        let k = 255 - Int(s[4 * i + 3])
                        for ch in 0..<3 {
                            let t = Int(s[4 * i + ch]) * k + 128
                            let v = k - (((t >> 8) + t) >> 8)
                            o[3 * i + ch] = UInt8(max(0, min(255, v)))
                        }
                    }
                default:
                    for i in 0..<n {
                        let a = s[4 * i + 3]
                        for ch in 0..<3 {
                            let v = s[4 * i + ch]
                            o[3 * i + ch] = alpha == .drop ? v : Self.overWhite(v, a)
                        }
                    }
                }
            }
        }
        return RGBImage(width: raw.width, height: raw.height, pixels: out)
    }

    /// One channel of PIL's `alpha_composite(white, src)` (7 extra bits of precision, rounded
    /// divisions by 255).
    @inline(__always)
    static func overWhite(_ v: UInt8, _ a: UInt8) -> UInt8 {
        if a == 0 { return 255 }
        let sa = UInt32(a)
        let blend = 255 * (255 - sa)
        let outa255 = sa * 255 + blend
        let coef1 = sa * 255 * 255 * 128 / outa255
        let coef2 = 255 * 128 - coef1
        let tmp = UInt32(v) * coef1 + 255 * coef2 + (0x80 << 7)
        return UInt8(truncatingIfNeeded: (((tmp >> 8) + tmp) >> 8) >> 7)
    }
}
