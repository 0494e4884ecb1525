// ImageLoader.decode: format sniffing, the JPEG/PNG/WebP decoders through the C shim, the
// conversion to RGB, and the EXIF orientation reader.
import Foundation
import FuzzSupport
import Imaging

// At most 4 megapixels, so that the header check (not the allocator) refuses big images.
let loader = ImageLoader(maxPixels: 1 << 22)
let blending = ImageLoader(maxPixels: 1 << 22, alpha: .compositeOnWhite)

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let input = bytes(data, size)
    for format in [ImageFormat.jpeg, .png, .webp] { _ = ExifOrientation.read(from: input, format: format) }
    let chosen = size > 0 && data[size - 1] & 1 == 1 ? blending : loader
    guard let image = try? chosen.decode(input, name: "input") else { return 0 }
    precondition(image.width > 0 && image.height > 0 && image.pixels.count == image.width * image.height * 3)
    return 0
}
