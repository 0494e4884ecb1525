import Foundation
import XCTest

/// Runs the real `paligemma` binary (built beside this test bundle) on the committed fixtures.
final class CLITests: XCTestCase {
    let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent()
    var fixtures: URL { root.appendingPathComponent("Tests/Fixtures") }
    var model: String { fixtures.appendingPathComponent("model/e2e").path }
    var image: String { fixtures.appendingPathComponent("image/inputs/jpeg_baseline.jpg").path }
    var tmp: URL!

    override func setUpWithError() throws {
        tmp = FileManager.default.temporaryDirectory.appendingPathComponent("cli-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: tmp, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws { try? FileManager.default.removeItem(at: tmp) }

    var binary: URL {
        // The xctest bundle sits in the build products directory, next to the executable.
        var dir = Bundle(for: CLITests.self).bundleURL
        while dir.pathExtension == "xctest" || dir.lastPathComponent == "Contents" { dir.deleteLastPathComponent() }
        return dir.appendingPathComponent("paligemma")
    }

    struct Run { let status: Int32; let stdout: String; let stderr: String }

    @discardableResult
    func run(_ args: [String], stdin: String? = nil, environment: [String: String] = [:]) throws -> Run {
        XCTAssertTrue(FileManager.default.isExecutableFile(atPath: binary.path), "build the paligemma product first: \(binary.path)")
        let p = Process()
        p.executableURL = binary
        p.arguments = args
        var env = ProcessInfo.processInfo.environment
        env.removeValue(forKey: "PALIGEMMA_MODEL")
        for (k, v) in environment { env[k] = v }
        p.environment = env
        let out = Pipe(), err = Pipe(), input = Pipe()
        p.standardOutput = out
        p.standardError = err
        p.standardInput = input
        try p.run()
        if let stdin { input.fileHandleForWriting.write(Data(stdin.utf8)) }
        try input.fileHandleForWriting.close()
        let o = out.fileHandleForReading.readDataToEndOfFile(), e = err.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        return Run(status: p.terminationStatus, stdout: String(decoding: o, as: UTF8.self), stderr: String(decoding: e, as: UTF8.self))
    }

    struct Reference: Decodable {
        struct Case: Decodable { let image: String; let prompt: String; let text: String; let input_ids: [Int]; let generated_ids: [Int] }
        let cases: [Case]
    }

    func reference() throws -> Reference {
        try JSONDecoder().decode(Reference.self, from: Data(contentsOf: fixtures.appendingPathComponent("model/e2e/reference.json")))
    }

    func testCaptionJSONMatchesTransformers() throws {
        let c = try reference().cases[0]
        let r = try run(["caption", fixtures.appendingPathComponent("image/\(c.image)").path, "--model", model,
                         "--max-tokens", "\(c.generated_ids.count)", "--json"])
        XCTAssertEqual(r.status, 0, r.stderr)
        let obj = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any])
        XCTAssertEqual(obj["text"] as? String, c.text)
        XCTAssertEqual(obj["token_ids"] as? [Int], c.generated_ids)
        XCTAssertEqual(obj["prompt"] as? String, "caption en")
        XCTAssertEqual((obj["token_logprobs"] as? [Double])?.count, c.generated_ids.count)
        XCTAssertNotNil(obj["timings"])
        XCTAssertTrue(r.stderr.isEmpty, "quiet when not on a terminal: \(r.stderr)")
    }

    /// The same request gives the same answer object from a task verb, from `generate` and from
    /// batch mode (the demo model, whose detections are real boxes).
    func testSameRequestSameJSONFromEveryFrontEnd() throws {
        let demo = root.appendingPathComponent("Models/demo").path
        let picture = root.appendingPathComponent("Models/demo/example.png").path
        func object(_ line: Substring) throws -> [String: Any] {
            var o = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
            for volatile in ["timings", "id", "image"] { o.removeValue(forKey: volatile) }
            return o
        }
        let verb = try run(["detect", picture, "--objects", "circle ; square", "--model", demo, "--json"])
        XCTAssertEqual(verb.status, 0, verb.stderr)
        let generic = try run(["generate", picture, "--prompt", "detect circle ; square", "--model", demo, "--json"])
        XCTAssertEqual(generic.status, 0, generic.stderr)
        let list = tmp.appendingPathComponent("one.jsonl")
        try "{\"id\": \"x\", \"image\": \"\(picture)\", \"prompt\": \"detect circle ; square\"}\n"
            .write(to: list, atomically: true, encoding: .utf8)
        let batch = try run(["generate", "--input", list.path, "--model", demo])
        XCTAssertEqual(batch.status, 0, batch.stderr)
        let a = try object(verb.stdout.split(separator: "\n")[0])
        let b = try object(generic.stdout.split(separator: "\n")[0])
        let c = try object(batch.stdout.split(separator: "\n")[0])
        XCTAssertEqual(a["task"] as? String, "detect")
        let labels = (a["objects"] as? [[String: Any]])?.compactMap { $0["label"] as? String }
        XCTAssertEqual(labels, ["circle", "square"], verb.stdout)
        XCTAssertEqual(NSDictionary(dictionary: a), NSDictionary(dictionary: b))
        XCTAssertEqual(NSDictionary(dictionary: a), NSDictionary(dictionary: c))
        // The plain-text form of generate prints the boxes too.
        let text = try run(["generate", picture, "--prompt", "detect circle ; square", "--model", demo])
        XCTAssertTrue(text.stdout.hasPrefix("circle  x0="), text.stdout)
    }

    /// Installed away from the checkout, the demo model is missing: a message naming --model.
    func testMissingDemoModelNamesTheWayOut() throws {
        let r = try run(["caption", image], environment: ["PALIGEMMA_DEMO_MODEL": tmp.appendingPathComponent("none").path])
        XCTAssertNotEqual(r.status, 0)
        XCTAssertTrue(r.stderr.contains("--model"), r.stderr)
        XCTAssertTrue(r.stderr.contains("PALIGEMMA_DEMO_MODEL"), r.stderr)
    }

    func testSeveralImagesGiveOneJSONLineEach() throws {
        let second = fixtures.appendingPathComponent("image/inputs/png_rgba.png").path
        let r = try run(["generate", image, second, "--prompt", "detect cat ; dog", "--model", model, "--max-tokens", "4", "--json"])
        XCTAssertEqual(r.status, 0, r.stderr)
        let lines = r.stdout.split(separator: "\n")
        XCTAssertEqual(lines.count, 2)
        let images = try lines.map { (try JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any])?["image"] as? String }
        XCTAssertEqual(images, [image, second])
    }

    func testDetectWritesAnnotatedPNG() throws {
        let out = tmp.appendingPathComponent("boxes.png").path
        let r = try run(["detect", image, "--objects", "cat ; dog", "--model", model, "--max-tokens", "8", "--output", out])
        XCTAssertEqual(r.status, 0, r.stderr)
        let data = try Data(contentsOf: URL(fileURLWithPath: out))
        XCTAssertEqual(Array(data.prefix(8)), [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A])
    }

    func testTokenizePromptMatchesProcessor() throws {
        let c = try reference().cases[1]
        let r = try run(["tokenize", "--model", model, "--prompt", c.prompt, "--json"])
        XCTAssertEqual(r.status, 0, r.stderr)
        let obj = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any])
        XCTAssertEqual(obj["ids"] as? [Int], c.input_ids)
        let plain = try run(["tokenize", "--model", model, "detect cat"])
        XCTAssertTrue(plain.stdout.contains("▁cat"), plain.stdout)
    }

    func testErrorsHaveMessagesAndExitCodes() throws {
        let missingImage = try run(["caption", tmp.appendingPathComponent("nope.jpg").path, "--model", model])
        XCTAssertEqual(missingImage.status, 4)
        XCTAssertTrue(missingImage.stderr.contains("nope.jpg"), missingImage.stderr)
        let garbage = tmp.appendingPathComponent("garbage.jpg")
        try Data("not an image".utf8).write(to: garbage)
        XCTAssertEqual(try run(["caption", garbage.path, "--model", model]).status, 4)
        let missingModel = try run(["caption", image, "--model", tmp.appendingPathComponent("none").path])
        XCTAssertEqual(missingModel.status, 3)
        XCTAssertTrue(missingModel.stderr.contains("none"), missingModel.stderr)
        let zero = try run(["caption", image, "--model", model, "--max-tokens", "0"])
        XCTAssertEqual(zero.status, 64, "an option out of its range is a usage error")
        XCTAssertTrue(zero.stderr.contains("--max-tokens must be in 1…65536"), zero.stderr)
        XCTAssertEqual(try run(["caption", "--no-such-flag"]).status, 64)
        let help = try run(["detect", "--help"])
        XCTAssertEqual(help.status, 0)
        XCTAssertTrue(help.stdout.contains("Example"), help.stdout)
    }

    /// `bench` on a real (tiny) checkpoint at every kernel level this CPU supports (`--isa`): a
    /// small vocabulary, its own prompt ids, and every figure of the JSON report present and
    /// consistent — the level it names is the one asked for, and the achieved rate is not far
    /// above the ceilings probed with that level's instructions; with q8 and q4 weights the
    /// ceiling names the int8 products where the level has them, and on avx2 (no dot-product
    /// instruction) 4-bit weights get their own probe, with 16-bit sums.
    func testBenchReportsConsistentFiguresAtEveryKernelLevel() throws {
        struct Report: Decodable {
            let configuration: String, isa: String, isaAvailable: [String], backend: String
            let promptTokens: Int, imageTokens: Int, decodeTokens: Int
            let imageEncodeSeconds: Double, prefillSeconds: Double, timeToFirstTokenSeconds: Double
            let decodeTokensPerSecond: Double, peakRSSGB: Double, measuredReadGBs: Double
            let measuredFMAGFLOPs: Double, measuredInt8GOPs: Double?, measuredInt8FourBitGOPs: Double?
            let computeFraction: Double, ceiling: String
        }
        let q8 = tmp.appendingPathComponent("bench-q8").path, q4 = tmp.appendingPathComponent("bench-q4").path
        XCTAssertEqual(try run(["quantize", model, q8, "--format", "q8"]).status, 0)
        XCTAssertEqual(try run(["quantize", model, q4, "--format", "q4"]).status, 0)
        func bench(_ dir: String, _ isa: String?) throws -> Report {
            let r = try run(["bench", "--model", dir, "--only", "model", "--decode-tokens", "3", "--prompt-tokens", "7", "--json"]
                            + (isa.map { ["--isa", $0] } ?? []))
            XCTAssertEqual(r.status, 0, r.stderr)
            return try JSONDecoder().decode(Report.self, from: Data(r.stdout.utf8))
        }
        let best = try bench(model, nil)
        // The best level runs by default (or the one PALIGEMMA_ISA names, when a run of the tests sets it).
        let requested = ProcessInfo.processInfo.environment["PALIGEMMA_ISA"].map { $0.lowercased() }
        XCTAssertEqual(best.isa, requested.flatMap { best.isaAvailable.contains($0) ? $0 : nil } ?? best.isaAvailable.last)
        XCTAssertEqual(best.isaAvailable.first, "generic")
        for level in best.isaAvailable {
            for (dir, quantized) in [(model, false), (q8, true), (q4, true)] {
                let report = try bench(dir, level)
                XCTAssertEqual(report.isa, level)
                XCTAssertTrue(report.backend.contains(level), report.backend)
                // The e2e fixture: 224 px in 14 px patches = 16 × 16 image tokens; 7 prompt tokens asked.
                XCTAssertEqual(report.imageTokens, 256)
                XCTAssertEqual(report.promptTokens, 256 + 7)
                XCTAssertEqual(report.decodeTokens, 3)
                XCTAssertGreaterThan(report.imageEncodeSeconds, 0)
                XCTAssertGreaterThan(report.prefillSeconds, 0)
                XCTAssertGreaterThanOrEqual(report.timeToFirstTokenSeconds, report.prefillSeconds)
                XCTAssertGreaterThan(report.decodeTokensPerSecond, 0)
                XCTAssertGreaterThan(report.peakRSSGB, 0)
                XCTAssertGreaterThan(report.measuredReadGBs, 0)
                XCTAssertGreaterThan(report.measuredFMAGFLOPs, 0)
                XCTAssertGreaterThan(report.computeFraction, 0)
                XCTAssertLessThanOrEqual(report.computeFraction, 1.5, "\(level): a ceiling far below the achieved rate means a wrong probe")
                XCTAssertEqual(report.ceiling.contains("int8"), quantized && report.measuredInt8GOPs != nil, "\(level): \(report.ceiling)")
                XCTAssertEqual(report.measuredInt8FourBitGOPs != nil, report.measuredInt8GOPs != nil, level)
                // Only avx2 multiplies 4-bit weights with other instructions than 8-bit ones.
                let ownFourBit = dir == q4 && level == "avx2"
                XCTAssertEqual(report.ceiling.contains("decoder 4-bit int8"), ownFourBit, "\(level): \(report.ceiling)")
                if !ownFourBit && level != "avx2" { XCTAssertEqual(report.measuredInt8FourBitGOPs, report.measuredInt8GOPs, level) }
            }
        }
        let unknown = try run(["bench", "--model", model, "--only", "model", "--isa", "sse9"])
        XCTAssertNotEqual(unknown.status, 0)
        XCTAssertTrue(unknown.stderr.contains("unknown kernel level 'sse9'") && unknown.stderr.contains("generic"), unknown.stderr)
    }

    func testQuantizedCopyRuns() throws {
        let out = tmp.appendingPathComponent("q8").path
        let q = try run(["quantize", model, out, "--format", "q8"])
        XCTAssertEqual(q.status, 0, q.stderr)
        let r = try run(["caption", image, "--model", out, "--max-tokens", "4", "--json"])
        XCTAssertEqual(r.status, 0, r.stderr)
        let info = try run(["info", "--model", out])
        XCTAssertTrue(info.stdout.contains("i8"), info.stdout)
    }

    func testBatchResumesAfterInterruption() throws {
        let second = fixtures.appendingPathComponent("image/inputs/png_rgba.png").path
        let list = tmp.appendingPathComponent("list.jsonl")
        try """
        {"id": "a", "image": "\(image)", "prompt": "caption en", "max_new_tokens": 3}
        {"id": "b", "image": "\(image)", "prompt": "detect cat", "max_new_tokens": 4}
        {"id": "c", "image": "\(second)", "prompt": "ocr", "max_new_tokens": 3}

        """.write(to: list, atomically: true, encoding: .utf8)
        let results = tmp.appendingPathComponent("out.jsonl")
        var r = try run(["generate", "--input", list.path, "--results", results.path, "--model", model])
        XCTAssertEqual(r.status, 0, r.stderr)
        let full = try String(contentsOf: results, encoding: .utf8).split(separator: "\n")
        XCTAssertEqual(full.count, 3)
        // Simulate an interruption: keep the first answer and half of the second.
        try (String(full[0]) + "\n" + String(full[1].prefix(20))).write(to: results, atomically: true, encoding: .utf8)
        r = try run(["generate", "--input", list.path, "--results", results.path, "--model", model])
        XCTAssertEqual(r.status, 0, r.stderr)
        let resumed = try String(contentsOf: results, encoding: .utf8).split(separator: "\n")
        XCTAssertEqual(resumed.count, 3)
        XCTAssertEqual(resumed[0], full[0], "answered lines are kept")
        let ids = try resumed.map { (try JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any])?["id"] as? String }
        XCTAssertEqual(ids, ["a", "b", "c"])
        func tokens(_ lines: [Substring]) throws -> [[Int]] {
            try lines.map { (try JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any])?["token_ids"] as? [Int] ?? [] }
        }
        XCTAssertEqual(try tokens(resumed), try tokens(full), "greedy answers repeat exactly")
    }

    func jsonLines(_ url: URL) throws -> [[String: Any]] {
        try Data(contentsOf: url).split(separator: UInt8(ascii: "\n")).map {
            try XCTUnwrap(try JSONSerialization.jsonObject(with: Data($0)) as? [String: Any])
        }
    }

    /// A results file whose last line was torn inside a multi-byte character keeps every
    /// complete line (whatever bytes they hold) and redoes only the torn one.
    func testTornMultiByteLastLineKeepsEveryCompleteLine() throws {
        let list = tmp.appendingPathComponent("list.jsonl")
        try """
        {"id": "a", "image": "\(image)", "prompt": "caption en", "max_new_tokens": 2}
        {"id": "b", "image": "\(image)", "prompt": "caption de", "max_new_tokens": 2}

        """.write(to: list, atomically: true, encoding: .utf8)
        let results = tmp.appendingPathComponent("out.jsonl")
        // A complete (foreign) line holding invalid UTF-8, an answer for "a", and a torn line
        // for "b" ending in the first byte of "é".
        var bytes = Data([0x7B, 0xFF, 0xFE, 0x7D, 0x0A])
        bytes += Data(#"{"id": "a", "text": "kept as is"}"#.utf8) + Data([0x0A])
        bytes += Data(#"{"id": "b", "text": "caf"#.utf8) + Data([0xC3])
        try bytes.write(to: results)
        let r = try run(["generate", "--input", list.path, "--results", results.path, "--model", model])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertTrue(r.stderr.contains("resuming: 1 of 2"), r.stderr)
        let after = try Data(contentsOf: results)
        XCTAssertTrue(after.starts(with: bytes.prefix(5 + 33)), "complete lines are kept byte for byte")
        let lines = after.split(separator: UInt8(ascii: "\n"))
        XCTAssertEqual(lines.count, 3)
        let last = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(lines[2])) as? [String: Any])
        XCTAssertEqual(last["id"] as? String, "b")
        XCTAssertNotNil(last["token_ids"])
    }

    /// A bad line is answered with an error naming its line, a repeated id is answered once,
    /// and the batch goes on.
    func testBadLinesAndRepeatedIdsDoNotStopTheBatch() throws {
        let list = tmp.appendingPathComponent("list.jsonl")
        var input = Data("{\"id\": \"a\", \"image\": \"\(image)\", \"prompt\": \"ocr\", \"max_new_tokens\": 2}\n".utf8)
        input += Data("{not json\n".utf8)
        input += Data([0x22, 0xFF, 0x22, 0x0A])
        input += Data("{\"id\": \"a\", \"image\": \"\(image)\", \"prompt\": \"caption en\", \"max_new_tokens\": 2}\n".utf8)
        input += Data("{\"id\": \"z\", \"image\": \"\(image)\", \"prompt\": \"caption en\", \"max_new_tokens\": 2}\n".utf8)
        try input.write(to: list)
        let results = tmp.appendingPathComponent("out.jsonl")
        let r = try run(["generate", "--input", list.path, "--results", results.path, "--model", model])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertTrue(r.stderr.contains(":4: id 'a' repeats line 1"), r.stderr)
        let lines = try jsonLines(results)
        XCTAssertEqual(lines.map { $0["id"] as? String }, ["a", "line2", "line3", "z"])
        XCTAssertEqual(lines[0]["prompt"] as? String, "ocr", "the first of two lines with one id is answered")
        XCTAssertTrue((lines[1]["error"] as? String)?.contains(":2: expected") ?? false, "\(lines[1])")
        XCTAssertTrue((lines[2]["error"] as? String)?.contains(":3: the line is not valid UTF-8") ?? false, "\(lines[2])")
        XCTAssertNotNil(lines[3]["token_ids"])
        let same = try run(["generate", "--input", list.path, "--results", list.path, "--model", model])
        XCTAssertEqual(same.status, 64)
        XCTAssertTrue(same.stderr.contains("--results names the --input file"), same.stderr)
    }

    /// Killed with SIGKILL at several points and resumed each time, a batch ends with exactly
    /// the answers of an uninterrupted run, each once.
    func testBatchKilledAndResumedGivesTheUninterruptedAnswers() throws {
        let list = tmp.appendingPathComponent("list.jsonl")
        let prompts = ["caption en", "caption de", "ocr", "detect cat", "answer en what is it?", "caption fr", "caption es", "describe en"]
        try prompts.enumerated().map { i, p in "{\"id\": \"r\(i)\", \"image\": \"\(image)\", \"prompt\": \"\(p)\", \"max_new_tokens\": 6}" }
            .joined(separator: "\n").write(to: list, atomically: true, encoding: .utf8)
        let reference = tmp.appendingPathComponent("reference.jsonl")
        XCTAssertEqual(try run(["generate", "--input", list.path, "--results", reference.path, "--model", model]).status, 0)
        let results = tmp.appendingPathComponent("killed.jsonl")
        var generator = SystemRandomNumberGenerator()
        for _ in 0..<4 {
            let p = Process()
            p.executableURL = binary
            p.arguments = ["generate", "--input", list.path, "--results", results.path, "--model", model]
            p.standardOutput = FileHandle.nullDevice
            p.standardError = FileHandle.nullDevice
            try p.run()
            usleep(UInt32.random(in: 50_000...400_000, using: &generator))
            kill(p.processIdentifier, SIGKILL)
            p.waitUntilExit()
        }
        let finish = try run(["generate", "--input", list.path, "--results", results.path, "--model", model])
        XCTAssertEqual(finish.status, 0, finish.stderr)
        func answers(_ url: URL) throws -> [String: [Int]] {
            var byID: [String: [Int]] = [:]
            for line in try jsonLines(url) {
                let id = try XCTUnwrap(line["id"] as? String)
                XCTAssertNil(byID[id], "\(id) answered twice")
                byID[id] = line["token_ids"] as? [Int]
            }
            return byID
        }
        XCTAssertEqual(try answers(results), try answers(reference))
    }

    /// Two runs on one results file: the second is refused while the first holds it.
    func testSecondWriterOfAResultsFileIsRefused() throws {
        let list = tmp.appendingPathComponent("list.jsonl")
        let count = 400
        try (0..<count).map { "{\"id\": \"r\($0)\", \"image\": \"\(image)\", \"prompt\": \"caption en\", \"max_new_tokens\": 8}" }
            .joined(separator: "\n").write(to: list, atomically: true, encoding: .utf8)
        let results = tmp.appendingPathComponent("shared.jsonl")
        let first = Process()
        first.executableURL = binary
        first.arguments = ["generate", "--input", list.path, "--results", results.path, "--model", model]
        first.standardOutput = FileHandle.nullDevice
        first.standardError = FileHandle.nullDevice
        try first.run()
        // Once its first answer is there the first run holds the file; stopped, it keeps holding
        // it however fast the machine would otherwise finish the list.
        for _ in 0..<2000 where ((try? Data(contentsOf: results))?.isEmpty ?? true) { usleep(5_000) }
        kill(first.processIdentifier, SIGSTOP)
        let answeredBefore = try Data(contentsOf: results).filter { $0 == UInt8(ascii: "\n") }.count
        let second: Run
        do {
            defer { kill(first.processIdentifier, SIGCONT) }
            second = try run(["generate", "--input", list.path, "--results", results.path, "--model", model])
        }
        first.waitUntilExit()
        XCTAssertLessThan(answeredBefore, count, "the first run finished before it was stopped")
        XCTAssertEqual(first.terminationStatus, 0)
        XCTAssertNotEqual(second.status, 0)
        XCTAssertTrue(second.stderr.contains("being written by another paligemma process"), second.stderr)
        XCTAssertEqual(Set(try jsonLines(results).compactMap { $0["id"] as? String }).count, count)
    }

    /// Bounds on what a user can ask for.
    func testBoundsOnThreadsPromptsAndTemperature() throws {
        let absurd = try run(["caption", image, "--model", model, "--threads", "1000000000"])
        XCTAssertEqual(absurd.status, 64)
        XCTAssertTrue(absurd.stderr.contains("--threads must be in 1…4096"), absurd.stderr)
        let many = try run(["caption", image, "--model", model, "--threads", "4096", "--max-tokens", "2"])
        XCTAssertEqual(many.status, 0, many.stderr)
        XCTAssertTrue(many.stderr.contains("more than this machine's"), many.stderr)
        // The e2e fixture's context is the default 8192 tokens: 9000 words cannot fit.
        let long = try run(["generate", image, "--model", model, "--prompt", String(repeating: "cat ", count: 9000)])
        XCTAssertEqual(long.status, 4)
        XCTAssertTrue(long.stderr.contains("context is 8192"), long.stderr)
        // A vanishing temperature is greedy (not NaN sampling).
        let greedy = try run(["caption", image, "--model", model, "--max-tokens", "4", "--json"])
        let tiny = try run(["caption", image, "--model", model, "--max-tokens", "4", "--json", "--temperature", "1e-45"])
        func ids(_ r: Run) -> [Int]? { ((try? JSONSerialization.jsonObject(with: Data(r.stdout.utf8))) as? [String: Any])?["token_ids"] as? [Int] }
        XCTAssertNotNil(ids(greedy))
        XCTAssertEqual(ids(tiny), ids(greedy))
    }

    /// What a careless user types gets a message naming the problem and the documented exit code.
    func testMistakesGetClearMessages() throws {
        let configDirectory = tmp.appendingPathComponent("weird")
        try FileManager.default.createDirectory(at: configDirectory.appendingPathComponent("config.json"), withIntermediateDirectories: true)
        let existing = tmp.appendingPathComponent("existing")
        try Data("x".utf8).write(to: existing)
        let cases: [([String], Int32, String)] = [
            (["caption", image, "--model", configDirectory.path], 3, "is a directory, not the JSON file"),
            (["caption", image, "--model", model + "/config.json"], 4, "is a file; give the checkpoint's directory"),
            (["eval", "--set", tmp.appendingPathComponent("none").path, "--model", model], 4, "no such directory"),
            (["quantize", model, existing.path], 4, "is an existing file"),
            (["caption", image, "--model", model, "--max-tokens", "-5"], 64, "--max-tokens must be in 1…65536"),
            (["caption", image, "--model", model, "--top-p", "-1"], 64, "--top-p must be in (0, 1]"),
            (["serve", "--model", model, "--port", "70000"], 64, "--port must be in 0…65535"),
            (["serve", "--model", model, "--max-body-mb", "17592186044416"], 64, "--max-body-mb must be in 1…1024"),
            (["serve", "--model", model, "--decode-share", "1.5"], 64, "--decode-share must be in 0…1"),
            (["segment", image, "--object", "cat", "--model", model, "--vae-oid", "/nonexistent.npz"], 3, "/nonexistent.npz does not exist"),
            (["caption", tmp.path, "--model", model], 4, "it is a directory, not an image file"),
        ]
        for (args, code, message) in cases {
            let r = try run(args)
            XCTAssertEqual(r.status, code, "\(args): \(r.stderr)")
            XCTAssertTrue(r.stderr.contains(message), "\(args): \(r.stderr)")
            XCTAssertFalse(r.stderr.contains("NSCocoaErrorDomain"), r.stderr)
        }
        // An image can come through a pipe (/dev/stdin).
        let p = Process()
        p.executableURL = binary
        p.arguments = ["caption", "/dev/stdin", "--model", model, "--max-tokens", "2"]
        let input = Pipe(), out = Pipe()
        p.standardInput = input
        p.standardOutput = out
        p.standardError = FileHandle.nullDevice
        try p.run()
        input.fileHandleForWriting.write(try Data(contentsOf: URL(fileURLWithPath: image)))
        try input.fileHandleForWriting.close()
        _ = out.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        XCTAssertEqual(p.terminationStatus, 0)
    }

    /// --together puts several images into one prompt: transformers' answer for the same pair.
    func testSeveralImagesTogetherMatchTransformers() throws {
        struct Multi: Decodable {
            struct Case: Decodable { let images: [String], prompt: String, generated_ids: [Int] }
            let cases: [Case]
        }
        let reference = try JSONDecoder().decode(Multi.self, from: Data(contentsOf: fixtures.appendingPathComponent("model/e2e/reference_multi.json")))
        let c = reference.cases[0]
        let paths = c.images.map { fixtures.appendingPathComponent("image/\($0)").path }
        let r = try run(["generate"] + paths + ["--prompt", c.prompt, "--model", model, "--together", "--json",
                                                "--max-tokens", String(c.generated_ids.count), "--alpha", "white"])
        XCTAssertEqual(r.status, 0, r.stderr)
        let lines = r.stdout.split(separator: "\n")
        XCTAssertEqual(lines.count, 1, "one answer for the images together")
        let object = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(lines[0].utf8)) as? [String: Any])
        XCTAssertEqual(object["token_ids"] as? [Int], c.generated_ids)
        XCTAssertEqual(object["image"] as? String, paths.joined(separator: " + "))
    }

    /// `info` names the family (PaliGemma 1 here) and whether the shapes are a published model's.
    func testInfoNamesTheFamily() throws {
        let r = try run(["info", "--model", fixtures.appendingPathComponent("model/gemma1").path])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertTrue(r.stdout.contains("family          PaliGemma 1, shapes of no published checkpoint"), r.stdout)
        XCTAssertTrue(r.stdout.contains("decoder         Gemma 2 layers"), r.stdout)
    }

    /// Four shards and a merge give the unsharded run's answers; a shard cut short is named by
    /// the merge, and rerunning it completes the job.
    func testShardsAndMergeEqualOneRun() throws {
        let list = tmp.appendingPathComponent("manifest.jsonl")
        let prompts = ["caption en", "caption de", "ocr", "detect cat", "caption fr", "answer en what?"]
        try (0..<12).map { "{\"id\": \"img\($0)\", \"image\": \"\(image)\", \"prompt\": \"\(prompts[$0 % prompts.count])\", \"max_new_tokens\": 3}" }
            .joined(separator: "\n").write(to: list, atomically: true, encoding: .utf8)
        let whole = tmp.appendingPathComponent("whole.jsonl")
        XCTAssertEqual(try run(["generate", "--input", list.path, "--results", whole.path, "--model", model]).status, 0)
        var shardFiles: [String] = []
        var counts: [Int] = []
        for i in 0..<4 {
            let out = tmp.appendingPathComponent("out-\(i).jsonl")
            // Shard 1 takes its index from a Kubernetes Indexed Job's environment.
            let r = i == 1
                ? try run(["generate", "--input", list.path, "--results", out.path, "--model", model],
                          environment: ["JOB_COMPLETION_INDEX": "1", "JOB_COMPLETIONS": "4"])
                : try run(["generate", "--input", list.path, "--results", out.path, "--model", model, "--shard", "\(i)/4"])
            XCTAssertEqual(r.status, 0, r.stderr)
            if i == 1 { XCTAssertTrue(r.stderr.contains("running shard 1/4 (from JOB_COMPLETION_INDEX"), r.stderr) }
            shardFiles.append(out.path)
            counts.append(try jsonLines(out).count)
        }
        XCTAssertEqual(counts.reduce(0, +), 12, "each request in exactly one shard: \(counts)")
        XCTAssertGreaterThan(counts.filter { $0 > 0 }.count, 1, "the hash spreads the ids: \(counts)")
        func tokens(_ url: URL) throws -> [String: [Int]] {
            Dictionary(uniqueKeysWithValues: try jsonLines(url).map { ($0["id"] as! String, $0["token_ids"] as? [Int] ?? []) })
        }
        let merged = tmp.appendingPathComponent("merged.jsonl")
        let m = try run(["results", "merge"] + shardFiles + ["--input", list.path, "--output", merged.path])
        XCTAssertEqual(m.status, 0, m.stderr)
        XCTAssertEqual(try jsonLines(merged).map { $0["id"] as? String }, (0..<12).map { "img\($0)" }, "in the manifest's order")
        XCTAssertEqual(try tokens(merged), try tokens(whole))

        // Cut the largest shard's file in the middle of its last line.
        let big = counts.firstIndex(of: counts.max()!)!
        let file = URL(fileURLWithPath: shardFiles[big])
        let data = try Data(contentsOf: file)
        let lastID = try jsonLines(file).last!["id"] as! String
        try data.prefix(data.count - 25).write(to: file)
        let broken = try run(["results", "merge"] + shardFiles + ["--input", list.path, "--output", merged.path])
        XCTAssertEqual(broken.status, 1)
        XCTAssertTrue(broken.stderr.contains("missing 1: \(lastID)"), broken.stderr)
        XCTAssertEqual(try run(["generate", "--input", list.path, "--results", file.path, "--model", model, "--shard", "\(big)/4"]).status, 0)
        let fixed = try run(["results", "merge"] + shardFiles + ["--input", list.path, "--output", merged.path])
        XCTAssertEqual(fixed.status, 0, fixed.stderr)
        XCTAssertEqual(try tokens(merged), try tokens(whole))
        XCTAssertEqual(try run(["generate", "--input", list.path, "--shard", "4/4", "--model", model]).status, 64)
    }

    func testChatAnswersEachLine() throws {
        let r = try run(["chat", image, "--model", model, "--max-tokens", "3"], stdin: "what is it?\n\ncaption en\nexit\nignored\n")
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertEqual(r.stdout.split(separator: "\n", omittingEmptySubsequences: false).count, 3, r.stdout)
    }
}
