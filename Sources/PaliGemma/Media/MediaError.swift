import Foundation

/// Why a video or a document could not be read. Every case names the file or the program, and
/// `description` says what to do about it.
public enum MediaError: Error, CustomStringConvertible, Sendable, Equatable {
    /// A program this needs (ffmpeg, ffprobe, pdfinfo, pdftocairo) is not on the PATH.
    case programMissing(program: String, package: String, purpose: String)
    /// The file does not exist or cannot be opened.
    case unreadable(file: String, reason: String)
    /// ffprobe found no video stream in the file (not a video, or audio only).
    case notAVideo(file: String, detail: String)
    /// The video has a video stream but no frame could be decoded in the range asked for.
    case noFrames(file: String, detail: String)
    /// pdfinfo could not read the file as a PDF.
    case corruptPDF(file: String, detail: String)
    /// The PDF reads but has no pages.
    case noPages(file: String)
    /// A page was asked for that the document does not have.
    case pageOutOfRange(file: String, page: Int, pages: Int)
    /// A frame, a page or a sheet would hold more pixels than allowed.
    case tooLarge(file: String, what: String, width: Int, height: Int, limit: Int)
    /// A program ran but failed or printed something unusable.
    case programFailed(program: String, file: String, detail: String)

    /// The install command for `package` on Debian and Homebrew.
    static func installHint(_ package: String) -> String {
        let brew = package == "poppler-utils" ? "poppler" : package
        return "install it with `apt-get install \(package)` (Debian, Ubuntu) or `brew install \(brew)` (macOS)"
    }

    public var description: String {
        switch self {
        case let .programMissing(program, package, purpose):
            return "`\(program)` is needed to \(purpose) and was not found on the PATH; \(Self.installHint(package))."
        case let .unreadable(file, reason):
            return "\(file): cannot read the file (\(reason)). Check the path and permissions."
        case let .notAVideo(file, detail):
            return "\(file): not a video ffprobe can read (\(detail)). Give a video file (MP4, MKV, MOV, WebM, …)."
        case let .noFrames(file, detail):
            return "\(file): no video frame could be decoded (\(detail)). Check --start/--end against the video's length."
        case let .corruptPDF(file, detail):
            return "\(file): not a PDF that can be read (\(detail)). Hint: the file may be damaged or cut off; fetch it again."
        case let .noPages(file):
            return "\(file): the PDF has no pages; there is nothing to read."
        case let .pageOutOfRange(file, page, pages):
            return "\(file): page \(page) was asked for but the document has \(pages) page\(pages == 1 ? "" : "s")."
        case let .tooLarge(file, what, width, height, limit):
            return "\(file): the \(what) would be \(width)×\(height) = \(width * height) pixels, over the limit of \(limit). "
                + "Hint: lower --dpi, ask for fewer frames, or raise --max-pixels if you trust the file."
        case let .programFailed(program, file, detail):
            return "\(file): \(program) failed: \(detail)"
        }
    }
}
