import CImageShims
import Foundation

/// Writes `RGBImage`s as baseline JPEG through libjpeg (benchmarks and tests make photos with it).
public enum JPEGEncoder {
    /// The JPEG file bytes for `image` at `quality` (1–100).
    public static func encode(_ image: RGBImage, quality: Int = 90) throws -> Data {
        guard image.width > 0, image.height > 0 else {
            throw ImageError.encodingFailed(detail: "cannot encode a \(image.width)×\(image.height) image")
        }
        var out: UnsafeMutablePointer<UInt8>? = nil
        var len = 0
        let rc = image.pixels.withUnsafeBufferPointer { p in
            cis_jpeg_encode(p.baseAddress, Int32(image.width), Int32(image.height), Int32(min(max(quality, 1), 100)), &out, &len)
        }
        defer { cis_free(out) }
        guard rc == Int32(CIS_OK), let bytes = out else {
            throw ImageError.encodingFailed(detail: "libjpeg error \(rc)")
        }
        return Data(bytes: bytes, count: len)
    }
}
