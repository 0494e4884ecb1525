import CImageShims
import Foundation

/// Writes `RGBImage`s as 8-bit RGB PNG files through libpng.
public enum PNGEncoder {
    /// The PNG file bytes for `image`.
    public static func encode(_ image: RGBImage) throws -> Data {
        guard image.width > 0, image.height > 0 else {
            throw ImageError.encodingFailed(detail: "cannot encode a \(image.width)×\(image.height) image")
        }
        var out: UnsafeMutablePointer<UInt8>? = nil
        var len = 0
        var message = [CChar](repeating: 0, count: 256)
        let rc = image.pixels.withUnsafeBufferPointer { p in
            cis_png_encode(p.baseAddress, Int32(image.width), Int32(image.height), 3, &out, &len, &message, 256)
        }
        defer { cis_free(out) }
        guard rc == Int32(CIS_OK), let bytes = out else {
            let text = String(decoding: message.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
            throw ImageError.encodingFailed(detail: text.isEmpty ? "libpng error \(rc)" : text)
        }
        return Data(bytes: bytes, count: len)
    }

    /// Encodes `image` and writes it to `url`.
    public static func write(_ image: RGBImage, to url: URL) throws {
        let data = try encode(image)
        do { try data.write(to: url) } catch {
            throw ImageError.encodingFailed(detail: "cannot write \(url.path): \(error.localizedDescription)")
        }
    }
}

/// zlib helpers shared with the tests (fixtures are stored zlib-compressed).
enum Zlib {
    /// Inflates `data` into exactly `count` bytes, or `nil` on any mismatch.
    static func inflate(_ data: Data, count: Int) -> [UInt8]? {
        var out = [UInt8](repeating: 0, count: count)
        let rc = data.withUnsafeBytes { src in
            out.withUnsafeMutableBufferPointer { dst in
                cis_inflate(src.bindMemory(to: UInt8.self).baseAddress, src.count, dst.baseAddress, count)
            }
        }
        return rc == Int32(CIS_OK) ? out : nil
    }
}
