import Foundation
import Imaging

/// The pages of one PDF file, measured by Poppler's `pdfinfo` and drawn by its `pdftocairo`
/// (Debian package `poppler-utils`), both run as programs so that nothing else needs Poppler.
///
/// pdftocairo is used rather than pdftoppm because it draws an image placed at the page's own
/// scale pixel for pixel: a PDF made from a picture and rendered at 72 dpi gives back that
/// picture exactly, so the model reads the same pixels either way.
public struct PDFPages: Sendable {
    public let url: URL
    /// Each page's size in points (1/72 inch) as displayed, its rotation applied.
    public let pageSizes: [PageSize]
    /// Decodes what pdftocairo draws; its `maxPixels` bounds a page.
    public let imageLoader: ImageLoader

    /// A page's width and height in points.
    public struct PageSize: Sendable, Equatable {
        public var width: Double
        public var height: Double
    }

    /// Pages listed per document; a longer one is refused past this page.
    public static let pageListLimit = 100_000
    /// Resolutions accepted by `render`.
    public static let dpiRange = 18...1200

    public var pageCount: Int { pageSizes.count }

    /// Whether the file's first kilobyte holds the `%PDF-` header (readers accept it anywhere
    /// there, so this does too); the extension is not looked at.
    public static func isPDF(_ url: URL) -> Bool {
        guard let handle = try? FileHandle(forReadingFrom: url) else { return false }
        defer { try? handle.close() }
        guard let head = try? handle.read(upToCount: 1024) else { return false }
        return head.range(of: Data("%PDF-".utf8)) != nil
    }

    /// Reads the page list with pdfinfo. Throws `MediaError` for a missing program or file, a
    /// file pdfinfo cannot read (`corruptPDF`) and a PDF without pages (`noPages`).
    public init(url: URL, imageLoader: ImageLoader = ImageLoader()) throws {
        try requireReadableFile(url)
        _ = try ExternalProgram.pdftocairo.locate()
        let run = try ExternalProgram.pdfinfo.run(["-f", "1", "-l", "\(Self.pageListLimit)", url.path],
                                                 file: url.relativePath, stdoutLimit: 32 << 20)
        let report = String(decoding: run.stdout, as: UTF8.self)
        if run.stderr.contains("page count 0") || run.stderr.contains("last page (0)") || report.contains("\nPages:           0\n") {
            throw MediaError.noPages(file: url.relativePath)
        }
        guard run.status == 0 else { throw MediaError.corruptPDF(file: url.relativePath, detail: run.lastErrorLine) }
        self.url = url
        self.imageLoader = imageLoader
        pageSizes = try Self.parseSizes(report, file: url.relativePath)
        guard !pageSizes.isEmpty else { throw MediaError.noPages(file: url.relativePath) }
    }

    /// The `Page N size: W x H pts` and `Page N rot: R` lines, in page order.
    static func parseSizes(_ report: String, file: String) throws -> [PageSize] {
        var sizes: [Int: PageSize] = [:], rotations: [Int: Int] = [:]
        for line in report.split(whereSeparator: \.isNewline) {
            let words = line.split(whereSeparator: \.isWhitespace)
            guard words.count >= 4, words[0] == "Page", let page = Int(words[1]) else { continue }
            if words[2] == "size:", words.count >= 6, let w = Double(words[3]), words[4] == "x", let h = Double(words[5]) {
                sizes[page] = PageSize(width: w, height: h)
            } else if words[2] == "rot:", let r = Int(words[3]) {
                rotations[page] = r
            }
        }
        guard let last = sizes.keys.max() else { return [] }
        return try (1...last).map { page in
            guard let size = sizes[page], size.width > 0, size.height > 0, size.width.isFinite, size.height.isFinite else {
                throw MediaError.corruptPDF(file: file, detail: "page \(page) has no usable size")
            }
            let quarterTurns = ((rotations[page] ?? 0) / 90) % 2
            return quarterTurns == 0 ? size : PageSize(width: size.height, height: size.width)
        }
    }

    /// The pixel size page `page` (from 1) gets at `dpi`.
    public func pixelSize(page: Int, dpi: Int) -> (width: Int, height: Int) {
        let size = pageSizes[page - 1]
        return (Int((size.width * Double(dpi) / 72).rounded(.up)), Int((size.height * Double(dpi) / 72).rounded(.up)))
    }

    /// Page `page` (from 1) drawn at `dpi`, on white. The size is checked against
    /// `imageLoader.maxPixels` before anything is drawn.
    public func render(page: Int, dpi: Int) throws -> RGBImage {
        guard (1...pageCount).contains(page) else { throw MediaError.pageOutOfRange(file: url.relativePath, page: page, pages: pageCount) }
        guard Self.dpiRange.contains(dpi) else {
            throw InputError.option("the resolution must be in \(Self.dpiRange.lowerBound)…\(Self.dpiRange.upperBound) dpi, got \(dpi)")
        }
        let (w, h) = pixelSize(page: page, dpi: dpi)
        guard w * h <= imageLoader.maxPixels else {
            throw MediaError.tooLarge(file: url.relativePath, what: "page \(page) at \(dpi) dpi", width: w, height: h, limit: imageLoader.maxPixels)
        }
        let run = try ExternalProgram.pdftocairo.run(
            ["-png", "-singlefile", "-f", "\(page)", "-l", "\(page)", "-r", "\(dpi)", url.path, "-"],
            file: url.relativePath, stdoutLimit: min(ImageLoader.maxStreamBytes, w * h * 4 + (1 << 20)))
        guard run.status == 0, !run.stdout.isEmpty else {
            throw MediaError.corruptPDF(file: url.relativePath, detail: "page \(page) could not be drawn: \(run.lastErrorLine)")
        }
        return try imageLoader.decode(run.stdout, name: "\(url.relativePath) page \(page)")
    }
}

/// Which pages to read, written as `1-3,5` (ranges and single pages, from 1; `7-` runs to the
/// last page). Pages are read in the order given, each once.
public struct PageSelection: Sendable, Equatable {
    enum Part: Sendable, Equatable { case range(Int, Int?) }
    let parts: [Part]

    /// The most pages one run may read.
    public static let pageLimit = 10_000

    /// Parses `text`; throws `InputError.option` naming what is wrong.
    public init(parsing text: String) throws {
        var parts: [Part] = []
        for piece in text.split(separator: ",", omittingEmptySubsequences: false) {
            let item = piece.trimmingCharacters(in: .whitespaces)
            let bounds = item.split(separator: "-", maxSplits: 1, omittingEmptySubsequences: false).map { $0.trimmingCharacters(in: .whitespaces) }
            guard let first = Int(bounds[0]), first >= 1, first <= PDFPages.pageListLimit else {
                throw InputError.option("pages: `\(item)` is not a page number or range (write pages as 1-3,5)")
            }
            if bounds.count == 1 {
                parts.append(.range(first, first))
            } else if bounds[1].isEmpty {
                parts.append(.range(first, nil))
            } else if let last = Int(bounds[1]), last >= first, last <= PDFPages.pageListLimit {
                parts.append(.range(first, last))
            } else {
                throw InputError.option("pages: `\(item)` is not a range from a lower to a higher page (write pages as 1-3,5)")
            }
        }
        self.parts = parts
    }

    /// The pages of a document of `count` pages, in order, each once. Throws
    /// `MediaError.pageOutOfRange` for a page past the end and `InputError` past `pageLimit`.
    public func pages(count: Int, file: String) throws -> [Int] {
        var seen = Set<Int>(), out: [Int] = []
        for case let .range(first, last) in parts {
            let end = last ?? count
            guard first <= count, end <= count else { throw MediaError.pageOutOfRange(file: file, page: max(first, end), pages: count) }
            for page in first...max(first, end) where seen.insert(page).inserted {
                out.append(page)
                guard out.count <= Self.pageLimit else {
                    throw InputError.option("at most \(Self.pageLimit) pages can be read in one run; choose fewer with --pages")
                }
            }
        }
        return out
    }
}
