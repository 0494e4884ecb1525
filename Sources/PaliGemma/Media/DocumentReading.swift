import Foundation
import Imaging

/// How a page larger than the model's input is cut into square tiles that overlap, so that each
/// tile reaches the model at about its own resolution instead of the whole page shrunk into one
/// input.
///
/// Along each side, a page longer than `tileSize` gets the fewest tiles that overlap by at least
/// `overlap` pixels, spread evenly from edge to edge (the first starts at 0, the last ends at the
/// page's edge); a side no longer than `tileSize` is one tile of the side's length.
public struct PageTiling: Sendable, Equatable {
    /// A tile's side in page pixels (the model's input size by default).
    public var tileSize: Int
    /// Least overlap between neighbouring tiles, in pixels, so that a line cut by one tile's
    /// edge is whole in the next.
    public var overlap: Int

    public static let tileSizeRange = 32...8192

    public init(tileSize: Int, overlap: Int) {
        self.tileSize = tileSize
        self.overlap = overlap
    }

    /// `InputError.option` for a tile size out of `tileSizeRange` or an overlap outside
    /// 0…tileSize/2.
    public func validate() throws {
        guard Self.tileSizeRange.contains(tileSize) else {
            throw InputError.option("the tile size must be in \(Self.tileSizeRange.lowerBound)…\(Self.tileSizeRange.upperBound) pixels, got \(tileSize)")
        }
        guard (0...tileSize / 2).contains(overlap) else {
            throw InputError.option("the tile overlap must be in 0…\(tileSize / 2) pixels (half a tile), got \(overlap)")
        }
    }

    /// Tile starts along a side of `length` pixels, and the tiles' extent.
    func starts(_ length: Int) -> (starts: [Int], extent: Int) {
        guard length > tileSize else { return ([0], length) }
        let stride = tileSize - overlap
        let count = (length - overlap + stride - 1) / stride
        let span = Double(length - tileSize)
        return ((0..<count).map { Int((Double($0) * span / Double(count - 1)).rounded()) }, tileSize)
    }

    /// The tiles of a `width × height` page, row by row from the top, left to right in a row.
    public func tiles(width: Int, height: Int) -> [TileRect] {
        let (xs, w) = starts(width), (ys, h) = starts(height)
        return ys.enumerated().flatMap { row, y in
            xs.enumerated().map { column, x in TileRect(x: x, y: y, width: w, height: h, row: row, column: column) }
        }
    }
}

/// Where a tile lies on its page, in pixels, and its place in the grid.
public struct TileRect: Codable, Sendable, Equatable {
    public var x: Int, y: Int, width: Int, height: Int
    public var row: Int, column: Int
}

/// Tile answers joined into one text in reading order.
///
/// Tiles are taken top to bottom, and left to right within a row. Within a row, each tile's
/// text is appended after a space; rows are joined by a newline. Where tiles overlap, the same
/// words are usually read twice, once at the end of one text and again at the start of the
/// next: the longest run of whole words (compared exactly) that ends the text so far and starts
/// the next tile's text is kept once. Words cut in two by a tile's edge are not matched, and
/// the order is that of the tiles, not of the lines inside them.
public enum ReadingOrder {
    /// `rows[r][c]` is the text of the tile in row `r`, column `c`.
    public static func merge(_ rows: [[String]]) -> String {
        var words: [Substring] = []
        var text = ""
        for row in rows {
            var rowStarted = false
            for tile in row {
                let next = tile.split(whereSeparator: \.isWhitespace)
                guard !next.isEmpty else { continue }
                let repeated = overlap(words, next)
                let fresh = next.dropFirst(repeated)
                if !fresh.isEmpty {
                    if !text.isEmpty { text += rowStarted ? " " : "\n" }
                    text += fresh.joined(separator: " ")
                    rowStarted = true
                }
                words += fresh
            }
        }
        return text
    }

    /// The length of the longest run of words that ends `previous` and starts `next`.
    static func overlap(_ previous: [Substring], _ next: [Substring]) -> Int {
        for k in stride(from: min(previous.count, next.count), through: 1, by: -1)
        where previous.suffix(k).elementsEqual(next.prefix(k)) {
            return k
        }
        return 0
    }
}

/// One tile's answer: the `TaskResult` on the tile (its `width`/`height` are the tile's) and
/// where the tile lies. Encoded as the result's object with `x`, `y`, `row` and `column` added.
public struct TileReading: Codable, Sendable {
    public var tile: TileRect
    public var result: TaskResult

    enum CodingKeys: String, CodingKey { case x, y, row, column }

    public init(tile: TileRect, result: TaskResult) {
        self.tile = tile
        self.result = result
    }

    public func encode(to encoder: Encoder) throws {
        try result.encode(to: encoder)
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(tile.x, forKey: .x)
        try c.encode(tile.y, forKey: .y)
        try c.encode(tile.row, forKey: .row)
        try c.encode(tile.column, forKey: .column)
    }

    public init(from decoder: Decoder) throws {
        result = try TaskResult(from: decoder)
        let c = try decoder.container(keyedBy: CodingKeys.self)
        tile = TileRect(x: try c.decode(Int.self, forKey: .x), y: try c.decode(Int.self, forKey: .y),
                        width: result.width, height: result.height,
                        row: try c.decode(Int.self, forKey: .row), column: try c.decode(Int.self, forKey: .column))
    }
}

/// What was read on one page: the merged text and every tile's answer (one tile covering the
/// page when it was not tiled).
public struct PageReading: Codable, Sendable {
    /// The page number, from 1.
    public var page: Int
    /// The page's size in pixels as drawn (or the image's size).
    public var width: Int
    public var height: Int
    /// The tiles' texts in reading order (`ReadingOrder`).
    public var text: String
    public var tiles: [TileReading]
}

/// What was read in one document (a PDF, or an image taken as a one-page document).
public struct DocumentReading: Codable, Sendable {
    /// The path as given.
    public var file: String
    /// Pages in the document (not only those read).
    public var pageCount: Int
    /// The resolution PDF pages were drawn at; nil for an image.
    public var dpi: Int?
    public var pages: [PageReading]

    enum CodingKeys: String, CodingKey { case file, pageCount = "page_count", dpi, pages }
}

extension PaliGemmaPipeline {
    /// Reads a document page by page: a PDF (recognised by its `%PDF-` header) drawn at `dpi`
    /// by Poppler, or an image file as one page. Each page, or with `tiling` each of its tiles,
    /// gets `prompt` (`ocr` by default); tile texts are merged by `ReadingOrder`. `onPage` gets
    /// each page as it is read, with the number of pages planned.
    public func read(document url: URL, prompt: String = PaliGemmaTask.ocr.prompt, pages selection: PageSelection? = nil,
                     dpi: Int = 150, tiling: PageTiling? = nil, options: GenerationOptions = GenerationOptions(),
                     onPage: ((_ page: PageReading, _ planned: Int) throws -> Void)? = nil) throws -> DocumentReading {
        try tiling?.validate()
        let pdf = PDFPages.isPDF(url) ? try PDFPages(url: url, imageLoader: imageLoader) : nil
        if pdf != nil, !PDFPages.dpiRange.contains(dpi) {
            throw InputError.option("the resolution must be in \(PDFPages.dpiRange.lowerBound)…\(PDFPages.dpiRange.upperBound) dpi, got \(dpi)")
        }
        let count = pdf?.pageCount ?? 1
        let wanted: [Int]
        if let selection {
            wanted = try selection.pages(count: count, file: url.relativePath)
        } else {
            guard count <= PageSelection.pageLimit else {
                throw InputError.option("\(url.relativePath) has \(count) pages; at most \(PageSelection.pageLimit) can be read in one run: choose some with --pages")
            }
            wanted = Array(1...count)
        }
        var reading = DocumentReading(file: url.relativePath, pageCount: count, dpi: pdf == nil ? nil : dpi, pages: [])
        for number in wanted {
            let image = try pdf?.render(page: number, dpi: dpi) ?? loadImage(url)
            let rects = tiling?.tiles(width: image.width, height: image.height)
                ?? [TileRect(x: 0, y: 0, width: image.width, height: image.height, row: 0, column: 0)]
            var tiles: [TileReading] = []
            for rect in rects {
                let part = rects.count == 1 ? image : image.cropped(x: rect.x, y: rect.y, width: rect.width, height: rect.height)
                let name = rects.count == 1 ? "\(url.relativePath) page \(number)" : "\(url.relativePath) page \(number) tile \(rect.row),\(rect.column)"
                let result = try perform(prompt, on: try encode(image: part), options: options, name: name)
                tiles.append(TileReading(tile: rect, result: result))
            }
            let rows = Dictionary(grouping: tiles, by: \.tile.row).sorted { $0.key < $1.key }
                .map { $0.value.sorted { $0.tile.column < $1.tile.column }.map(\.result.text) }
            let page = PageReading(page: number, width: image.width, height: image.height, text: ReadingOrder.merge(rows), tiles: tiles)
            reading.pages.append(page)
            try onPage?(page, wanted.count)
        }
        return reading
    }
}
