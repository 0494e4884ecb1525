@testable import PaliGemma
import XCTest

/// The parts of video and document reading that need no program and no model: times, page
/// lists, tiles, the reading-order merge and task names.
final class MediaLogicTests: XCTestCase {
    func testTimesParseInEveryWrittenForm() {
        let cases: [(String, Int)] = [("2s", 2000), ("500ms", 500), ("0.5", 500), ("1.5m", 90_000), ("1h", 3_600_000),
                                      ("1:30", 90_000), ("0:01:30.250", 90_250), ("0", 0)]
        for (text, ms) in cases { XCTAssertEqual(MediaTime(parsing: text)?.milliseconds, ms, text) }
        for bad in ["", "-1s", "2 fortnights", "1:", "1.5:30", "nan", "90000000", "1e3"] { XCTAssertNil(MediaTime(parsing: bad), bad) }
        XCTAssertEqual(MediaTime(milliseconds: 3_723_004).description, "1:02:03.004")
        XCTAssertEqual(MediaTime(milliseconds: 2500).description, "0:02.500")
    }

    func testSamplingTimesAddUpExactlyAndStopAtTheEnd() throws {
        let tenth = VideoSampling(every: MediaTime(milliseconds: 100), maxFrames: 100)
        XCTAssertEqual(tenth.times(duration: MediaTime(milliseconds: 350)).map(\.milliseconds), [0, 100, 200, 300])
        let bounded = VideoSampling(every: MediaTime(milliseconds: 1000), start: MediaTime(milliseconds: 500),
                                    end: MediaTime(milliseconds: 2500), maxFrames: 100)
        XCTAssertEqual(bounded.times(duration: nil).map(\.milliseconds), [500, 1500])
        XCTAssertEqual(VideoSampling(maxFrames: 3).times(duration: nil).count, 3, "unknown length: up to the most frames")
        XCTAssertThrowsError(try VideoSampling(every: MediaTime(milliseconds: 1)).validate())
        XCTAssertThrowsError(try VideoSampling(maxFrames: VideoSampling.frameLimit + 1).validate())
        XCTAssertThrowsError(try VideoSampling(start: MediaTime(milliseconds: 5), end: MediaTime(milliseconds: 5)).validate())
    }

    func testPageSelections() throws {
        XCTAssertEqual(try PageSelection(parsing: "1-3,5").pages(count: 9, file: "f"), [1, 2, 3, 5])
        XCTAssertEqual(try PageSelection(parsing: "7-, 2, 8").pages(count: 9, file: "f"), [7, 8, 9, 2], "in the order given, each once")
        XCTAssertThrowsError(try PageSelection(parsing: "4").pages(count: 3, file: "f")) { error in
            XCTAssertEqual(error as? MediaError, .pageOutOfRange(file: "f", page: 4, pages: 3))
        }
        for bad in ["", "0", "3-1", "a", "1,,2", "1-2-3", "-4"] { XCTAssertThrowsError(try PageSelection(parsing: bad), bad) }
    }

    func testTilesCoverThePageEvenlyWithAtLeastTheOverlap() {
        let tiling = PageTiling(tileSize: 100, overlap: 20)
        let tiles = tiling.tiles(width: 250, height: 90)
        XCTAssertEqual(tiles.map(\.x), [0, 75, 150], "three tiles, the last ending at the edge")
        XCTAssertEqual(tiles.map(\.width), [100, 100, 100])
        XCTAssertEqual(tiles.map(\.height), [90, 90, 90], "a side shorter than a tile is one tile")
        XCTAssertEqual(tiles.map(\.column), [0, 1, 2])
        XCTAssertEqual(PageTiling(tileSize: 128, overlap: 0).tiles(width: 256, height: 256).map { [$0.x, $0.y] },
                       [[0, 0], [128, 0], [0, 128], [128, 128]])
        XCTAssertEqual(tiling.tiles(width: 100, height: 100).count, 1)
        XCTAssertThrowsError(try PageTiling(tileSize: 100, overlap: 51).validate())
        XCTAssertThrowsError(try PageTiling(tileSize: 8, overlap: 0).validate())
    }

    func testReadingOrderKeepsOverlappingWordsOnce() {
        XCTAssertEqual(ReadingOrder.merge([["the quick brown", "brown fox jumps"], ["over the lazy", "lazy dog"]]),
                       "the quick brown fox jumps\nover the lazy dog")
        XCTAssertEqual(ReadingOrder.merge([["a b c", "b c d"]]), "a b c d", "the longest run is dropped")
        XCTAssertEqual(ReadingOrder.merge([["total 12", ""], ["", "12 items"]]), "total 12\nitems",
                       "empty tiles are skipped and rows overlap too")
        XCTAssertEqual(ReadingOrder.merge([["docum", "document"]]), "docum document", "cut words are not matched")
        XCTAssertEqual(ReadingOrder.merge([["one"], ["one"]]), "one", "a tile that only repeats adds nothing")
    }

    func testTaskSpecsGiveTheVerbsPrompts() throws {
        XCTAssertEqual(try PaliGemmaTask(spec: "caption").prompt, "caption en")
        XCTAssertEqual(try PaliGemmaTask(spec: "caption fr").prompt, "caption fr")
        XCTAssertEqual(try PaliGemmaTask(spec: "describe", language: "de").prompt, "describe de")
        XCTAssertEqual(try PaliGemmaTask(spec: "answer what color is it?").prompt, "answer en what color is it?")
        XCTAssertEqual(try PaliGemmaTask(spec: "ask how many?").prompt, "answer en how many?")
        XCTAssertEqual(try PaliGemmaTask(spec: "detect car ; person").prompt, "detect car ; person")
        XCTAssertEqual(try PaliGemmaTask(spec: " OCR ").prompt, "ocr")
        XCTAssertEqual(try PaliGemmaTask(spec: "segment cat").prompt, "segment cat")
        for bad in ["", "answer", "detect", "caption in french", "ocr this", "paint"] {
            XCTAssertThrowsError(try PaliGemmaTask(spec: bad), bad)
        }
    }

    func testContactSheetTextWraps() {
        XCTAssertEqual(ContactSheet.wrap("a red circle and a blue square", columns: 12, lines: 4), ["a red circle", "and a blue", "square"])
        XCTAssertEqual(ContactSheet.wrap("one two three four five", columns: 8, lines: 2), ["one two", "three..."])
        XCTAssertEqual(ContactSheet.wrap("abcdefghij", columns: 4, lines: 4), ["abcd", "efgh", "ij"])
    }
}
