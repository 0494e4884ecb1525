import ArgumentParser
import Foundation
import PaliGemma

/// The options of `ocr` that concern documents: PDF pages and tiling.
struct DocumentFlags: ParsableArguments {
    @Option(help: ArgumentHelp("PDF pages to read, as 1-3,5 (7- runs to the last page; default: all).", valueName: "pages"))
    var pages: String?

    @Option(parsing: .unconditional, help: "Resolution PDF pages are drawn at (\(PDFPages.dpiRange.lowerBound)…\(PDFPages.dpiRange.upperBound)).")
    var dpi = 150

    @Flag(help: "Cut a page larger than the model's input into overlapping tiles, read each, and merge the texts in reading order.")
    var tile = false

    @Option(name: .customLong("tile-size"), parsing: .unconditional, help: "With --tile: a tile's side in page pixels (default: the model's input size).")
    var tileSize: Int?

    @Option(parsing: .unconditional, help: "With --tile: least overlap between neighbouring tiles in pixels (default: an eighth of a tile).")
    var overlap: Int?

    /// Whether any document option was given, which sends images through the document path too.
    var requested: Bool { pages != nil || tile || tileSize != nil || overlap != nil }
}

/// `ocr` on documents: each PDF's pages (or each image, as one page) read page by page,
/// optionally in tiles. Plain output is each page's text, under a `== FILE page N ==` line when
/// there is more than one page in all; --json prints one object per document.
func runDocuments(paths: [String], flags: TaskFlags, document: DocumentFlags) throws {
    guard !paths.isEmpty else { throw ValidationError("give at least one PDF or image") }
    guard !flags.together, flags.output == nil, flags.maskDir == nil else {
        throw ValidationError("--together, --output and --mask-dir do not apply to PDF files or to --tile")
    }
    if (document.tileSize != nil || document.overlap != nil) && !document.tile {
        throw ValidationError("--tile-size and --overlap go with --tile")
    }
    let selection = try document.pages.map { text -> PageSelection in
        do { return try PageSelection(parsing: text) } catch let e as InputError { throw ValidationError("--pages \(e.description)") }
    }
    guard PDFPages.dpiRange.contains(document.dpi) else {
        throw ValidationError("--dpi must be in \(PDFPages.dpiRange.lowerBound)…\(PDFPages.dpiRange.upperBound), got \(document.dpi)")
    }
    // PDFs and the programs they need are checked before the model is loaded, so that a
    // missing Poppler or a damaged file is reported at once.
    let loader = try flags.model.imageLoader()
    for path in paths where PDFPages.isPDF(URL(fileURLWithPath: path)) {
        _ = try PDFPages(url: URL(fileURLWithPath: path), imageLoader: loader)
    }
    let verbose = isatty(2) != 0
    if verbose { status("loading model…") }
    let pipeline = try flags.model.pipeline()
    var tiling: PageTiling?
    if document.tile {
        let size = document.tileSize ?? pipeline.preprocessor.size
        tiling = PageTiling(tileSize: size, overlap: document.overlap ?? size / 8)
        do { try tiling?.validate() } catch let e as InputError { throw ValidationError(e.description) }
    }
    // Page headers are printed when the run reads more than one page, which is known only once
    // each document's page count is; a single one-page document prints its text alone.
    var headers = paths.count > 1
    for path in paths {
        let url = URL(fileURLWithPath: path)
        let reading = try pipeline.read(document: url, pages: selection, dpi: document.dpi, tiling: tiling,
                                        options: flags.generation.options) { page, planned in
            if planned > 1 { headers = true }
            if verbose { status("\(path): page \(page.page) read (\(page.tiles.count) tile\(page.tiles.count == 1 ? "" : "s"))") }
            guard !flags.json else { return }
            if headers { print("== \(path) page \(page.page) ==") }
            print(page.text)
            flushStandardOutput()
        }
        if flags.json { print(String(decoding: try TaskResult.jsonEncoder().encode(reading), as: UTF8.self)) }
    }
}
