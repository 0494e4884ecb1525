import Foundation
import Hummingbird
import Imaging
import Logging
import PaliGemma
@testable import PaliGemmaServer
import ServiceLifecycle
import XCTest

func fixtures(_ part: String) -> URL {
    URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Fixtures").appendingPathComponent(part)
}

/// Starts the real server on 127.0.0.1 with a free port, with the tiny e2e checkpoint, and talks
/// to it over loopback sockets.
final class ServerTests: XCTestCase {
    struct Case: Decodable { let image: String, prompt: String, text: String, generated_ids: [Int] }
    struct Reference: Decodable { let cases: [Case] }

    static let modelDirectory = fixtures("model").appendingPathComponent("e2e")
    /// The reference was made by giving transformers' processor the PIL image as opened, which
    /// composites transparent images on white; the server is given the same handling here.
    static let pipeline: PaliGemmaPipeline = try! PaliGemmaPipeline(directory: modelDirectory,
                                                                     imageLoader: ImageLoader(alpha: .compositeOnWhite))
    static let reference: Reference = try! JSONDecoder().decode(
        Reference.self, from: Data(contentsOf: modelDirectory.appendingPathComponent("reference.json")))

    func imageData(_ name: String) throws -> Data { try Data(contentsOf: fixtures("image").appendingPathComponent(name)) }

    /// Runs `body` against a live server, then stops it.
    func withServer(_ configuration: ServerConfiguration = ServerConfiguration(), segmenter: Segmenter? = nil,
                    _ body: (Int, PaliGemmaService) async throws -> Void) async throws {
        var config = configuration
        config.host = "127.0.0.1"
        config.port = 0
        let service = PaliGemmaService(pipeline: Self.pipeline, segmenter: segmenter, configuration: config)
        try await runTestServer(service) { port in try await body(port, service) }
    }

    func generateBody(_ c: Case) throws -> [String: Any] {
        ["image": try imageData(c.image).base64EncodedString(), "prompt": c.prompt,
         "max_new_tokens": c.generated_ids.count, "temperature": 0, "top_k": 0, "top_p": 1, "seed": 0]
    }

    // MARK: -

    func testHealthAndPage() async throws {
        try await withServer { port, _ in
            let health = try await HTTPClient.request(port: port, method: "GET", path: "/health")
            XCTAssertEqual(health.status, 200)
            XCTAssertTrue(health.headers["content-type"]?.hasPrefix("application/json") ?? false)
            XCTAssertEqual(health.json["status"] as? String, "ok")
            XCTAssertEqual(health.json["model"] as? String, "e2e")
            XCTAssertEqual(health.json["image_size"] as? Int, Self.pipeline.model.imageSize)
            XCTAssertEqual(health.json["image_tokens"] as? Int, 256)

            let page = try await HTTPClient.request(port: port, method: "GET", path: "/")
            XCTAssertEqual(page.status, 200)
            XCTAssertTrue(page.headers["content-type"]?.hasPrefix("text/html") ?? false)
            for needle in ["<form", "type=\"file\"", "id=\"task\"", "value=\"caption\"", "value=\"describe\"", "value=\"answer\"",
                           "value=\"detect\"", "value=\"segment\"", "value=\"ocr\"", "value=\"free\"", "id=\"lang\"",
                           "id=\"max-tokens\"", "id=\"temperature\"", "<canvas", "<label for=\"file\"",
                           "/v1/generate?stream=true", "aria-live"] {
                XCTAssertTrue(page.text.contains(needle), "the page lacks \(needle)")
            }
            // Self-contained: no external scripts, styles or images.
            XCTAssertFalse(page.text.contains("src=\"http"))
            XCTAssertFalse(page.text.contains("href=\"http"))

            let missing = try await HTTPClient.request(port: port, method: "GET", path: "/nope")
            XCTAssertEqual(missing.status, 404)
            XCTAssertEqual(missing.errorCode, "not_found")
        }
    }

    func testGenerateGivesTheReferenceTextAndTokens() async throws {
        try await withServer { port, _ in
            for c in Self.reference.cases {
                let reply = try await HTTPClient.postJSON(port: port, try generateBody(c))
                XCTAssertEqual(reply.status, 200, reply.text)
                XCTAssertEqual(reply.json["text"] as? String, c.text, c.prompt)
                XCTAssertEqual(reply.json["token_ids"] as? [Int], c.generated_ids, c.prompt)
                XCTAssertEqual((reply.json["token_logprobs"] as? [Any])?.count, c.generated_ids.count)
                XCTAssertEqual(reply.json["finish_reason"] as? String, "length")
                XCTAssertEqual(reply.json["prompt"] as? String, c.prompt)
                let image = try Self.pipeline.imageLoader.decode(try imageData(c.image), name: c.image)
                XCTAssertEqual(reply.json["width"] as? Int, image.width)
                XCTAssertEqual(reply.json["height"] as? Int, image.height)
                let timings = try XCTUnwrap(reply.json["timings"] as? [String: Any])
                XCTAssertEqual(timings["generated_tokens"] as? Int, c.generated_ids.count)
                for key in ["image_seconds", "prefill_seconds", "decode_seconds", "queue_seconds", "total_seconds"] {
                    XCTAssertNotNil(timings[key] as? Double, key)
                }
                if c.prompt.hasPrefix("detect") {
                    XCTAssertNotNil(reply.json["objects"] as? [Any], "detect answers carry objects")
                } else {
                    XCTAssertNil(reply.json["objects"] as? [Any], "only detect/segment answers carry objects")
                }
            }
        }
    }

    func testDetectAndSegmentCarryObjectsAndMasks() async throws {
        let segmenter = try Segmenter(vaeFile: fixtures("segmentation").appendingPathComponent("vae_d16.npz"))
        try await withServer(segmenter: segmenter) { port, _ in
            let png = try imageData("inputs/png_rgb.png").base64EncodedString()
            let detect = try await HTTPClient.postJSON(port: port, ["image": png, "prompt": "detect cat ; dog", "max_new_tokens": 8])
            XCTAssertEqual(detect.status, 200, detect.text)
            let objects = try XCTUnwrap(detect.json["objects"] as? [[String: Any]])
            XCTAssertEqual(objects.count, LocationParser.parse(detect.json["text"] as? String ?? "", imageWidth: 300, imageHeight: 200).count)
            XCTAssertNil(detect.json["masks"] as? [Any])
            let segment = try await HTTPClient.postJSON(port: port, ["image": png, "prompt": "segment cat", "max_new_tokens": 8])
            XCTAssertEqual(segment.status, 200, segment.text)
            XCTAssertNotNil(segment.json["objects"] as? [Any])
            XCTAssertNotNil(segment.json["masks"] as? [Any], "segment answers carry masks when a decoder is loaded")
        }
    }

    func testStreamingTokensAddUpToTheFinalText() async throws {
        try await withServer { port, _ in
            for (path, c) in [("/v1/generate?stream=true", Self.reference.cases[0]), ("/v1/stream", Self.reference.cases[2])] {
                let reply = try await HTTPClient.postJSON(port: port, path: path, try generateBody(c))
                XCTAssertEqual(reply.status, 200, reply.text)
                XCTAssertTrue(reply.headers["content-type"]?.hasPrefix("text/event-stream") ?? false)
                let events = reply.events
                let tokens = events.filter { $0.event == "token" }.map {
                    (try? JSONSerialization.jsonObject(with: Data($0.data.utf8))) as? [String: Any] ?? [:]
                }
                XCTAssertFalse(tokens.isEmpty)
                XCTAssertTrue(tokens.allSatisfy { $0.keys.contains("id") && $0["text"] is String }, "each token event has id and text")
                XCTAssertEqual(events.last?.event, "done")
                XCTAssertEqual(events.filter { $0.event == "done" }.count, 1)
                let done = try XCTUnwrap((try? JSONSerialization.jsonObject(with: Data(events.last!.data.utf8))) as? [String: Any])
                let streamed = tokens.map { $0["text"] as? String ?? "" }.joined()
                XCTAssertEqual(streamed, done["text"] as? String, path)
                XCTAssertEqual(done["text"] as? String, c.text, path)
                XCTAssertEqual(done["token_ids"] as? [Int], c.generated_ids, path)
                let ids = tokens.compactMap { $0["id"] as? Int }
                XCTAssertEqual(ids, Array(c.generated_ids.prefix(ids.count)), "token events carry the ids in order")
            }
        }
    }

    func testMultipartForm() async throws {
        try await withServer { port, _ in
            let c = Self.reference.cases[0]
            let boundary = "----paligemma-test-boundary"
            var body = Data()
            func field(_ name: String, _ value: String) {
                body += Data("--\(boundary)\r\nContent-Disposition: form-data; name=\"\(name)\"\r\n\r\n\(value)\r\n".utf8)
            }
            field("prompt", c.prompt)
            field("max_new_tokens", String(c.generated_ids.count))
            body += Data("--\(boundary)\r\nContent-Disposition: form-data; name=\"image\"; filename=\"a.jpg\"\r\nContent-Type: image/jpeg\r\n\r\n".utf8)
            body += try imageData(c.image) + Data("\r\n".utf8)
            field("temperature", "0")
            body += Data("--\(boundary)--\r\n".utf8)
            let reply = try await HTTPClient.request(port: port, method: "POST", path: "/v1/generate",
                                                     headers: ["Content-Type": "multipart/form-data; boundary=\(boundary)"], body: body)
            XCTAssertEqual(reply.status, 200, reply.text)
            XCTAssertEqual(reply.json["text"] as? String, c.text)
            XCTAssertEqual(reply.json["token_ids"] as? [Int], c.generated_ids)
        }
    }

    func testBadInputGetsAStatusAndAJSONError() async throws {
        try await withServer(ServerConfiguration(maxBodyBytes: 1 << 20, maxNewTokensLimit: 256)) { port, _ in
            let jpeg = try imageData("inputs/jpeg_baseline.jpg").base64EncodedString()
            func b64(_ name: String) throws -> String { try imageData(name).base64EncodedString() }
            let json = ["Content-Type": "application/json"]
            let cases: [(String, Data, [String: String], Int, String)] = [
                ("malformed JSON", Data("{\"image\": ".utf8), json, 400, "invalid_json"),
                ("not an object", Data("[1, 2]".utf8), json, 400, "invalid_json"),
                ("empty body", Data(), json, 400, "invalid_json"),
                ("missing image", try JSONSerialization.data(withJSONObject: ["prompt": "caption en"]), json, 400, "missing_field"),
                ("missing prompt", try JSONSerialization.data(withJSONObject: ["image": jpeg]), json, 400, "missing_field"),
                ("image not a string", try JSONSerialization.data(withJSONObject: ["image": 5, "prompt": "x"]), json, 400, "invalid_json"),
                ("negative seed", Data("{\"image\": \"\(jpeg)\", \"prompt\": \"x\", \"seed\": -1}".utf8), json, 400, "invalid_option"),
                ("fractional max_new_tokens", Data("{\"image\": \"\(jpeg)\", \"prompt\": \"x\", \"max_new_tokens\": 1.5}".utf8), json, 400, "invalid_option"),
                ("temperature as a string", Data("{\"image\": \"\(jpeg)\", \"prompt\": \"x\", \"temperature\": \"hot\"}".utf8), json, 400, "invalid_option"),
                ("image tokens in the prompt", try JSONSerialization.data(withJSONObject: ["image": jpeg, "prompt": "caption <image> en"]), json, 400, "invalid_prompt"),
                ("invalid base64", try JSONSerialization.data(withJSONObject: ["image": "@@not base64!!", "prompt": "x"]), json, 400, "invalid_base64"),
                ("empty image", try JSONSerialization.data(withJSONObject: ["image": "", "prompt": "x"]), json, 400, "missing_image"),
                ("empty prompt", try JSONSerialization.data(withJSONObject: ["image": jpeg, "prompt": "  "]), json, 400, "invalid_prompt"),
                ("max_new_tokens 0", try JSONSerialization.data(withJSONObject: ["image": jpeg, "prompt": "caption en", "max_new_tokens": 0]), json, 400, "invalid_option"),
                ("max_new_tokens over the server's limit", try JSONSerialization.data(withJSONObject: ["image": jpeg, "prompt": "caption en", "max_new_tokens": 100_000]), json, 400, "invalid_option"),
                ("top_p 0", try JSONSerialization.data(withJSONObject: ["image": jpeg, "prompt": "caption en", "top_p": 0]), json, 400, "invalid_option"),
                ("negative temperature", try JSONSerialization.data(withJSONObject: ["image": jpeg, "prompt": "caption en", "temperature": -1]), json, 400, "invalid_option"),
                ("text, not an image", try JSONSerialization.data(withJSONObject: ["image": Data("hello world".utf8).base64EncodedString(), "prompt": "x"]), json, 415, "unsupported_image"),
                ("GIF", try JSONSerialization.data(withJSONObject: ["image": try b64("bad/image.gif"), "prompt": "x"]), json, 415, "unsupported_image"),
                ("garbage with a JPEG name", try JSONSerialization.data(withJSONObject: ["image": try b64("bad/garbage.jpg"), "prompt": "x"]), json, 415, "unsupported_image"),
                ("truncated PNG", try JSONSerialization.data(withJSONObject: ["image": try b64("bad/truncated.png"), "prompt": "x"]), json, 422, "undecodable_image"),
                ("truncated JPEG", try JSONSerialization.data(withJSONObject: ["image": try b64("bad/truncated.jpg"), "prompt": "x"]), json, 422, "undecodable_image"),
                ("bad CRC", try JSONSerialization.data(withJSONObject: ["image": try b64("bad/bad_crc.png"), "prompt": "x"]), json, 422, "undecodable_image"),
                ("zero size", try JSONSerialization.data(withJSONObject: ["image": try b64("bad/zero_size.png"), "prompt": "x"]), json, 422, "undecodable_image"),
                ("decompression bomb", try JSONSerialization.data(withJSONObject: ["image": try b64("bad/bomb.png"), "prompt": "x"]), json, 413, "image_too_large"),
                ("body over the limit", try JSONSerialization.data(withJSONObject: ["image": String(repeating: "A", count: 1_500_000), "prompt": "x"]), json, 413, "body_too_large"),
                ("unsupported content type", Data("<xml/>".utf8), ["Content-Type": "application/xml"], 415, "unsupported_media_type"),
                ("multipart without an image", Data("--b\r\nContent-Disposition: form-data; name=\"prompt\"\r\n\r\nocr\r\n--b--\r\n".utf8),
                 ["Content-Type": "multipart/form-data; boundary=b"], 400, "missing_field"),
                ("malformed multipart", Data("nothing here".utf8), ["Content-Type": "multipart/form-data; boundary=b"], 400, "invalid_multipart"),
            ]
            for (name, body, headers, status, code) in cases {
                for path in ["/v1/generate", "/v1/generate?stream=true"] {
                    let reply = try await HTTPClient.request(port: port, method: "POST", path: path, headers: headers, body: body)
                    XCTAssertEqual(reply.status, status, "\(name) \(path): \(reply.text)")
                    XCTAssertEqual(reply.errorCode, code, "\(name) \(path): \(reply.text)")
                    XCTAssertFalse((reply.errorMessage ?? "").isEmpty, "\(name): the error says why")
                    if name == "negative seed" { XCTAssertTrue(reply.errorMessage?.contains("seed") ?? false, reply.text) }
                    XCTAssertTrue(reply.headers["content-type"]?.hasPrefix("application/json") ?? false, name)
                }
            }
            // Still serving.
            let ok = try await HTTPClient.postJSON(port: port, ["image": jpeg, "prompt": "caption en", "max_new_tokens": 2])
            XCTAssertEqual(ok.status, 200, ok.text)
        }
    }

    func testConcurrentRequestsAreSerialisedAndAllSucceed() async throws {
        try await withServer { port, service in
            let cases = Self.reference.cases
            // Encoded here: the child tasks take Sendable bytes, not [String: Any].
            let bodies = try (0..<6).map { try JSONSerialization.data(withJSONObject: generateBody(cases[$0 % cases.count])) }
            let replies = try await withThrowingTaskGroup(of: (Int, HTTPReply).self) { group in
                for (i, body) in bodies.enumerated() {
                    group.addTask {
                        (i, try await HTTPClient.request(port: port, method: "POST", path: i % 2 == 0 ? "/v1/generate" : "/v1/stream",
                                                         headers: ["Content-Type": "application/json"], body: body))
                    }
                }
                var out: [Int: HTTPReply] = [:]
                for try await (i, r) in group { out[i] = r }
                return out
            }
            for i in 0..<bodies.count {
                let reply = try XCTUnwrap(replies[i])
                let c = cases[i % cases.count]
                XCTAssertEqual(reply.status, 200, reply.text)
                let result = i % 2 == 0 ? reply.json
                    : ((try? JSONSerialization.jsonObject(with: Data((reply.events.last?.data ?? "").utf8))) as? [String: Any] ?? [:])
                XCTAssertEqual(result["token_ids"] as? [Int], c.generated_ids, "request \(i)")
                XCTAssertEqual(result["text"] as? String, c.text, "request \(i)")
            }
            XCTAssertLessThanOrEqual(service.gate.activity.maxConcurrent, service.configuration.maxSequences, "at most --max-sequences at once")
            XCTAssertGreaterThanOrEqual(service.gate.activity.completed, bodies.count)
            let running = await service.gate.running
            XCTAssertFalse(running)
        }
    }

    func testAClientThatHangsUpMidStreamFreesTheModel() async throws {
        try await withServer { port, service in
            var body = try generateBody(Self.reference.cases[0])
            body["max_new_tokens"] = 1024
            let seen = try await HTTPClient.readUntilThenHangUp(port: port, path: "/v1/stream", json: body, marker: "event: token")
            XCTAssertTrue(seen.contains("event: token"), seen)
            // The generation stops at its next token and releases the model.
            let deadline = Date().addingTimeInterval(20)
            while await service.gate.running, Date() < deadline { try await Task.sleep(nanoseconds: 10_000_000) }
            let running = await service.gate.running
            XCTAssertFalse(running)
            let reply = try await HTTPClient.postJSON(port: port, try generateBody(Self.reference.cases[0]))
            XCTAssertEqual(reply.status, 200, reply.text)
            XCTAssertEqual(reply.json["token_ids"] as? [Int], Self.reference.cases[0].generated_ids)
        }
    }

    func testBusyServerAnswers503() async throws {
        var config = ServerConfiguration(maxWaiting: 0)
        config.maxSequences = 1
        try await withServer(config) { port, service in
            let body = try generateBody(Self.reference.cases[0])
            try await service.gate.acquire()   // a generation in progress
            for path in ["/v1/generate", "/v1/generate?stream=true"] {
                let reply = try await HTTPClient.postJSON(port: port, path: path, body)
                XCTAssertEqual(reply.status, 503, reply.text)
                XCTAssertEqual(reply.errorCode, "busy")
                XCTAssertEqual(reply.headers["retry-after"], "1")
            }
            await service.gate.release()
            let reply = try await HTTPClient.postJSON(port: port, body)
            XCTAssertEqual(reply.status, 200, reply.text)
        }
    }

    func testGateQueuesInOrderAndBoundsTheWait() async throws {
        let gate = InferenceGate(maxWaiting: 2)
        try await gate.acquire()
        let order = OrderLog()
        let a = Task { try await gate.acquire(); order.append("a"); await gate.release() }
        while await gate.waiting < 1 { await Task.yield() }
        let b = Task { try await gate.acquire(); order.append("b"); await gate.release() }
        while await gate.waiting < 2 { await Task.yield() }
        do {
            try await gate.acquire()
            XCTFail("a third waiter is refused")
        } catch let e as APIError {
            XCTAssertEqual(e.status, .serviceUnavailable)
            XCTAssertEqual(e.code, "busy")
        }
        await gate.release()
        try await a.value
        try await b.value
        XCTAssertEqual(order.items, ["a", "b"])
        let running = await gate.running
        XCTAssertFalse(running)
    }
}

// @unchecked Sendable: `list` is only touched under `lock`.
final class OrderLog: @unchecked Sendable {
    private let lock = NSLock()
    private var list: [String] = []
    func append(_ s: String) { lock.lock(); list.append(s); lock.unlock() }
    var items: [String] { lock.lock(); defer { lock.unlock() }; return list }

}

extension ServerTests {
    // MARK: OpenAI's protocol

    /// A Python with OpenAI's client: $PALIGEMMA_TEST_PYTHON (.ci/run makes one), else none.
    static var openAIPython: String? {
        guard let python = ProcessInfo.processInfo.environment["PALIGEMMA_TEST_PYTHON"], !python.isEmpty else { return nil }
        return python
    }

    /// OpenAI's official Python client against the real server: models, a plain completion with
    /// an image (the reference answer), the same streamed, a stop string, and a typed error.
    func testOpenAIPythonClient() async throws {
        guard let python = Self.openAIPython else {
            throw XCTSkip("set PALIGEMMA_TEST_PYTHON to a Python with the openai package (.ci/run does)")
        }
        let c = Self.reference.cases[2]  // a JPEG, so the alpha handling plays no part
        let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Clients/openai_client.py")
        let imagePath = fixtures("image").appendingPathComponent(c.image).path
        try await withServer { port, _ in
            let output = try await Task.detached { () -> Data in
                let p = Process()
                p.executableURL = URL(fileURLWithPath: python)
                p.arguments = [script.path, String(port), imagePath, c.prompt, String(c.generated_ids.count)]
                let out = Pipe()
                p.standardOutput = out
                try p.run()
                let data = out.fileHandleForReading.readDataToEndOfFile()
                p.waitUntilExit()
                guard p.terminationStatus == 0 else { throw ClientError.malformed("the client script failed (\(p.terminationStatus))") }
                return data
            }.value
            let seen = try XCTUnwrap(try JSONSerialization.jsonObject(with: output) as? [String: Any])
            XCTAssertEqual(seen["models"] as? [String], ["e2e"])
            let plain = try XCTUnwrap(seen["plain"] as? [String: Any])
            XCTAssertEqual(plain["object"] as? String, "chat.completion")
            XCTAssertEqual(plain["role"] as? String, "assistant")
            XCTAssertEqual(plain["content"] as? String, c.text, "the reference answer")
            XCTAssertEqual(plain["finish_reason"] as? String, "length")
            XCTAssertEqual((plain["logprobs"] as? [Any])?.count, c.generated_ids.count)
            let usage = try XCTUnwrap(plain["usage"] as? [Int])
            XCTAssertEqual(usage[1], c.generated_ids.count)
            XCTAssertEqual(usage[2], usage[0] + usage[1])
            let stream = try XCTUnwrap(seen["stream"] as? [String: Any])
            XCTAssertEqual(stream["content"] as? String, c.text, "streamed deltas add up to the answer")
            XCTAssertGreaterThan(stream["chunks"] as? Int ?? 0, 1)
            XCTAssertEqual(stream["finish_reasons"] as? [String], ["length"])
            XCTAssertEqual(stream["usage"] as? [Int], usage)
            XCTAssertEqual(stream["objects"] as? [String], ["chat.completion.chunk"])
            let stop = try XCTUnwrap(seen["stop"] as? [String: Any])
            let stopString = try XCTUnwrap(stop["stop"] as? String)
            let expected = String(c.text[..<c.text.range(of: stopString)!.lowerBound])
            XCTAssertEqual(stop["content"] as? String, expected)
            XCTAssertEqual(stop["streamed"] as? String, expected)
            XCTAssertEqual(stop["finish_reason"] as? String, "stop")
            let error = try XCTUnwrap(seen["error"] as? [String: Any])
            XCTAssertEqual(error["status"] as? Int, 400)
            XCTAssertEqual(error["code"] as? String, "missing_image")
        }
    }

    /// The same protocol on the wire: /v1/models, a completion, and the event stream's framing.
    func testOpenAIChatCompletionsOnTheWire() async throws {
        let c = Self.reference.cases[0]
        let url = "data:image/jpeg;base64," + (try imageData(c.image).base64EncodedString())
        let messages: [[String: Any]] = [["role": "system", "content": "ignored"],
                                         ["role": "user", "content": [["type": "image_url", "image_url": ["url": url]],
                                                                      ["type": "text", "text": c.prompt]]]]
        try await withServer { port, _ in
            let models = try await HTTPClient.request(port: port, method: "GET", path: "/v1/models")
            XCTAssertEqual(models.status, 200)
            XCTAssertEqual(((models.json["data"] as? [[String: Any]])?.first)?["id"] as? String, "e2e")
            let body: [String: Any] = ["model": "x", "messages": messages, "max_tokens": c.generated_ids.count, "temperature": 0]
            let reply = try await HTTPClient.postJSON(port: port, path: "/v1/chat/completions", body)
            XCTAssertEqual(reply.status, 200, reply.text)
            let choice = try XCTUnwrap((reply.json["choices"] as? [[String: Any]])?.first)
            XCTAssertEqual((choice["message"] as? [String: Any])?["content"] as? String, c.text)
            XCTAssertTrue(choice["logprobs"] is NSNull, "null unless asked for")
            XCTAssertEqual((reply.json["paligemma"] as? [String: Any])?["token_ids"] as? [Int], c.generated_ids)

            var streamed = body
            streamed["stream"] = true
            let events = try await HTTPClient.postJSON(port: port, path: "/v1/chat/completions", streamed)
            XCTAssertEqual(events.status, 200)
            XCTAssertTrue(events.headers["content-type"]?.hasPrefix("text/event-stream") ?? false)
            let datas = events.text.components(separatedBy: "\n\n").filter { !$0.isEmpty }
            XCTAssertEqual(datas.last, "data: [DONE]")
            XCTAssertTrue(datas.dropLast().allSatisfy { $0.hasPrefix("data: {") }, events.text)

            // Unknown fields, n > 1, URLs to fetch and bad types are refused in OpenAI's error shape.
            for (patch, code, param) in [(["n": 2], "invalid_option", "n"), (["best_of": 2], "unknown_field", "best_of"),
                                         (["temperature": "hot"], "invalid_option", "temperature")] as [([String: Any], String, String)] {
                var bad = body
                for (k, v) in patch { bad[k] = v }
                let r = try await HTTPClient.postJSON(port: port, path: "/v1/chat/completions", bad)
                XCTAssertEqual(r.status, 400, r.text)
                let e = try XCTUnwrap(r.json["error"] as? [String: Any])
                XCTAssertEqual(e["code"] as? String, code)
                XCTAssertEqual(e["param"] as? String, param)
                XCTAssertEqual(e["type"] as? String, "invalid_request_error")
            }
            var remote = body
            remote["messages"] = [["role": "user", "content": [["type": "image_url", "image_url": ["url": "https://example.com/a.jpg"]],
                                                               ["type": "text", "text": "caption en"]]]]
            let fetched = try await HTTPClient.postJSON(port: port, path: "/v1/chat/completions", remote)
            XCTAssertEqual(fetched.errorCode, "invalid_image_url")
        }
    }

    /// The native API refuses a field it does not know instead of ignoring it.
    func testUnknownNativeFieldIsRefusedWithAHint() async throws {
        let c = Self.reference.cases[0]
        try await withServer { port, _ in
            var body = try generateBody(c)
            body["max_tokens"] = 5
            let r = try await HTTPClient.postJSON(port: port, body)
            XCTAssertEqual(r.status, 400)
            XCTAssertEqual(r.errorCode, "unknown_field")
            XCTAssertTrue(r.errorMessage?.contains("did you mean \"max_new_tokens\"") ?? false, r.text)
        }
    }
}

extension ServerTests {
    /// Reads from a connected socket until the server closes it (true) or `seconds` pass (false).
    func closedByServer(_ fd: Int32, within seconds: Double) -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        var buffer = [UInt8](repeating: 0, count: 4096)
        while Date() < deadline {
            var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            if poll(&p, 1, 100) > 0 {
                let n = recv(fd, &buffer, buffer.count, 0)
                if n <= 0 { return true }
            }
        }
        return false
    }

    /// A form of thousands of tiny parts is refused at once instead of being parsed.
    func testManyPartFormIsRefusedQuickly() async throws {
        try await withServer { port, _ in
            var body = ""
            for i in 0..<20_000 { body += "--b\r\nContent-Disposition: form-data; name=\"f\(i)\"\r\n\r\nx\r\n" }
            body += "--b--\r\n"
            let started = Date()
            let r = try await HTTPClient.request(port: port, method: "POST", path: "/v1/generate",
                                                 headers: ["Content-Type": "multipart/form-data; boundary=b"], body: Data(body.utf8))
            XCTAssertEqual(r.status, 400)
            XCTAssertEqual(r.errorCode, "invalid_multipart")
            XCTAssertLessThan(Date().timeIntervalSince(started), 5, "refused without parsing every part")
            let health = try await HTTPClient.request(port: port, method: "GET", path: "/health")
            XCTAssertEqual(health.status, 200)
        }
    }

    /// Idle connections are closed after the idle timeout, a body that stops half-way too, and
    /// connections past the limit are closed on arrival while the server keeps answering.
    func testIdleConnectionsAndTheConnectionLimit() async throws {
        var config = ServerConfiguration()
        config.maxConnections = 3
        config.idleTimeoutSeconds = 1
        try await withServer(config) { port, _ in
            let stalled = try HTTPClient.connectLoopback(port: port)
            defer { close(stalled) }
            let head = "POST /v1/generate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"imag"
            _ = head.withCString { send(stalled, $0, strlen($0), Int32(MSG_NOSIGNAL)) }
            let idle = try HTTPClient.connectLoopback(port: port)
            defer { close(idle) }
            XCTAssertTrue(closedByServer(stalled, within: 6), "a body that stops is not held forever")
            XCTAssertTrue(closedByServer(idle, within: 6), "an idle connection is closed")

            let held = try (0..<3).map { _ in try HTTPClient.connectLoopback(port: port) }
            usleep(200_000)
            let extra = try HTTPClient.connectLoopback(port: port)
            defer { close(extra) }
            XCTAssertTrue(closedByServer(extra, within: 2), "a connection past the limit is closed")
            for fd in held { close(fd) }
            usleep(200_000)
            let health = try await HTTPClient.request(port: port, method: "GET", path: "/health")
            XCTAssertEqual(health.status, 200)
        }
    }
}

extension ServerTests {
    /// The same picture sent again is not encoded again, and the answer is the same.
    func testARepeatedImageReusesItsEncoding() async throws {
        let c = Self.reference.cases[0]
        try await withServer { port, _ in
            let first = try await HTTPClient.postJSON(port: port, try generateBody(c))
            let second = try await HTTPClient.postJSON(port: port, try generateBody(c))
            XCTAssertEqual(first.status, 200)
            XCTAssertEqual(second.status, 200)
            func imageSeconds(_ r: HTTPReply) -> Double? { (r.json["timings"] as? [String: Any])?["image_seconds"] as? Double }
            XCTAssertGreaterThan(imageSeconds(first) ?? 0, 0)
            XCTAssertEqual(imageSeconds(second), 0, "encoded once")
            XCTAssertEqual(second.json["token_ids"] as? [Int], c.generated_ids)
            // Another picture is encoded.
            let other = try await HTTPClient.postJSON(port: port, try generateBody(Self.reference.cases[2]))
            XCTAssertGreaterThan(imageSeconds(other) ?? 0, 0)
        }
    }
}

extension ServerTests {
    /// HEAD, 405 with Allow, request ids, an access log's counters in /metrics.
    func testHeadMethodNotAllowedRequestIdsAndMetrics() async throws {
        let c = Self.reference.cases[0]
        try await withServer { port, _ in
            let head = try await HTTPClient.request(port: port, method: "HEAD", path: "/health")
            XCTAssertEqual(head.status, 200)
            XCTAssertTrue(head.body.isEmpty)
            XCTAssertTrue(head.headers["content-type"]?.hasPrefix("application/json") ?? false)
            let wrong = try await HTTPClient.request(port: port, method: "GET", path: "/v1/generate")
            XCTAssertEqual(wrong.status, 405)
            XCTAssertEqual(wrong.headers["allow"], "POST")
            XCTAssertEqual(wrong.errorCode, "method_not_allowed")
            let ok = try await HTTPClient.request(port: port, method: "POST", path: "/v1/generate",
                                                  headers: ["Content-Type": "application/json", "X-Request-Id": "abc-123"],
                                                  body: try JSONSerialization.data(withJSONObject: try generateBody(c)))
            XCTAssertEqual(ok.status, 200)
            XCTAssertEqual(ok.headers["x-request-id"], "abc-123")
            let made = try await HTTPClient.request(port: port, method: "GET", path: "/health")
            XCTAssertEqual(made.headers["x-request-id"]?.count, 8, "an id is made when none is sent")
            let metrics = try await HTTPClient.request(port: port, method: "GET", path: "/metrics")
            XCTAssertEqual(metrics.status, 200)
            XCTAssertTrue(metrics.headers["content-type"]?.hasPrefix("text/plain") ?? false)
            for line in ["paligemma_requests_total{route=\"/v1/generate\",status=\"200\"} 1",
                         "paligemma_requests_total{route=\"/v1/generate\",status=\"405\"} 1",
                         "paligemma_generations_total 1", "paligemma_generated_tokens_total \(c.generated_ids.count)",
                         "paligemma_queue_waiting 0", "# TYPE paligemma_request_seconds summary",
                         // One sequence: each token after the first is one step serving it alone.
                         "paligemma_decode_steps_total \(c.generated_ids.count - 1)",
                         "paligemma_decode_step_sequences_total \(c.generated_ids.count - 1)",
                         "paligemma_decode_steps_between_layers_total 0"] {
                XCTAssertTrue(metrics.text.contains(line), "metrics lack \(line):\n\(metrics.text)")
            }
        }
    }

    /// With an API key the /v1/ routes need it; a CORS origin is answered for that origin only.
    func testAPIKeyAndCORS() async throws {
        var config = ServerConfiguration()
        config.apiKey = "s3cret"
        config.corsOrigin = "https://example.org"
        let c = Self.reference.cases[0]
        try await withServer(config) { port, _ in
            let body = try JSONSerialization.data(withJSONObject: try generateBody(c))
            let none = try await HTTPClient.request(port: port, method: "POST", path: "/v1/generate",
                                                    headers: ["Content-Type": "application/json"], body: body)
            XCTAssertEqual(none.status, 401)
            XCTAssertEqual(none.errorCode, "invalid_api_key")
            let wrong = try await HTTPClient.request(port: port, method: "GET", path: "/v1/models", headers: ["Authorization": "Bearer s3creT"])
            XCTAssertEqual(wrong.status, 401)
            let right = try await HTTPClient.request(port: port, method: "POST", path: "/v1/generate",
                                                     headers: ["Content-Type": "application/json", "Authorization": "Bearer s3cret",
                                                               "Origin": "https://example.org"], body: body)
            XCTAssertEqual(right.status, 200)
            XCTAssertEqual(right.headers["access-control-allow-origin"], "https://example.org")
            let health = try await HTTPClient.request(port: port, method: "GET", path: "/health")
            XCTAssertEqual(health.status, 200, "health needs no key")
            let preflight = try await HTTPClient.request(port: port, method: "OPTIONS", path: "/v1/generate",
                                                         headers: ["Origin": "https://example.org", "Access-Control-Request-Method": "POST"])
            XCTAssertTrue((200..<300).contains(preflight.status), "\(preflight.status)")
            XCTAssertEqual(preflight.headers["access-control-allow-origin"], "https://example.org")
        }
        try await withServer { port, _ in
            let r = try await HTTPClient.request(port: port, method: "GET", path: "/health", headers: ["Origin": "https://evil.example"])
            XCTAssertNil(r.headers["access-control-allow-origin"], "no CORS unless configured")
        }
    }
}

extension ServerTests {
    /// --max-waiting bounds every admitted request, also those waiting to decode their image:
    /// with both decode slots taken, one running plus one waiting are admitted and the rest get
    /// 503 at once; the admitted ones are answered when the slots free up.
    func testMaxWaitingCountsRequestsWaitingToDecode() async throws {
        let body = try JSONSerialization.data(withJSONObject: try generateBody(Self.reference.cases[0]))
        let json = ["Content-Type": "application/json"]
        try await withServer(ServerConfiguration(maxWaiting: 1)) { port, service in
            let held = [await service.decodeSlots.take(), await service.decodeSlots.take()]
            let admitted = (0..<2).map { _ in
                Task { try await HTTPClient.request(port: port, method: "POST", path: "/v1/generate", headers: json, body: body) }
            }
            // Wait until both are admitted (they then wait for a decode slot).
            for _ in 0..<100 where service.admission.count < 2 { try await Task.sleep(nanoseconds: 20_000_000) }
            XCTAssertEqual(service.admission.count, 2)
            for _ in 0..<3 {
                let refused = try await HTTPClient.request(port: port, method: "POST", path: "/v1/generate", headers: json, body: body)
                XCTAssertEqual(refused.status, 503, refused.text)
                XCTAssertEqual(refused.errorCode, "busy")
            }
            let health = try await HTTPClient.request(port: port, method: "GET", path: "/health")
            XCTAssertEqual(health.json["waiting"] as? Int, 2, "both admitted requests are waiting")
            for lease in held { lease.release() }
            for task in admitted {
                let reply = try await task.value
                XCTAssertEqual(reply.status, 200, reply.text)
            }
            XCTAssertEqual(service.admission.count, 0, "answered requests leave")
        }
    }
}

/// Runs `service` on a free loopback port for `body`, then stops it (also when `body` throws).
func runTestServer(_ service: PaliGemmaService, _ body: (Int) async throws -> Void) async throws {
    let (ports, portSink) = AsyncStream.makeStream(of: Int.self)
    let app = makeServerApplication(service: service) { port in portSink.yield(port) }
    var logger = Logger(label: "ServerTests")
    logger.logLevel = .warning
    let group = ServiceGroup(configuration: .init(services: [app], logger: logger))
    let server = Task { try await group.run() }
    var iterator = ports.makeAsyncIterator()
    guard let port = await iterator.next() else { return XCTFail("the server did not start") }
    do {
        try await body(port)
    } catch {
        await group.triggerGracefulShutdown()
        _ = await server.result
        throw error
    }
    await group.triggerGracefulShutdown()
    try await server.value
}
