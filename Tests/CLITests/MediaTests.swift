import Foundation
import XCTest

/// `paligemma video` and `paligemma ocr` on PDFs, run as a person would: the built binary, the
/// demo model, clips made by ffmpeg and PDFs written here. Each answer is checked against the
/// same verb on the still picture the frame or page was made from.
final class MediaTests: XCTestCase {
    let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent()
    var scenes: URL { root.appendingPathComponent("Tests/Fixtures/demo") }
    var demo: String { root.appendingPathComponent("Models/demo").path }
    var tmp: URL!

    override func setUpWithError() throws {
        tmp = FileManager.default.temporaryDirectory.appendingPathComponent("media-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: tmp, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws { try? FileManager.default.removeItem(at: tmp) }

    var binary: URL {
        var dir = Bundle(for: MediaTests.self).bundleURL
        while dir.pathExtension == "xctest" || dir.lastPathComponent == "Contents" { dir.deleteLastPathComponent() }
        return dir.appendingPathComponent("paligemma")
    }

    struct Run { let status: Int32; let stdout: String; let stderr: String }

    /// Runs `executable` (the paligemma binary by default) and waits for it.
    @discardableResult
    func run(_ args: [String], executable: URL? = nil, environment: [String: String] = [:]) throws -> Run {
        let p = Process()
        p.executableURL = executable ?? binary
        p.arguments = args
        var env = ProcessInfo.processInfo.environment
        env.removeValue(forKey: "PALIGEMMA_MODEL")
        for (k, v) in environment { env[k] = v }
        p.environment = env
        let out = Pipe(), err = Pipe()
        p.standardOutput = out
        p.standardError = err
        p.standardInput = FileHandle.nullDevice
        try p.run()
        // Every program run here writes little to stderr, so reading it after stdout is safe.
        let o = out.fileHandleForReading.readDataToEndOfFile(), e = err.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        return Run(status: p.terminationStatus, stdout: String(decoding: o, as: UTF8.self), stderr: String(decoding: e, as: UTF8.self))
    }

    /// A program on the PATH, or a skip saying which package the test needs.
    func program(_ name: String, package: String) throws -> URL {
        for dir in (ProcessInfo.processInfo.environment["PATH"] ?? "").split(separator: ":") {
            let url = URL(fileURLWithPath: String(dir)).appendingPathComponent(name)
            if FileManager.default.isExecutableFile(atPath: url.path) { return url }
        }
        throw XCTSkip("`\(name)` is not installed (apt-get install \(package)); .ci/run installs it")
    }

    /// The one-line answer of `paligemma VERB image ARGS` (the independent expectation).
    func answer(_ verb: String, _ image: URL, _ extra: [String] = []) throws -> String {
        let r = try run([verb, image.path, "--model", demo] + extra)
        XCTAssertEqual(r.status, 0, r.stderr)
        return r.stdout.trimmingCharacters(in: .newlines)
    }

    func json(_ text: String) throws -> [String: Any] {
        try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any], text)
    }

    // MARK: - Video

    /// Three scenes the demo model captions correctly, all 128×128 so that the clip needs no
    /// scaling.
    var clipScenes: [URL] { ["scene005.png", "scene025.png", "scene010.png"].map { scenes.appendingPathComponent($0) } }

    /// A 3 s clip at 10 fps, one scene per second, in a lossless codec (FFV1, RGB) so that its
    /// frames are the scenes' pixels exactly.
    func makeClip() throws -> URL {
        let ffmpeg = try program("ffmpeg", package: "ffmpeg")
        let clip = tmp.appendingPathComponent("clip.mkv")
        var args = ["-nostdin", "-v", "error", "-y"]
        for scene in clipScenes { args += ["-loop", "1", "-framerate", "10", "-t", "1", "-i", scene.path] }
        args += ["-filter_complex", "[0][1][2]concat=n=3:v=1[v]", "-map", "[v]", "-c:v", "ffv1", "-pix_fmt", "bgr0", clip.path]
        let r = try run(args, executable: ffmpeg)
        XCTAssertEqual(r.status, 0, r.stderr)
        return clip
    }

    func testVideoTimelineCaptionsEqualTheStillsCaptions() throws {
        let clip = try makeClip()
        let sheet = tmp.appendingPathComponent("sheet.png")
        let r = try run(["video", clip.path, "--every", "1s", "--task", "caption", "--model", demo, "--json", "--sheet", sheet.path])
        XCTAssertEqual(r.status, 0, r.stderr)
        let timeline = try json(r.stdout)
        let frames = try XCTUnwrap(timeline["frames"] as? [[String: Any]])
        XCTAssertEqual(frames.compactMap { $0["time"] as? Double }, [0, 1, 2])
        let stills = try clipScenes.map { try answer("caption", $0) }
        XCTAssertEqual(frames.compactMap { $0["text"] as? String }, stills)
        XCTAssertEqual(frames.first?["prompt"] as? String, "caption en")
        XCTAssertEqual((timeline["info"] as? [String: Any])?["width"] as? Int, 128)
        XCTAssertEqual(Array(try Data(contentsOf: sheet).prefix(4)), [0x89, 0x50, 0x4E, 0x47])

        // Half-second sampling, plain output: each scene twice, at its own times.
        let plain = try run(["video", clip.path, "--every", "500ms", "--task", "caption en", "--model", demo])
        XCTAssertEqual(plain.status, 0, plain.stderr)
        let expected = ["0:00.000", "0:00.500", "0:01.000", "0:01.500", "0:02.000", "0:02.500"].enumerated()
            .map { "\($0.element)  \(stills[$0.offset / 2])" }
        XCTAssertEqual(plain.stdout.split(separator: "\n").map(String.init), expected)
    }

    /// --together 3 gives the three frames to one prompt: the answer of `generate --together`
    /// on the three stills.
    func testVideoTogetherIsOneMultiImagePrompt() throws {
        let clip = try makeClip()
        let r = try run(["video", clip.path, "--together", "3", "--task", "answer how many shapes are there?", "--model", demo, "--json"])
        XCTAssertEqual(r.status, 0, r.stderr)
        let frames = try XCTUnwrap(try json(r.stdout)["frames"] as? [[String: Any]])
        XCTAssertEqual(frames.count, 1)
        XCTAssertEqual(frames[0]["times"] as? [Double], [0, 1, 2])
        let still = try run(["generate"] + clipScenes.map(\.path) + ["--together", "--prompt", "answer en how many shapes are there?", "--model", demo])
        XCTAssertEqual(still.status, 0, still.stderr)
        XCTAssertEqual(frames[0]["text"] as? String, still.stdout.trimmingCharacters(in: .newlines))
    }

    func testVideoErrorsNameTheFileAndTheWayOut() throws {
        // Without ffmpeg on the PATH: exit 6 and the package to install.
        let empty = tmp.appendingPathComponent("empty-path")
        try FileManager.default.createDirectory(at: empty, withIntermediateDirectories: true)
        let missing = try run(["video", scenes.appendingPathComponent("scene005.png").path, "--task", "caption", "--model", demo],
                              environment: ["PATH": empty.path])
        XCTAssertEqual(missing.status, 6, missing.stderr)
        XCTAssertTrue(missing.stderr.contains("apt-get install ffmpeg"), missing.stderr)
        XCTAssertTrue(missing.stderr.contains("brew install ffmpeg"), missing.stderr)

        let usage = try run(["video", "x.mp4", "--task", "caption", "--every", "1 fortnight"])
        XCTAssertEqual(usage.status, 64, usage.stderr)
        XCTAssertEqual(try run(["video", "x.mp4", "--task", "caption", "--max-frames", "0"]).status, 64)
        XCTAssertEqual(try run(["video", "x.mp4", "--task", "paint the clip"]).status, 64)

        let ffmpeg = try program("ffmpeg", package: "ffmpeg")
        let nowhere = tmp.appendingPathComponent("nowhere.mp4").path
        let absent = try run(["video", nowhere, "--task", "caption", "--model", demo])
        XCTAssertEqual(absent.status, 4)
        XCTAssertTrue(absent.stderr.contains(nowhere), absent.stderr)

        let text = tmp.appendingPathComponent("notes.mp4")
        try Data("not a video at all\n".utf8).write(to: text)
        let notVideo = try run(["video", text.path, "--task", "caption", "--model", demo])
        XCTAssertEqual(notVideo.status, 4)
        XCTAssertTrue(notVideo.stderr.contains(text.path) && notVideo.stderr.contains("not a video"), notVideo.stderr)

        // Sound only: a file ffprobe reads, with no frame to sample.
        let sound = tmp.appendingPathComponent("sound.wav")
        XCTAssertEqual(try run(["-nostdin", "-v", "error", "-f", "lavfi", "-i", "anullsrc=r=8000:cl=mono", "-t", "0.5", sound.path],
                               executable: ffmpeg).status, 0)
        let silent = try run(["video", sound.path, "--task", "caption", "--model", demo])
        XCTAssertEqual(silent.status, 4)
        XCTAssertTrue(silent.stderr.contains(sound.path) && silent.stderr.contains("no video stream"), silent.stderr)
    }

    // MARK: - PDF

    /// A PDF whose pages are `size × size` points and show the given PNG pictures at one point
    /// per pixel, each at its `x, y` (from the page's top-left). The PNG's compressed rows go in
    /// unchanged (Flate with the PNG predictor), so no decoder is needed here; the pictures
    /// must be 8-bit RGB, not interlaced, as the demo scenes are.
    func writePDF(_ url: URL, pages: [(size: Int, pictures: [(png: URL, x: Int, y: Int)])]) throws {
        var objects: [Data] = [Data(), Data()]
        func add(_ d: Data) -> Int { objects.append(d); return objects.count }
        func stream(_ header: String, _ body: Data) -> Data {
            Data("\(header.dropLast(2)) /Length \(body.count) >>\nstream\n".utf8) + body + Data("\nendstream".utf8)
        }
        var kids: [Int] = []
        for page in pages {
            var resources = "", content = ""
            for (i, picture) in page.pictures.enumerated() {
                let png = try Data(contentsOf: picture.png)
                let bytes = [UInt8](png)
                func be(_ at: Int) -> Int { bytes[at..<at + 4].reduce(0) { $0 << 8 | Int($1) } }
                var at = 8, width = 0, height = 0, rows = Data()
                while at + 8 <= bytes.count {
                    let length = be(at), kind = String(decoding: bytes[at + 4..<at + 8], as: UTF8.self)
                    if kind == "IHDR" { width = be(at + 8); height = be(at + 12); XCTAssertEqual(bytes[at + 16..<at + 19], [8, 2, 0]) }
                    if kind == "IDAT" { rows += png[at + 8..<at + 8 + length] }
                    at += 12 + length
                }
                let image = add(stream("<< /Type /XObject /Subtype /Image /Width \(width) /Height \(height) /ColorSpace /DeviceRGB "
                    + "/BitsPerComponent 8 /Filter /FlateDecode /DecodeParms << /Predictor 15 /Colors 3 /BitsPerComponent 8 /Columns \(width) >> >>", rows))
                resources += " /I\(i) \(image) 0 R"
                content += "q \(width) 0 0 \(height) \(picture.x) \(page.size - picture.y - height) cm /I\(i) Do Q\n"
            }
            let contents = add(stream("<< >>", Data(content.utf8)))
            kids.append(add(Data("<< /Type /Page /Parent 2 0 R /MediaBox [0 0 \(page.size) \(page.size)] /Resources << /XObject <<\(resources) >> >> /Contents \(contents) 0 R >>".utf8)))
        }
        objects[0] = Data("<< /Type /Catalog /Pages 2 0 R >>".utf8)
        objects[1] = Data("<< /Type /Pages /Kids [\(kids.map { "\($0) 0 R" }.joined(separator: " "))] /Count \(kids.count) >>".utf8)
        var out = Data("%PDF-1.4\n".utf8), offsets: [Int] = []
        for (i, object) in objects.enumerated() {
            offsets.append(out.count)
            out += Data("\(i + 1) 0 obj\n".utf8) + object + Data("\nendobj\n".utf8)
        }
        let xref = out.count
        out += Data("xref\n0 \(objects.count + 1)\n0000000000 65535 f \n".utf8)
        for offset in offsets { out += Data(String(format: "%010d 00000 n \n", offset).utf8) }
        out += Data("trailer\n<< /Size \(objects.count + 1) /Root 1 0 R >>\nstartxref\n\(xref)\n%%EOF\n".utf8)
        try out.write(to: url)
    }

    func scene(_ name: String) -> URL { scenes.appendingPathComponent(name) }

    func testPDFPagesReadAsTheirPictures() throws {
        let pdftocairo = try program("pdftocairo", package: "poppler-utils")
        _ = try program("pdfinfo", package: "poppler-utils")
        let pictures = [scene("scene000.png"), scene("scene005.png")]
        let pdf = tmp.appendingPathComponent("two.pdf")
        try writePDF(pdf, pages: pictures.map { (128, [($0, 0, 0)]) })
        let stills = try pictures.map { try answer("ocr", $0) }

        // At 72 dpi a page is its picture, pixel for pixel.
        let r = try run(["ocr", pdf.path, "--dpi", "72", "--model", demo, "--json"])
        XCTAssertEqual(r.status, 0, r.stderr)
        let document = try json(r.stdout)
        XCTAssertEqual(document["page_count"] as? Int, 2)
        let pages = try XCTUnwrap(document["pages"] as? [[String: Any]])
        XCTAssertEqual(pages.compactMap { $0["page"] as? Int }, [1, 2])
        XCTAssertEqual(pages.compactMap { $0["text"] as? String }, stills)
        XCTAssertEqual(pages.compactMap { $0["width"] as? Int }, [128, 128])

        // At the default 150 dpi: the text of the page as Poppler draws it, read as an image.
        let page2 = tmp.appendingPathComponent("page2.png")
        let drawn = try run(["-png", "-singlefile", "-f", "2", "-l", "2", pdf.path, page2.deletingPathExtension().path], executable: pdftocairo)
        XCTAssertEqual(drawn.status, 0, drawn.stderr)
        let plain = try run(["ocr", pdf.path, "--pages", "2", "--model", demo])
        XCTAssertEqual(plain.status, 0, plain.stderr)
        XCTAssertEqual(plain.stdout.trimmingCharacters(in: .newlines), try answer("ocr", page2))

        // The header decides, not the name: a PDF called .png is read as a document.
        let disguised = tmp.appendingPathComponent("scan.png")
        try FileManager.default.copyItem(at: pdf, to: disguised)
        let both = try run(["ocr", disguised.path, "--dpi", "72", "--model", demo])
        XCTAssertEqual(both.stdout, "== \(disguised.path) page 1 ==\n\(stills[0])\n== \(disguised.path) page 2 ==\n\(stills[1])\n")
    }

    /// Four scenes on one 256-point page, read in 128-pixel tiles without overlap: each tile is
    /// one scene, and the text comes in reading order.
    func testTiledPageReadsInReadingOrder() throws {
        _ = try program("pdftocairo", package: "poppler-utils")
        let grid = ["scene000.png", "scene005.png", "scene015.png", "scene020.png"].map(scene)
        let pdf = tmp.appendingPathComponent("grid.pdf")
        try writePDF(pdf, pages: [(256, [(grid[0], 0, 0), (grid[1], 128, 0), (grid[2], 0, 128), (grid[3], 128, 128)])])
        let words = try grid.map { try answer("ocr", $0) }
        let r = try run(["ocr", pdf.path, "--dpi", "72", "--tile", "--tile-size", "128", "--overlap", "0", "--model", demo, "--json"])
        XCTAssertEqual(r.status, 0, r.stderr)
        let page = try XCTUnwrap((try json(r.stdout)["pages"] as? [[String: Any]])?.first)
        XCTAssertEqual(page["text"] as? String, "\(words[0]) \(words[1])\n\(words[2]) \(words[3])")
        let tiles = try XCTUnwrap(page["tiles"] as? [[String: Any]])
        XCTAssertEqual(tiles.compactMap { $0["x"] as? Int }, [0, 128, 0, 128])
        XCTAssertEqual(tiles.compactMap { $0["y"] as? Int }, [0, 0, 128, 128])
        XCTAssertEqual(tiles.compactMap { $0["text"] as? String }, words)
    }

    func testPDFErrorsNameTheFileAndTheWayOut() throws {
        let pdf = tmp.appendingPathComponent("one.pdf")
        try writePDF(pdf, pages: [(128, [(scene("scene000.png"), 0, 0)])])
        let empty = tmp.appendingPathComponent("empty-path")
        try FileManager.default.createDirectory(at: empty, withIntermediateDirectories: true)
        let missing = try run(["ocr", pdf.path, "--model", demo], environment: ["PATH": empty.path])
        XCTAssertEqual(missing.status, 6, missing.stderr)
        XCTAssertTrue(missing.stderr.contains("apt-get install poppler-utils"), missing.stderr)

        _ = try program("pdfinfo", package: "poppler-utils")
        _ = try program("pdftocairo", package: "poppler-utils")
        let none = tmp.appendingPathComponent("none.pdf")
        try writePDF(none, pages: [])
        let noPages = try run(["ocr", none.path, "--model", demo])
        XCTAssertEqual(noPages.status, 4)
        XCTAssertTrue(noPages.stderr.contains(none.path) && noPages.stderr.contains("no pages"), noPages.stderr)

        let corrupt = tmp.appendingPathComponent("corrupt.pdf")
        try Data("%PDF-1.7\n1 0 obj << /Type /Catalog".utf8).write(to: corrupt)
        let broken = try run(["ocr", corrupt.path, "--model", demo])
        XCTAssertEqual(broken.status, 4)
        XCTAssertTrue(broken.stderr.contains(corrupt.path) && broken.stderr.contains("not a PDF that can be read"), broken.stderr)

        let past = try run(["ocr", pdf.path, "--pages", "2", "--model", demo])
        XCTAssertEqual(past.status, 4)
        XCTAssertTrue(past.stderr.contains("page 2") && past.stderr.contains("1 page"), past.stderr)
        XCTAssertEqual(try run(["ocr", pdf.path, "--dpi", "5000"]).status, 64)
        XCTAssertEqual(try run(["ocr", pdf.path, "--pages", "3-1"]).status, 64)
    }
}
