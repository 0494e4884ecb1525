import Foundation
import Hummingbird
import Logging
import MaskDecoder
import PaliGemma
@testable import PaliGemmaServer
import ServiceLifecycle
import XCTest

/// The web page in a real browser: headless Chromium, driven through chromedriver, against the real
/// server with the demo model (Models/demo, mask decoder included). Each task is run from the page
/// and its answer compared with the server's own answer to the same request; boxes and masks are
/// read back from the canvas where the server's coordinates put them; errors, phone widths,
/// contrast, and the browser's console (any JavaScript error fails the test) are checked too.
///
/// Skipped when chromedriver or Chromium is missing (Debian: `chromium chromium-driver`, installed
/// by .ci/run). `PALIGEMMA_TEST_SCREENSHOTS=DIR` saves screenshots of the main states there.
final class BrowserTests: XCTestCase {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    static let demo = root.appendingPathComponent("Models/demo")
    static let example = demo.appendingPathComponent("examples/exit.png")

    var browser: Browser!
    var port = 0
    /// Browser log entries with the step that produced them.
    var log: [(step: String, entry: Browser.LogEntry)] = []
    var screenshots: URL?

    func testThePageInHeadlessChromium() async throws {
        guard let found = Browser.locate() else {
            throw XCTSkip("chromedriver and Chromium are not installed (Debian: apt-get install chromium chromium-driver; .ci/run does)")
        }
        screenshots = ProcessInfo.processInfo.environment["PALIGEMMA_TEST_SCREENSHOTS"].map { URL(fileURLWithPath: $0) }
        if let screenshots { try FileManager.default.createDirectory(at: screenshots, withIntermediateDirectories: true) }
        let pipeline = try PaliGemmaPipeline(directory: Self.demo)
        let segmenter = try Segmenter(vaeFile: Self.demo.appendingPathComponent("vae-oid.npz"))
        try await withServer(pipeline: pipeline, segmenter: segmenter) { port in
            self.port = port
            browser = try await Browser(driver: found.driver, chromium: found.chromium)
            defer { browser.stop() }
            try await desktop()
            try await phone()
            let errors = log.filter { step, entry in
                guard entry.level == "SEVERE" else { return false }
                // The deliberate bad request is the only failed load expected.
                return !(step == "server error" && entry.source == "network" && entry.message.contains("/v1/generate") && entry.message.contains("400"))
            }
            XCTAssertTrue(errors.isEmpty, "errors in the browser console:\n" + errors.map { "[\($0.step)] \($0.entry.source): \($0.entry.message)" }.joined(separator: "\n"))
        }
    }

    // MARK: - the flows

    func desktop() async throws {
        try await browser.viewport(width: 1280, height: 900, mobile: false)
        try await load()
        // The demo model's own defaults, from Models/demo/examples/examples.json.
        let defaults = try await browser.run("""
            return [document.getElementById('objects-input').value, [...document.querySelectorAll('#langs option')].map(o => o.value).join(','),
                    [...document.getElementById('task').options].map(o => o.value).join(',')]
            """) as? [String]
        XCTAssertEqual(defaults, ["circle ; square", "en,de,fr", "caption,answer,detect,segment,ocr,free"])
        try await checkNoOverflow(1280, "desktop, empty page")
        try await checkContrast("light")

        try await browser.click("#run")
        try await expectError(containing: "Choose an image", step: "no image")

        try await browser.type("#file", Self.example.path, clear: false)
        try await waitForImage()
        try await step("caption") {
            try await self.choose(task: "caption")
            let run = try await self.generate(expecting: "caption en")
            XCTAssertTrue(run.output.contains("circle"), run.output)
        }
        try await step("answer") {
            try await self.choose(task: "answer")
            try await self.browser.run("document.getElementById('question').value = ''")
            try await self.browser.click("#run")
            try await self.expectError(containing: "Type a question", step: "empty question")
            try await self.browser.type("#question", "which shape is purple?")
            let run = try await self.generate(expecting: "answer en which shape is purple?")
            XCTAssertEqual(run.output, "cross")
        }
        try await step("detect") {
            try await self.choose(task: "detect")
            try await self.browser.type("#objects-input", " ; ")
            try await self.browser.click("#run")
            try await self.expectError(containing: "Name at least one object", step: "empty objects")
            try await self.browser.type("#objects-input", "diamond ; circle")
            let run = try await self.generate(expecting: "detect diamond ; circle")
            XCTAssertEqual(run.output, "diamond ; circle")
            XCTAssertEqual(run.objects.count, 2)
            try await self.checkDrawing(run)
        }
        try await step("segment") {
            try await self.choose(task: "segment")
            try await self.browser.type("#object", "cross")
            let run = try await self.generate(expecting: "segment cross")
            XCTAssertEqual(run.output, "cross")
            XCTAssertEqual(run.masks.count, 1)
            try await self.checkDrawing(run)
            try await self.screenshot("desktop-segment")
        }
        try await step("ocr") {
            try await self.choose(task: "ocr")
            let run = try await self.generate(expecting: "ocr")
            XCTAssertEqual(run.output, "exit")
        }
        try await step("follow-up") {
            try await self.browser.type("#followup-input", "what color is the circle?")
            let run = try await self.generate(expecting: "answer en what color is the circle?", button: "#ask")
            XCTAssertEqual(run.output, "green")
            // The same picture again: the server reuses its encoding, and the page says so.
            let timings = try await self.browser.string("return document.getElementById('timings').textContent")
            XCTAssertTrue(timings.contains("reused"), timings)
            let turns = try await self.browser.run("return document.querySelectorAll('#turns li').length") as? Int
            XCTAssertEqual(turns, 6)
            try await self.browser.click("#copy")
            try await self.browser.wait("the copy button's answer", "return document.getElementById('copy').textContent !== 'Copy'")
            try await self.screenshot("desktop-follow-up")
        }
        try await step("queued") { try await self.queuePosition() }
        try await step("server error") {
            try await self.choose(task: "free")
            try await self.browser.type("#free", "caption <image> en")
            try await self.browser.click("#run")
            try await self.expectError(containing: "<image>", step: "server error")
            try await self.expectCleared()
        }
        try await step("dark") {
            try await self.browser.colorScheme("dark")
            try await self.checkContrast("dark")
            try await self.screenshot("desktop-dark-error")
            try await self.browser.colorScheme("light")
        }
        try await step("not an image") { try await self.notAnImage() }
        try await screenshot("desktop-not-an-image")
    }

    func phone() async throws {
        try await browser.viewport(width: 360, height: 740, mobile: true)
        try await load()
        try await checkNoOverflow(360, "360 px, empty page")
        try await step("example") {
            try await self.browser.click("#examples button")
            try await self.waitForImage()
            try await self.browser.wait("the example's prompts", "return document.getElementById('objects-input').value === 'diamond ; circle'")
            try await self.checkNoOverflow(360, "360 px, example chosen")
        }
        try await step("phone detect") {
            try await self.choose(task: "detect")
            let run = try await self.generate(expecting: "detect diamond ; circle")
            try await self.checkDrawing(run)
            try await self.browser.click("#raw-fold summary")
            try await self.checkNoOverflow(360, "360 px, detect answer and raw tokens")
            try await self.screenshot("phone-360-detect")
        }
        try await step("phone segment") {
            try await self.choose(task: "segment")
            let run = try await self.generate(expecting: "segment cross")
            try await self.checkDrawing(run)
            try await self.checkNoOverflow(360, "360 px, segment answer")
            try await self.browser.viewport(width: 375, height: 812, mobile: true)
            try await self.checkNoOverflow(375, "375 px, segment answer")
            try await self.screenshot("phone-375-segment")
            try await self.browser.viewport(width: 360, height: 740, mobile: true)
        }
        try await step("phone not an image") {
            try await self.notAnImage()
            try await self.checkNoOverflow(360, "360 px, error")
            try await self.screenshot("phone-360-not-an-image")
        }
    }

    // MARK: - steps

    /// Runs `body`, then files the browser log under `name`.
    func step(_ name: String, _ body: () async throws -> Void) async throws {
        do {
            try await body()
        } catch {
            try? await screenshot("failed-\(name.replacingOccurrences(of: " ", with: "-"))")
            log += (try? await browser.log().map { (step: name, entry: $0) }) ?? []
            throw error
        }
        log += try await browser.log().map { (step: name, entry: $0) }
    }

    func load() async throws {
        try await browser.open("http://127.0.0.1:\(port)/")
        try await browser.wait("the page to load its examples and the server's health", """
            return document.querySelectorAll('#examples button').length > 0 && document.getElementById('health').textContent.startsWith('model ')
            """)
        log += try await browser.log().map { (step: "load", entry: $0) }
    }

    func waitForImage() async throws {
        try await browser.wait("the image on the canvas", """
            const c = document.getElementById('canvas');
            return !c.hidden && document.getElementById('status').dataset.state === 'idle' && c.width > 0
            """)
        // The plain picture, to tell what the page draws over it.
        try await browser.run("""
            const c = document.getElementById('canvas');
            window.testPlain = c.getContext('2d').getImageData(0, 0, c.width, c.height);
            """)
    }

    func choose(task: String) async throws {
        try await browser.click("#task option[value=\(task)]")
    }

    func expectError(containing text: String, step: String) async throws {
        try await browser.wait("an error (\(step))", "return document.getElementById('status').dataset.state === 'error'")
        let status = try await browser.string("return document.getElementById('status').textContent")
        XCTAssertTrue(status.contains(text), "\(step): \(status)")
    }

    /// Output, boxes and timings of an earlier run are gone.
    func expectCleared() async throws {
        let state = try await browser.run("""
            return [document.getElementById('output').textContent, document.getElementById('raw').textContent,
                    document.getElementById('timings').textContent.trim(), document.querySelectorAll('#objects li').length]
            """) as? [Any]
        XCTAssertEqual(state?[0] as? String, "")
        XCTAssertEqual(state?[1] as? String, "")
        XCTAssertEqual(state?[2] as? String, "—")
        XCTAssertEqual(state?[3] as? Int, 0)
    }

    func notAnImage() async throws {
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("notes.txt")
        try Data("not a picture\n".utf8).write(to: file)
        defer { try? FileManager.default.removeItem(at: file) }
        try await browser.type("#file", file.path, clear: false)
        try await expectError(containing: "“notes.txt” is a text/plain file", step: "not an image")
        try await expectCleared()
        // Said beside the file input too, where a phone user is looking.
        let beside = try await browser.string("""
            const e = document.getElementById('field-error');
            return !e.hidden && e.previousElementSibling && e.previousElementSibling.id === 'drop' ? e.textContent : ''
            """)
        XCTAssertTrue(beside.contains("notes.txt"), beside)
        let hidden = try await browser.run("""
            return [document.getElementById('canvas').hidden, document.getElementById('placeholder').hidden, document.getElementById('chat').hidden]
            """) as? [Bool]
        XCTAssertEqual(hidden, [true, false, true], "the previous image is gone")
        try await browser.click("#run")
        try await expectError(containing: "Choose an image", step: "not an image, then Generate")
    }

    struct PageRun {
        var prompt: String, raw: String, output: String, pieces: [String]
        var objects: [[String: Any]], masks: [[String: Any]], width: Int, height: Int
    }

    /// Presses `button`, waits for the answer, and checks it against the server's own answer to
    /// the same request: the text streamed in token by token, and the same text in the end.
    func generate(expecting prompt: String, button: String = "#run") async throws -> PageRun {
        try await browser.run("""
            window.testPieces = [];
            if (window.testObserver) window.testObserver.disconnect();
            window.testObserver = new MutationObserver((records) => {
              for (const r of records) for (const n of r.addedNodes) window.testPieces.push(n.textContent);
            });
            window.testObserver.observe(document.getElementById('raw'), { childList: true });
            """)
        let before = try await browser.run("return document.querySelectorAll('#turns li').length") as? Int ?? 0
        try await browser.click(button)
        try await browser.wait("the answer to \(prompt)", """
            const state = document.getElementById('status').dataset.state;
            return state === 'error' || (state === 'done' && document.querySelectorAll('#turns li').length > arguments[0])
            """, [before])
        let page = try await browser.run("""
            const turns = document.querySelectorAll('#turns li .prompt');
            return { state: document.getElementById('status').dataset.state, status: document.getElementById('status').textContent,
                     prompt: turns.length ? turns[turns.length - 1].textContent : '', raw: document.getElementById('raw').textContent,
                     output: document.getElementById('output').textContent, pieces: window.testPieces }
            """) as? [String: Any] ?? [:]
        let status = page["status"] as? String ?? ""
        XCTAssertEqual(page["state"] as? String, "done", status)
        XCTAssertEqual(page["prompt"] as? String, prompt)
        // The server's own stream for the same request (greedy, so the same answer).
        let stream = try await HTTPClient.postJSON(port: port, path: "/v1/generate?stream=true", [
            "image": try Data(contentsOf: Self.example).base64EncodedString(), "prompt": prompt, "max_new_tokens": 64, "temperature": 0,
        ])
        XCTAssertEqual(stream.status, 200, stream.text)
        let tokens = stream.events.filter { $0.event == "token" }.compactMap {
            ((try? JSONSerialization.jsonObject(with: Data($0.data.utf8))) as? [String: Any])?["text"] as? String
        }
        let done = stream.events.last { $0.event == "done" }
            .flatMap { (try? JSONSerialization.jsonObject(with: Data($0.data.utf8))) as? [String: Any] } ?? [:]
        let run = PageRun(prompt: prompt, raw: page["raw"] as? String ?? "", output: page["output"] as? String ?? "",
                          pieces: page["pieces"] as? [String] ?? [], objects: done["objects"] as? [[String: Any]] ?? [],
                          masks: done["masks"] as? [[String: Any]] ?? [],
                          width: done["width"] as? Int ?? 0, height: done["height"] as? Int ?? 0)
        XCTAssertEqual(run.raw, done["text"] as? String, "the page shows the server's answer to \(prompt)")
        XCTAssertEqual(run.pieces, tokens.filter { !$0.isEmpty }, "the raw output of \(prompt) grew token by token, as streamed")
        XCTAssertFalse(run.output.contains("<loc") || run.output.contains("<seg"), run.output)
        XCTAssertTrue(status.hasPrefix("Done:"), status)
        return run
    }

    /// Reads the canvas back: each box's outline in its legend colour where the server's box lies
    /// (scaled to the canvas), each mask's inside tinted with its colour and the rest of its box not.
    func checkDrawing(_ run: PageRun) async throws {
        let info = try await browser.run("""
            const c = document.getElementById('canvas');
            return { width: c.width, height: c.height,
                     colors: [...document.querySelectorAll('#objects li .swatch')].map(s => getComputedStyle(s).backgroundColor) }
            """) as? [String: Any] ?? [:]
        let (cw, ch) = (info["width"] as? Int ?? 0, info["height"] as? Int ?? 0)
        let colors = (info["colors"] as? [String] ?? []).map(Self.parseRGB)
        XCTAssertEqual(colors.count, run.objects.count, "one legend entry per box")
        guard colors.count == run.objects.count, cw > 0, run.width > 0 else { return }
        let sx = Double(cw) / Double(run.width), sy = Double(ch) / Double(run.height)
        func clampX(_ x: Double) -> Int { min(cw - 1, max(0, Int(x.rounded(.down)))) }
        func clampY(_ y: Double) -> Int { min(ch - 1, max(0, Int(y.rounded(.down)))) }

        for (i, object) in run.objects.enumerated() {
            let x0 = (object["x0"] as? Double ?? 0) * sx, x1 = (object["x1"] as? Double ?? 0) * sx
            let y0 = (object["y0"] as? Double ?? 0) * sy, y1 = (object["y1"] as? Double ?? 0) * sy
            var points: [[Int]] = []
            for t in [0.25, 0.5, 0.75] {
                let x = x0 + (x1 - x0) * t, y = y0 + (y1 - y0) * t
                points += [[clampX(x0), clampY(y)], [clampX(x1), clampY(y)], [clampX(x), clampY(y0)], [clampX(x), clampY(y1)]]
            }
            let pixels = try await canvasPixels(points)
            let onColor = pixels.filter { p in zip(p, colors[i]).allSatisfy { abs($0 - $1) <= 24 } }.count
            XCTAssertGreaterThanOrEqual(onColor, 9, "\(run.prompt): box \(i) (\(object["label"] ?? "")) drawn in \(colors[i]) at its place; read \(pixels)")
        }

        for mask in run.masks {
            guard let box = mask["object"] as? [String: Any], let i = run.objects.firstIndex(where: { ($0["x0"] as? Double) == (box["x0"] as? Double) && ($0["label"] as? String) == (box["label"] as? String) }),
                  let rle = (mask["rle"] as? [String: Any])?["counts"] as? [Int], let mw = mask["width"] as? Int, let mh = mask["height"] as? Int else {
                XCTFail("a mask without its box: \(mask.keys)")
                continue
            }
            var bits = [Bool](repeating: false, count: mw * mh)
            var pos = 0, on = false
            for run in rle {
                if on { for k in pos..<min(pos + run, mw * mh) { bits[(k % mh) * mw + k / mh] = true } }
                pos += run
                on.toggle()
            }
            // A pixel deep inside the mask and one inside the box well clear of the mask.
            let r = max(2, mw / 40)
            func all(_ x: Int, _ y: Int, _ value: Bool) -> Bool {
                for dy in -r...r { for dx in -r...r {
                    let (px, py) = (x + dx, y + dy)
                    guard px >= 0, py >= 0, px < mw, py < mh, bits[py * mw + px] == value else { return false }
                } }
                return true
            }
            let bx0 = Int((box["x0"] as? Double ?? 0).rounded(.up)), bx1 = Int((box["x1"] as? Double ?? 0).rounded(.down))
            let by0 = Int((box["y0"] as? Double ?? 0).rounded(.up)), by1 = Int((box["y1"] as? Double ?? 0).rounded(.down))
            let cx = (bx0 + bx1) / 2, cy = (by0 + by1) / 2
            var inside: (Int, Int)?, outside: (Int, Int)?
            let margin = r + 3
            for y in max(0, by0 + margin)..<max(max(0, by0 + margin), min(mh, by1 - margin)) {
                for x in max(0, bx0 + margin)..<max(max(0, bx0 + margin), min(mw, bx1 - margin)) {
                    let d = (x - cx) * (x - cx) + (y - cy) * (y - cy)
                    if all(x, y, true), inside.map({ ($0.0 - cx) * ($0.0 - cx) + ($0.1 - cy) * ($0.1 - cy) > d }) ?? true { inside = (x, y) }
                    if y > cy, all(x, y, false), outside == nil { outside = (x, y) }
                }
            }
            guard let inside else { XCTFail("\(run.prompt): the mask has no inside to read"); continue }
            let toCanvas = { (p: (Int, Int)) -> [Int] in [clampX((Double(p.0) + 0.5) * Double(cw) / Double(mw)), clampY((Double(p.1) + 0.5) * Double(ch) / Double(mh))] }
            var points = [toCanvas(inside)]
            if let outside { points.append(toCanvas(outside)) }
            let drawn = try await canvasPixels(points), plain = try await canvasPixels(points, plain: true)
            let color = colors[i]
            func distance(_ a: [Int], _ b: [Int]) -> Double { sqrt(Double(zip(a, b).map { ($0 - $1) * ($0 - $1) }.reduce(0, +))) }
            let before = distance(plain[0], color), after = distance(drawn[0], color)
            XCTAssertTrue(before < 40 || after < before * 0.65,
                          "\(run.prompt): the mask's inside is tinted with \(color): plain \(plain[0]), drawn \(drawn[0])")
            if outside != nil {
                XCTAssertLessThanOrEqual(distance(drawn[1], plain[1]), 12, "\(run.prompt): the box outside the mask is left as it was")
            }
        }
    }

    /// RGB of canvas pixels (the page's drawing, or the plain picture kept when it loaded).
    func canvasPixels(_ points: [[Int]], plain: Bool = false) async throws -> [[Int]] {
        let value = try await browser.run("""
            const [points, plain] = arguments;
            const c = document.getElementById('canvas');
            const image = plain ? window.testPlain : c.getContext('2d').getImageData(0, 0, c.width, c.height);
            return points.map(([x, y]) => { const o = (y * image.width + x) * 4; return [image.data[o], image.data[o + 1], image.data[o + 2]]; });
            """, [points, plain]) as? [[Int]]
        return value ?? []
    }

    /// The page's queue feedback, fed a stream with the `queued` events a busy server sends.
    func queuePosition() async throws {
        let reference = try await HTTPClient.postJSON(port: port, [
            "image": try Data(contentsOf: Self.example).base64EncodedString(), "prompt": "ocr", "max_new_tokens": 64, "temperature": 0,
        ])
        try await browser.run("""
            let feed;
            const body = new ReadableStream({ start(controller) { feed = controller; } });
            window.testFeed = (text) => feed.enqueue(new TextEncoder().encode(text));
            window.testEnd = () => feed.close();
            window.testRealFetch = window.fetch;
            window.fetch = (url, init) => String(url).startsWith('/v1/generate')
              ? Promise.resolve(new Response(body, { status: 200, headers: { 'Content-Type': 'text/event-stream' } }))
              : window.testRealFetch(url, init);
            """)
        try await choose(task: "ocr")
        try await browser.click("#run")
        let status = "return document.getElementById('status').textContent"
        try await browser.run("window.testFeed('event: queued\\ndata: {\"position\": 2}\\n\\n')")
        try await browser.wait("the queue position 2", "return document.getElementById('status').textContent.includes('2 requests ahead')")
        try await browser.run("window.testFeed('event: queued\\ndata: {\"position\": 1}\\n\\n')")
        try await browser.wait("the queue position 1", "return document.getElementById('status').textContent.includes('1 request ahead')")
        let state = try await browser.string("return document.getElementById('status').dataset.state")
        XCTAssertEqual(state, "queued")
        try await browser.run("window.testFeed('event: token\\ndata: {\"id\": 5, \"text\": \"ex\"}\\n\\n')")
        try await browser.wait("the first token", "return document.getElementById('output').textContent === 'ex'")
        let generating = try await browser.string(status)
        XCTAssertTrue(generating.hasPrefix("Generating… 1 token"), generating)
        try await browser.run("window.testFeed('event: token\\ndata: {\"id\": 6, \"text\": \"it\"}\\n\\n'); window.testFeed('event: done\\ndata: ' + arguments[0] + '\\n\\n'); window.testEnd()",
                              [reference.text])
        try await browser.wait("the stubbed answer", "return document.getElementById('status').dataset.state === 'done'")
        let output = try await browser.string("return document.getElementById('output').textContent")
        XCTAssertEqual(output, "exit")
        try await browser.run("window.fetch = window.testRealFetch")
    }

    /// Nothing is wider than the screen. Compared with the width set, not `innerWidth`: a phone
    /// widens its layout viewport to fit content that overflows.
    func checkNoOverflow(_ width: Int, _ what: String) async throws {
        let widths = try await browser.run("return [document.scrollingElement.scrollWidth, window.innerWidth]") as? [Int] ?? []
        XCTAssertEqual(widths, [width, width], "\(what): the page is wider than the \(width) px screen")
    }

    /// WCAG AA: every visible, enabled piece of text has 4.5:1 against the background it sits on.
    func checkContrast(_ scheme: String) async throws {
        let failures = try await browser.run("""
            const rgba = (s) => (s.match(/[\\d.]+/g) || []).map(Number);
            const lum = ([r, g, b]) => [r, g, b].map((v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; })
                                            .reduce((sum, v, i) => sum + v * [0.2126, 0.7152, 0.0722][i], 0);
            const background = (el) => {
              for (let e = el; e; e = e.parentElement) { const c = rgba(getComputedStyle(e).backgroundColor); if (c.length === 3 || c[3] > 0) return c; }
              return [255, 255, 255];
            };
            const bodyBg = rgba(getComputedStyle(document.body).backgroundColor);
            const out = [];
            for (const el of document.querySelectorAll('body *')) {
              if (!el.checkVisibility() || el.disabled || el.closest('canvas, svg')) continue;
              const own = [...el.childNodes].some((n) => n.nodeType === 3 && n.textContent.trim());
              const field = ['INPUT', 'SELECT', 'TEXTAREA'].includes(el.tagName) && el.type !== 'file' && el.value;
              if (!own && !field) continue;
              const fg = rgba(getComputedStyle(el).color), bgc = background(el);
              const bg = bgc.length === 4 && bgc[3] < 1 ? bgc.slice(0, 3).map((v, i) => v * bgc[3] + bodyBg[i] * (1 - bgc[3])) : bgc.slice(0, 3);
              const [a, b] = [lum(fg), lum(bg)].sort((x, y) => y - x);
              const ratio = (a + 0.05) / (b + 0.05);
              if (ratio < 4.5) out.push(`${el.tagName}#${el.id}.${el.className}: ${ratio.toFixed(2)} (${fg} on ${bg})`);
            }
            return out;
            """) as? [String] ?? ["no answer"]
        XCTAssertEqual(failures, [], "\(scheme) scheme: text below 4.5:1")
    }

    func screenshot(_ name: String) async throws {
        guard let screenshots else { return }
        try await browser.screenshot(fullPage: true).write(to: screenshots.appendingPathComponent(name + ".png"))
    }

    static func parseRGB(_ css: String) -> [Int] {
        css.split(whereSeparator: { !$0.isNumber && $0 != "." }).prefix(3).compactMap { Double($0).map { Int($0) } }
    }

    // MARK: - the server

    func withServer(pipeline: PaliGemmaPipeline, segmenter: Segmenter, _ body: (Int) async throws -> Void) async throws {
        let service = PaliGemmaService(pipeline: pipeline, segmenter: segmenter,
                                       configuration: ServerConfiguration(host: "127.0.0.1", port: 0))
        try await runTestServer(service, body)
    }
}
