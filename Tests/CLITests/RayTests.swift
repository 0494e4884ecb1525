import Foundation
import XCTest

/// tools/ray/ on a real local Ray instance with the real engine and the demo model. Needs
/// $PALIGEMMA_TEST_RAY_PYTHON naming a Python with ray[data] and pyarrow (.ci/run makes one).
final class RayTests: XCTestCase {
    let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent()
    var tmp: URL!

    override func setUpWithError() throws {
        tmp = FileManager.default.temporaryDirectory.appendingPathComponent("ray-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: tmp, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws { try? FileManager.default.removeItem(at: tmp) }

    var binary: URL {
        var dir = Bundle(for: RayTests.self).bundleURL
        while dir.pathExtension == "xctest" || dir.lastPathComponent == "Contents" { dir.deleteLastPathComponent() }
        return dir.appendingPathComponent("paligemma")
    }

    static var python: String? {
        guard let python = ProcessInfo.processInfo.environment["PALIGEMMA_TEST_RAY_PYTHON"], !python.isEmpty else { return nil }
        return python
    }

    struct Run { let status: Int32; let stdout: String; let stderr: String }

    /// Runs a program to its end, or kills it after `timeout` seconds and fails: a test that
    /// hangs would hold CI for its whole budget.
    func run(_ program: String, _ args: [String], in directory: URL? = nil, timeout: TimeInterval) throws -> Run {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: program)
        p.arguments = args
        if let directory { p.currentDirectoryURL = directory }
        var env = ProcessInfo.processInfo.environment
        env.removeValue(forKey: "PALIGEMMA_MODEL")
        env.removeValue(forKey: "RAY_ADDRESS")  // a local instance, never a cluster the machine happens to know
        p.environment = env
        let outFile = tmp.appendingPathComponent("\(UUID().uuidString).out"), errFile = tmp.appendingPathComponent("\(UUID().uuidString).err")
        FileManager.default.createFile(atPath: outFile.path, contents: nil)
        FileManager.default.createFile(atPath: errFile.path, contents: nil)
        p.standardOutput = try FileHandle(forWritingTo: outFile)
        p.standardError = try FileHandle(forWritingTo: errFile)
        p.standardInput = FileHandle.nullDevice
        try p.run()
        let deadline = Date().addingTimeInterval(timeout)
        while p.isRunning && Date() < deadline { usleep(100_000) }
        let timedOut = p.isRunning
        if timedOut { kill(p.processIdentifier, SIGKILL) }
        p.waitUntilExit()
        let run = Run(status: p.terminationStatus, stdout: try String(contentsOf: outFile, encoding: .utf8),
                      stderr: try String(contentsOf: errFile, encoding: .utf8))
        if timedOut { XCTFail("\(program) \(args.joined(separator: " ")) ran past \(Int(timeout)) s and was killed; stderr:\n\(run.stderr.suffix(4000))") }
        return run
    }

    /// Answers by id, each id once, `timings` left out (they are the only fields that differ
    /// from run to run, and the server adds two).
    func answers(_ url: URL) throws -> [String: NSDictionary] {
        var byID: [String: NSDictionary] = [:]
        for line in try String(contentsOf: url, encoding: .utf8).split(separator: "\n") {
            var object = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
            let id = try XCTUnwrap(object["id"] as? String, "a line without an id: \(line)")
            XCTAssertNil(byID[id], "\(id) answered twice in \(url.lastPathComponent)")
            XCTAssertNil(object["error"], "\(id): \(object["error"] ?? "")")
            object.removeValue(forKey: "timings")
            byID[id] = object as NSDictionary
        }
        return byID
    }

    /// Two actors on a two-CPU local Ray instance answer 40 demo scenes; one actor's `paligemma`
    /// is SIGKILLed while it holds unanswered requests. The output still has exactly one answer
    /// per id, each the same as a single `paligemma generate --input` run's.
    func testKilledEngineIsRetriedAndEveryIdAnsweredOnceAsByOneBatchRun() throws {
        guard let python = Self.python else {
            throw XCTSkip("set PALIGEMMA_TEST_RAY_PYTHON to a Python with ray[data] and pyarrow (.ci/run does)")
        }
        #if !os(Linux)
        throw XCTSkip("tools/ray/kill_test.py finds the engine processes through /proc (Linux)")
        #endif
        XCTAssertTrue(FileManager.default.isExecutableFile(atPath: binary.path), "build the paligemma product first: \(binary.path)")
        let scenes = root.appendingPathComponent("Tests/Fixtures/demo")
        let model = root.appendingPathComponent("Models/demo").path
        let prompts = ["caption en", "caption fr", "ocr", "detect circle ; square", "answer en how many shapes are there?"]
        let manifest = tmp.appendingPathComponent("manifest.jsonl")
        try (0..<40).map { i in
            String(format: "{\"id\": \"s%03d\", \"image\": \"scene%03d.png\", \"prompt\": \"%@\"}", i, i, prompts[i % prompts.count])
        }.joined(separator: "\n").write(to: manifest, atomically: true, encoding: .utf8)

        let reference = tmp.appendingPathComponent("reference.jsonl")
        let batch = try run(binary.path, ["generate", "--input", manifest.path, "--results", reference.path, "--model", model, "--threads", "1"],
                            in: scenes, timeout: 120)
        XCTAssertEqual(batch.status, 0, batch.stderr)

        let output = tmp.appendingPathComponent("ray.jsonl")
        let driver = root.appendingPathComponent("tools/ray/kill_test.py").path
        let ray = try run(python, [driver, "--paligemma", binary.path, "--model", model, "--input", manifest.path,
                                   "--images", scenes.path, "--slow", "scene013.png", "--output", output.path,
                                   "--work", tmp.appendingPathComponent("work").path, "--timeout", "240"], timeout: 300)
        XCTAssertEqual(ray.status, 0, "kill_test.py failed:\n\(ray.stderr.suffix(6000))")
        let report = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(ray.stdout.utf8)) as? [String: Any], ray.stdout)
        XCTAssertEqual(report["status"] as? Int, 0, "paligemma_ray.py's exit status; its log is in the kill_test output")
        XCTAssertNotNil(report["killed_pid"] as? Int, "an engine was killed")
        let before = try XCTUnwrap(report["answers_before_kill"] as? Int)
        XCTAssertTrue((4..<40).contains(before), "the kill came mid-run: \(before) answers written before it")
        XCTAssertEqual(report["restart_logged"] as? Bool, true, "the actor saw its engine gone and exited for Ray to restart it")

        let expected = try answers(reference)
        let got = try answers(output)
        XCTAssertEqual(expected.count, 40)
        XCTAssertEqual(Set(got.keys), Set(expected.keys), "one answer per id")
        for (id, answer) in expected {
            XCTAssertEqual(got[id], answer, "\(id): the Ray run's answer differs from the batch run's")
        }
    }

    /// Every Kubernetes manifest in docs/scale-out.md passes tools/validate_k8s_yaml.py (the
    /// Kubernetes schema, strict; the RayJob's own fields structurally).
    func testScaleOutYAMLValidates() throws {
        guard let python = Self.python else {
            throw XCTSkip("set PALIGEMMA_TEST_RAY_PYTHON to a Python with kubernetes-validate (.ci/run does)")
        }
        let validate = try run(python, [root.appendingPathComponent("tools/validate_k8s_yaml.py").path,
                                        root.appendingPathComponent("docs/scale-out.md").path], timeout: 120)
        if validate.status == 2 { throw XCTSkip("kubernetes-validate is not installed in \(python)") }
        XCTAssertEqual(validate.status, 0, validate.stdout + validate.stderr)
        XCTAssertTrue(validate.stdout.contains("Job paligemma-captions "), validate.stdout)
        XCTAssertTrue(validate.stdout.contains("RayJob paligemma-captions-ray "), validate.stdout)
    }
}
