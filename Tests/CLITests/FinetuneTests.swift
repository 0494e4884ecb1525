import Foundation
import XCTest

/// `paligemma finetune`, `--adapter` and `merge`, run as a user runs them, on the demo model.
extension CLITests {
    var demoModel: String { root.appendingPathComponent("Models/demo").path }

    /// Eight Spanish captions of the demo's fixture scenes, one malformed line, one missing image.
    func writeTrainingData() throws -> URL {
        let scenes = fixtures.appendingPathComponent("demo")
        let captions = ["un círculo rojo", "un cuadrado verde", "una estrella azul", "un rombo amarillo",
                        "una cruz negra", "un triángulo naranja", "un círculo morado", "un cuadrado rojo"]
        var lines = captions.enumerated().map { i, c in
            "{\"image\": \"\(scenes.appendingPathComponent(String(format: "scene%03d.png", i)).path)\", \"prefix\": \"caption es\", \"suffix\": \"\(c)\"}"
        }
        lines.insert("{\"image\": 3", at: 2)
        lines.insert("{\"image\": \"missing.png\", \"prefix\": \"caption es\", \"suffix\": \"x\"}", at: 5)
        let url = tmp.appendingPathComponent("train.jsonl")
        try lines.joined(separator: "\n").write(to: url, atomically: true, encoding: .utf8)
        return url
    }

    func stepLosses(_ stdout: String) throws -> [Int: Double] {
        var out: [Int: Double] = [:]
        for line in stdout.split(separator: "\n") {
            let o = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
            if let step = o["step"] as? Int, let loss = o["loss"] as? Double { out[step] = loss }
        }
        return out
    }

    func testFinetuneTrainsAnAdapterEveryCommandApplies() throws {
        let data = try writeTrainingData()
        let out = tmp.appendingPathComponent("adapter")
        let train = try run(["finetune", "--model", demoModel, "--data", data.path, "--out", out.path, "--rank", "4",
                             "--epochs", "3", "--batch", "2", "--lr", "3e-3", "--threads", "1", "--json"])
        XCTAssertEqual(train.status, 0, train.stderr)
        XCTAssertTrue(train.stderr.contains("train.jsonl:3: not a JSON object"), train.stderr)
        XCTAssertTrue(train.stderr.contains("train.jsonl:6: image"), train.stderr)
        let losses = try stepLosses(train.stdout)
        XCTAssertEqual(losses.count, 12, "3 epochs × 4 steps of 2 examples")
        XCTAssertLessThan(losses[12]!, losses[1]! * 0.7, "the loss falls: \(losses.sorted { $0.key < $1.key })")
        for file in ["adapter_config.json", "adapter_model.safetensors"] {
            XCTAssertTrue(FileManager.default.fileExists(atPath: out.appendingPathComponent(file).path), file)
        }
        let config = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(contentsOf: out.appendingPathComponent("adapter_config.json"))) as? [String: Any])
        XCTAssertEqual(config["peft_type"] as? String, "LORA")
        XCTAssertEqual(config["r"] as? Int, 4)

        // The adapter applied unmerged, and folded into a checkpoint, answer alike.
        let scene = fixtures.appendingPathComponent("demo/scene000.png").path
        let adapted = try run(["generate", scene, "--prompt", "caption es", "--model", demoModel, "--adapter", out.path,
                               "--products", "float32", "--json"])
        XCTAssertEqual(adapted.status, 0, adapted.stderr)
        let merged = tmp.appendingPathComponent("merged")
        let merge = try run(["merge", "--model", demoModel, "--adapter", out.path, "--out", merged.path])
        XCTAssertEqual(merge.status, 0, merge.stderr)
        let fromMerged = try run(["generate", scene, "--prompt", "caption es", "--model", merged.path, "--products", "float32", "--json"])
        XCTAssertEqual(fromMerged.status, 0, fromMerged.stderr)
        func ids(_ r: Run) throws -> [Int] {
            try XCTUnwrap((JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any])?["token_ids"] as? [Int])
        }
        let base = try run(["generate", scene, "--prompt", "caption es", "--model", demoModel, "--products", "float32", "--json"])
        XCTAssertEqual(try ids(fromMerged), try ids(adapted))
        XCTAssertNotEqual(try ids(base), try ids(adapted), "the adapter changes the answer")

        // A second run into the same directory is refused unless resuming; a bad adapter is named.
        let again = try run(["finetune", "--model", demoModel, "--data", data.path, "--out", out.path])
        XCTAssertNotEqual(again.status, 0)
        XCTAssertTrue(again.stderr.contains("--resume"), again.stderr)
        let bad = try run(["caption", scene, "--model", demoModel, "--adapter", tmp.path])
        XCTAssertEqual(bad.status, 3, bad.stderr)
        XCTAssertTrue(bad.stderr.contains("adapter_config.json"), bad.stderr)
    }

    /// Killed with SIGKILL mid-run and resumed, training ends with the loss curve and the
    /// adapter of an uninterrupted run.
    func testFinetuneKilledAndResumedFollowsTheSameCurve() throws {
        let data = try writeTrainingData()
        let args = ["finetune", "--model", demoModel, "--data", data.path, "--rank", "4", "--epochs", "4", "--batch", "1",
                    "--lr", "2e-3", "--dropout", "0.1", "--save-every", "1", "--threads", "1", "--json"]
        let whole = tmp.appendingPathComponent("whole")
        let reference = try run(args + ["--out", whole.path])
        XCTAssertEqual(reference.status, 0, reference.stderr)
        let expected = try stepLosses(reference.stdout)
        XCTAssertEqual(expected.count, 32)

        let killed = tmp.appendingPathComponent("killed")
        let p = Process()
        p.executableURL = binary
        p.arguments = args + ["--out", killed.path]
        p.standardOutput = FileHandle.nullDevice
        p.standardError = FileHandle.nullDevice
        try p.run()
        // Wait for a few checkpoints, then kill.
        let deadline = Date().addingTimeInterval(60)
        while Date() < deadline {
            let names = (try? FileManager.default.contentsOfDirectory(atPath: killed.path)) ?? []
            if names.contains(where: { $0.hasPrefix("checkpoint-") && (Int($0.dropFirst(11)) ?? 0) >= 5 }) { break }
            usleep(20_000)
        }
        kill(p.processIdentifier, SIGKILL)
        p.waitUntilExit()
        let resumed = try run(args + ["--out", killed.path, "--resume"])
        XCTAssertEqual(resumed.status, 0, resumed.stderr)
        XCTAssertTrue(resumed.stderr.contains("resuming after step"), resumed.stderr)
        let after = try stepLosses(resumed.stdout)
        XCTAssertFalse(after.isEmpty)
        XCTAssertLessThan(after.keys.min()!, 32)
        for (step, loss) in after { XCTAssertEqual(loss, expected[step]!, accuracy: 1e-6, "step \(step)") }
        let a = try Data(contentsOf: whole.appendingPathComponent("adapter_model.safetensors"))
        let b = try Data(contentsOf: killed.appendingPathComponent("adapter_model.safetensors"))
        XCTAssertEqual(a, b, "the resumed run's adapter equals the uninterrupted run's")
    }

    /// LoRA on the vision tower and trained token rows: written in PEFT's format, applied by
    /// --adapter and by merge alike.
    func testFinetuneWithVisionTowerAndTokenRows() throws {
        let data = try writeTrainingData()
        let out = tmp.appendingPathComponent("vision")
        let train = try run(["finetune", "--model", demoModel, "--data", data.path, "--out", out.path, "--rank", "4",
                             "--batch", "4", "--lr", "5e-3", "--threads", "1", "--train-vision", "--train-tokens", "answers"])
        XCTAssertEqual(train.status, 0, train.stderr)
        let config = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(contentsOf: out.appendingPathComponent("adapter_config.json"))) as? [String: Any])
        XCTAssertTrue((config["target_modules"] as? String ?? "").contains("vision_tower"), "\(config)")
        XCTAssertNotNil((config["trainable_token_indices"] as? [String: Any])?["embed_tokens"])
        let scene = fixtures.appendingPathComponent("demo/scene003.png").path
        let merged = tmp.appendingPathComponent("merged-vision")
        XCTAssertEqual(try run(["merge", "--model", demoModel, "--adapter", out.path, "--out", merged.path]).status, 0)
        func ids(_ args: [String]) throws -> [Int] {
            let r = try run(["generate", scene, "--prompt", "caption es", "--products", "float32", "--json"] + args)
            XCTAssertEqual(r.status, 0, r.stderr)
            return try XCTUnwrap((JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any])?["token_ids"] as? [Int])
        }
        XCTAssertEqual(try ids(["--model", merged.path]), try ids(["--model", demoModel, "--adapter", out.path]))
    }

    /// A q8 base trains (its matrices dequantized for the input gradients); merging into it is refused.
    func testFinetuneOnAQuantizedBase() throws {
        let q8 = tmp.appendingPathComponent("demo-q8")
        XCTAssertEqual(try run(["quantize", demoModel, q8.path, "--format", "q8"]).status, 0)
        let data = try writeTrainingData()
        let out = tmp.appendingPathComponent("q8-adapter")
        let train = try run(["finetune", "--model", q8.path, "--data", data.path, "--out", out.path, "--rank", "4",
                             "--batch", "4", "--lr", "3e-3", "--json"])
        XCTAssertEqual(train.status, 0, train.stderr)
        XCTAssertEqual(try stepLosses(train.stdout).count, 2)
        let scene = fixtures.appendingPathComponent("demo/scene001.png").path
        let answer = try run(["caption", scene, "--lang", "es", "--model", q8.path, "--adapter", out.path])
        XCTAssertEqual(answer.status, 0, answer.stderr)
        let merge = try run(["merge", "--model", q8.path, "--adapter", out.path, "--out", tmp.appendingPathComponent("m").path])
        XCTAssertEqual(merge.status, 3, merge.stderr)
        XCTAssertTrue(merge.stderr.contains("quantized"), merge.stderr)
    }

    func testFinetuneWithoutUsableExamplesSaysWhy() throws {
        let data = tmp.appendingPathComponent("bad.jsonl")
        try "not json\n{\"image\": \"nope.png\", \"prefix\": \"caption es\", \"suffix\": \"x\"}\n".write(to: data, atomically: true, encoding: .utf8)
        let r = try run(["finetune", "--model", demoModel, "--data", data.path, "--out", tmp.appendingPathComponent("o").path])
        XCTAssertEqual(r.status, 4, r.stderr)
        XCTAssertTrue(r.stderr.contains("no usable training example"), r.stderr)
        let bad = try run(["finetune", "--model", demoModel, "--data", data.path, "--out", tmp.path, "--targets", "q,x"])
        XCTAssertNotEqual(bad.status, 0)
        XCTAssertTrue(bad.stderr.contains("unknown LoRA target"), bad.stderr)
    }
}
