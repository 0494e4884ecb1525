import Foundation
import Imaging

/// A video timeline drawn as one picture: a grid of the sampled frames in time order, each
/// with its boxes drawn and, under it, its time and answer. Frames are shrunk to thumbnails as
/// they are added, so a long timeline never holds its full-size frames.
public struct ContactSheet: Sendable {
    /// The largest sheet drawn; thumbnails shrink (down to `minimumThumbnailWidth`) to stay under it.
    public static let pixelLimit = 64_000_000
    public static let minimumThumbnailWidth = 48
    /// Lines of answer text under a frame (then cut with "...").
    static let textLines = 4
    static let gap = 8
    static let lineHeight = 10

    let thumbnailWidth: Int
    let thumbnailHeight: Int
    let framesPerCell: Int
    let columns: Int
    private(set) var cells: [RGBImage] = []

    var cellWidth: Int { thumbnailWidth * framesPerCell + Self.gap * (framesPerCell - 1) }
    var cellHeight: Int { thumbnailHeight + Self.lineHeight * (Self.textLines + 1) + 6 }

    /// A sheet for `entries` answers on frames of `frameWidth × frameHeight`, `framesPerEntry`
    /// frames each. Throws `MediaError.tooLarge` when even the smallest thumbnails would not
    /// fit `pixelLimit`.
    public init(frameWidth: Int, frameHeight: Int, framesPerEntry: Int, entries: Int, name: String) throws {
        precondition(frameWidth > 0 && frameHeight > 0 && framesPerEntry > 0, "ContactSheet: empty frames")
        framesPerCell = framesPerEntry
        let aspect = min(4, max(0.25, Double(frameHeight) / Double(frameWidth)))
        var width = Double(min(320, max(160, frameWidth)))
        func area(_ w: Double) -> Double {
            let cellW = w * Double(framesPerEntry) + Double(Self.gap * framesPerEntry)
            let cellH = w * aspect + Double(Self.lineHeight * (Self.textLines + 1) + 6 + Self.gap)
            return cellW * cellH * Double(max(1, entries))
        }
        let budget = Double(Self.pixelLimit) * 0.9
        if area(width) > budget { width *= (budget / area(width)).squareRoot() }
        guard width >= Double(Self.minimumThumbnailWidth) else {
            throw MediaError.tooLarge(file: name, what: "contact sheet of \(entries) frames", width: Int(area(Double(Self.minimumThumbnailWidth)).squareRoot()),
                                      height: Int(area(Double(Self.minimumThumbnailWidth)).squareRoot()), limit: Self.pixelLimit)
        }
        thumbnailWidth = Int(width)
        thumbnailHeight = max(8, Int((width * aspect).rounded()))
        let cell = thumbnailWidth * framesPerEntry + Self.gap * (framesPerEntry - 1)
        columns = max(1, min(max(1, entries), 1600 / (cell + Self.gap)))
    }

    /// Adds an entry: its frames as thumbnails, the first with the entry's boxes, then the text.
    public mutating func add(_ entry: TimelineEntry, frames: [RGBImage]) {
        var cell = RGBImage(width: cellWidth, height: cellHeight, fill: (255, 255, 255))
        for (i, frame) in frames.prefix(framesPerCell).enumerated() {
            var thumbnail = frame.resized(width: thumbnailWidth, height: thumbnailHeight)
            if i == 0, let objects = entry.result.objects, !objects.isEmpty {
                let sx = Double(thumbnailWidth) / Double(frame.width), sy = Double(thumbnailHeight) / Double(frame.height)
                thumbnail = Annotator.draw(image: thumbnail, boxes: objects.map {
                    AnnotationBox(label: $0.label, x0: $0.x0 * sx, y0: $0.y0 * sy, x1: $0.x1 * sx, y1: $0.y1 * sy)
                })
            }
            cell.paste(thumbnail, x: i * (thumbnailWidth + Self.gap), y: 0)
        }
        var heading = entry.time.description
        if let times = entry.times, let last = times.last, times.count > 1 { heading += "-\(last) (\(times.count) frames)" }
        var y = thumbnailHeight + 4
        cell = Annotator.write(heading, on: cell, x: 0, y: y, color: (90, 90, 90))
        for line in Self.wrap(entry.summary, columns: max(4, cellWidth / 6), lines: Self.textLines) {
            y += Self.lineHeight
            cell = Annotator.write(line, on: cell, x: 0, y: y)
        }
        cells.append(cell)
    }

    /// Words filled into lines of `columns` characters, at most `lines` of them; a cut is marked
    /// with "..." and a word longer than a line is broken.
    static func wrap(_ text: String, columns: Int, lines: Int) -> [String] {
        var all: [String] = [], line = ""
        for piece in text.split(whereSeparator: \.isWhitespace) {
            var word = String(piece)
            while word.count > columns {
                if !line.isEmpty { all.append(line); line = "" }
                all.append(String(word.prefix(columns)))
                word = String(word.dropFirst(columns))
            }
            if line.isEmpty {
                line = word
            } else if line.count + 1 + word.count <= columns {
                line += " " + word
            } else {
                all.append(line)
                line = word
            }
        }
        if !line.isEmpty { all.append(line) }
        guard all.count > lines else { return all }
        var out = Array(all.prefix(lines))
        out[lines - 1] = String(out[lines - 1].prefix(max(0, columns - 3))) + "..."
        return out
    }

    /// The sheet: cells left to right, top to bottom, on white.
    public func render() -> RGBImage {
        let rows = max(1, (cells.count + columns - 1) / columns)
        let used = max(1, min(columns, cells.count))
        var sheet = RGBImage(width: Self.gap + used * (cellWidth + Self.gap), height: Self.gap + rows * (cellHeight + Self.gap),
                             fill: (255, 255, 255))
        for (i, cell) in cells.enumerated() {
            sheet.paste(cell, x: Self.gap + (i % columns) * (cellWidth + Self.gap),
                                  y: Self.gap + (i / columns) * (cellHeight + Self.gap))
        }
        return sheet
    }
}
