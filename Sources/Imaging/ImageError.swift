import Foundation

/// Why an image could not be read or written. Every case names the file (or the name the
/// caller gave the bytes) and its `description` carries a hint for the user.
public enum ImageError: Error, CustomStringConvertible, Equatable, Sendable {
    /// The file could not be read from disk.
    case unreadable(file: String, reason: String)
    /// The bytes are empty.
    case empty(file: String)
    /// The magic bytes match no supported format (JPEG, PNG, WebP).
    case unsupportedFormat(file: String, detected: String)
    /// The format is recognised but this variant is not handled (e.g. animated WebP).
    case unsupportedVariant(file: String, format: String, detail: String)
    /// The data ends before the image is complete.
    case truncated(file: String, format: String)
    /// The decoder rejected the data.
    case corrupt(file: String, format: String, detail: String)
    /// The header declares a zero width or height.
    case zeroSize(file: String, format: String)
    /// The header declares more pixels than `ImageLoader.maxPixels` (a possible decompression bomb).
    case tooLarge(file: String, width: Int, height: Int, limit: Int)
    /// Memory for the pixels could not be allocated.
    case outOfMemory(file: String)
    /// Encoding an image failed.
    case encodingFailed(detail: String)

    /// A one-paragraph explanation naming the file, the problem and what to try.
    public var description: String {
        switch self {
        case let .unreadable(file, reason):
            return "\(file): cannot read the file (\(reason)). Check the path and permissions."
        case let .empty(file):
            return "\(file): the file is empty. Hint: the download or copy may have failed."
        case let .unsupportedFormat(file, detected):
            return "\(file): not a supported image (\(detected)). Supported formats are JPEG, PNG and WebP; "
                + "the format is detected from the file's first bytes, not its extension."
        case let .unsupportedVariant(file, format, detail):
            return "\(file): \(format) variant not supported: \(detail). Hint: convert it to a plain PNG or JPEG."
        case let .truncated(file, format):
            return "\(file): the \(format) data ends before the image is complete (truncated file). "
                + "Hint: the download or copy was probably cut off; fetch the file again."
        case let .corrupt(file, format, detail):
            return "\(file): corrupt \(format) data (\(detail)). Hint: re-export the picture or try another copy."
        case let .zeroSize(file, format):
            return "\(file): the \(format) header declares a zero-sized image; there is nothing to look at."
        case let .tooLarge(file, width, height, limit):
            return "\(file): \(width)×\(height) = \(width * height) pixels exceeds the limit of \(limit) pixels "
                + "(possible decompression bomb). Hint: downscale the picture first, or raise ImageLoader.maxPixels "
                + "if you trust the file."
        case let .outOfMemory(file):
            return "\(file): not enough memory to decode the image. Hint: downscale it first."
        case let .encodingFailed(detail):
            return "PNG encoding failed: \(detail)"
        }
    }
}
