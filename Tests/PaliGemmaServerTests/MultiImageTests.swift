import Foundation
import PaliGemma
@testable import PaliGemmaServer
import XCTest

extension ServerTests {
    /// Several images in one request, in every request shape (JSON `images`, repeated form parts,
    /// OpenAI image_url parts of one message): the ids transformers' processor + generate gave for
    /// the same files and prompt (tools/reference/fixtures_model.py, reference_multi.json).
    func testSeveralImagesInOneRequestMatchTransformers() async throws {
        struct Multi: Decodable {
            struct Case: Decodable { let images: [String], prompt: String, generated_ids: [Int] }
            let cases: [Case]
        }
        let reference = try JSONDecoder().decode(Multi.self, from: Data(contentsOf:
            Self.modelDirectory.appendingPathComponent("reference_multi.json")))
        try await withServer { port, _ in
            for c in reference.cases {
                let files = try c.images.map { try imageData($0) }
                let n = c.generated_ids.count

                let json = try await HTTPClient.postJSON(port: port, ["images": files.map { $0.base64EncodedString() },
                                                                       "prompt": c.prompt, "max_new_tokens": n, "temperature": 0])
                XCTAssertEqual(json.status, 200, json.text)
                XCTAssertEqual(json.json["token_ids"] as? [Int], c.generated_ids, "JSON, \(c.images.count) images")

                let boundary = "----several-images"
                var body = Data()
                for (name, value) in [("prompt", c.prompt), ("max_new_tokens", String(n)), ("temperature", "0")] {
                    body += Data("--\(boundary)\r\nContent-Disposition: form-data; name=\"\(name)\"\r\n\r\n\(value)\r\n".utf8)
                }
                for (i, file) in files.enumerated() {
                    body += Data("--\(boundary)\r\nContent-Disposition: form-data; name=\"image\"; filename=\"\(i).img\"\r\n\r\n".utf8)
                    body += file + Data("\r\n".utf8)
                }
                body += Data("--\(boundary)--\r\n".utf8)
                let form = try await HTTPClient.request(port: port, method: "POST", path: "/v1/generate",
                                                        headers: ["Content-Type": "multipart/form-data; boundary=\(boundary)"], body: body)
                XCTAssertEqual(form.status, 200, form.text)
                XCTAssertEqual(form.json["token_ids"] as? [Int], c.generated_ids, "form, \(c.images.count) images")

                // An earlier message's image is not part of the prompt: the last message with images gives them.
                let parts: [[String: Any]] = [["type": "text", "text": c.prompt]]
                    + files.map { ["type": "image_url", "image_url": ["url": "data:image/png;base64," + $0.base64EncodedString()]] }
                let earlier: [String: Any] = ["role": "user", "content": [["type": "image_url", "image_url": ["url": "data:image/png;base64," + files[0].base64EncodedString()]],
                                                                          ["type": "text", "text": "caption en"]]]
                let chat = try await HTTPClient.postJSON(port: port, path: "/v1/chat/completions", [
                    "model": "paligemma", "messages": [earlier, ["role": "user", "content": parts]], "max_tokens": n, "temperature": 0,
                ])
                XCTAssertEqual(chat.status, 200, chat.text)
                XCTAssertEqual((chat.json["paligemma"] as? [String: Any])?["token_ids"] as? [Int], c.generated_ids, "chat, \(c.images.count) images")
            }

            let one = try imageData(reference.cases[0].images[0]).base64EncodedString()
            let tooMany = try await HTTPClient.postJSON(port: port, ["images": Array(repeating: one, count: GenerateRequest.maxImages + 1), "prompt": "caption en"])
            XCTAssertEqual(tooMany.status, 400, tooMany.text)
            XCTAssertEqual(tooMany.errorCode, "too_many_images")
            let both = try await HTTPClient.postJSON(port: port, ["image": one, "images": [one], "prompt": "caption en"])
            XCTAssertEqual(both.status, 400, both.text)
            let none = try await HTTPClient.postJSON(port: port, ["images": [String](), "prompt": "caption en"])
            XCTAssertEqual(none.errorCode, "missing_image", none.text)
        }
    }
}

extension ServerTests {
    /// A stream that must wait for a slot hears its place in the queue (`event: queued`), then
    /// gets its tokens once the slot is free.
    func testAStreamWaitingForASlotHearsItsPlace() async throws {
        var config = ServerConfiguration()
        config.maxSequences = 1
        try await withServer(config) { port, service in
            try await service.gate.acquire()   // every slot taken
            let c = Self.reference.cases[0]
            let body = try JSONSerialization.data(withJSONObject: try generateBody(c))
            let waiting = Task {
                try await HTTPClient.request(port: port, method: "POST", path: "/v1/generate?stream=true",
                                             headers: ["Content-Type": "application/json"], body: body)
            }
            let deadline = Date().addingTimeInterval(10)
            while await service.gate.waiting < 1, Date() < deadline { try await Task.sleep(nanoseconds: 5_000_000) }
            await service.gate.release()
            let reply = try await waiting.value
            XCTAssertEqual(reply.events.first?.event, "queued", reply.text)
            XCTAssertEqual(reply.events.first?.data, "{\"position\":0}")
            XCTAssertEqual(reply.events.last?.event, "done", reply.text)
            let done = (try? JSONSerialization.jsonObject(with: Data((reply.events.last?.data ?? "").utf8))) as? [String: Any]
            XCTAssertEqual(done?["token_ids"] as? [Int], c.generated_ids)
        }
    }

    /// Requests sent together run together (sharing decode steps) and each answers as alone.
    func testConcurrentRequestsShareDecodeStepsAndAnswerAsAlone() async throws {
        try await withServer { port, service in
            let cases = Self.reference.cases
            let bodies = try cases.map { try JSONSerialization.data(withJSONObject: try generateBody($0)) }
            let replies = try await withThrowingTaskGroup(of: (Int, HTTPReply).self) { group in
                for (i, body) in bodies.enumerated() {
                    group.addTask {
                        (i, try await HTTPClient.request(port: port, method: "POST", path: "/v1/generate",
                                                         headers: ["Content-Type": "application/json"], body: body))
                    }
                }
                var out: [Int: HTTPReply] = [:]
                for try await (i, r) in group { out[i] = r }
                return out
            }
            for (i, c) in cases.enumerated() {
                XCTAssertEqual(replies[i]?.json["token_ids"] as? [Int], c.generated_ids, "request \(i)")
            }
            XCTAssertNotNil(service.pipeline.model.batchedDecoding, "--max-sequences 4 turns batched decoding on")
        }
    }
}

extension ServerTests {
    /// The KV budget: generations start only while their reservations fit together (in arrival
    /// order, even with free slots), a finished one lets the next in, and a request larger than
    /// the whole budget is refused with a 400 naming --max-kv-mb.
    func testKVBudgetBoundsWhatRunsTogether() async throws {
        let gate = InferenceGate(maxWaiting: 4, slots: 4, kvBudget: 100)
        try await gate.acquire(cost: 60)
        let second = Task { try await gate.acquire(cost: 60) }
        while await gate.waiting < 1 { await Task.yield() }
        let third = Task { try await gate.acquire(cost: 10) }   // would fit, but waits its turn
        while await gate.waiting < 2 { await Task.yield() }
        var (active, reserved) = (await gate.active, await gate.reserved)
        XCTAssertEqual(active, 1)
        XCTAssertEqual(reserved, 60)
        await gate.release(cost: 60)
        try await second.value
        try await third.value
        (active, reserved) = (await gate.active, await gate.reserved)
        XCTAssertEqual(active, 2)
        XCTAssertEqual(reserved, 70)

        var config = ServerConfiguration()
        config.maxKVMegabytes = 0
        try await withServer(config) { port, _ in
            let reply = try await HTTPClient.postJSON(port: port, try generateBody(Self.reference.cases[0]))
            XCTAssertEqual(reply.status, 400, reply.text)
            XCTAssertTrue(reply.text.contains("--max-kv-mb"), reply.text)
        }
    }
}
