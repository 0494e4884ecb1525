import Foundation
import PaliGemma
@testable import PaliGemmaServer
import XCTest
#if canImport(Glibc)
import Glibc
#endif

extension ServerTests {
    /// Sends `head` (and no body), reads until the server closes; returns the reply and the seconds it took.
    func sendHeadOnly(port: Int, _ head: String, readUntil marker: String? = nil) async throws -> (String, Double) {
        try await withCheckedThrowingContinuation { (c: CheckedContinuation<(String, Double), Error>) in
            DispatchQueue.global().async {
                c.resume(with: Result {
                    let fd = try HTTPClient.connectLoopback(port: port)
                    defer { close(fd) }
                    let start = Date()
                    Data(head.utf8).withUnsafeBytes { raw in
                        var sent = 0
                        while sent < raw.count {
                            let n = send(fd, raw.baseAddress! + sent, raw.count - sent, Int32(MSG_NOSIGNAL))
                            if n <= 0 { break }
                            sent += n
                        }
                    }
                    var text = ""
                    var buffer = [UInt8](repeating: 0, count: 4096)
                    while marker.map({ !text.contains($0) }) ?? true {
                        let n = recv(fd, &buffer, buffer.count, 0)
                        if n <= 0 { break }
                        text += String(decoding: buffer[0..<n], as: UTF8.self)
                    }
                    return (text, Date().timeIntervalSince(start))
                })
            }
        }
    }

    /// A body declared too large, from a client that said `Connection: close`, is refused at once
    /// and the connection closed: the server does not wait for the body it will not read.
    func testTooLargeBodyIsRefusedAndTheConnectionClosedAtOnce() async throws {
        var config = ServerConfiguration()
        config.maxBodyBytes = 1 << 20
        try await withServer(config) { port, _ in
            for close in ["Connection: close\r\n"] {
                let head = "POST /v1/generate HTTP/1.1\r\nHost: 127.0.0.1\r\n\(close)Content-Type: application/json\r\nContent-Length: 50000000\r\n\r\n"
                let (reply, seconds) = try await sendHeadOnly(port: port, head)
                XCTAssertTrue(reply.hasPrefix("HTTP/1.1 413"), reply)
                XCTAssertLessThan(seconds, 5, "closed after \(seconds) s (the idle timeout is \(config.idleTimeoutSeconds) s)")
            }
        }
    }

    /// A chunked body over the limit (40 MB: more than the sockets buffer), sent whole before the
    /// reply is read, gets its 413 promptly.
    func testChunkedBodyOverTheLimitGetsItsAnswerWithoutStalling() async throws {
        var config = ServerConfiguration()
        config.maxBodyBytes = 1 << 20
        try await withServer(config) { port, _ in
            for close in ["Connection: close\r\n", ""] {
                let chunk = String(repeating: "A", count: 64 << 10)
                var request = "POST /v1/generate HTTP/1.1\r\nHost: 127.0.0.1\r\n\(close)Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
                for _ in 0..<640 { request += String(64 << 10, radix: 16) + "\r\n" + chunk + "\r\n" }
                request += "0\r\n\r\n"
                let start = Date()
                let (reply, _) = try await sendHeadOnly(port: port, request, readUntil: close.isEmpty ? "body_too_large" : nil)
                let seconds = Date().timeIntervalSince(start)
                XCTAssertTrue(reply.hasPrefix("HTTP/1.1 413"), String(reply.prefix(200)))
                XCTAssertLessThan(seconds, 5, "answered after \(seconds) s")
            }
        }
    }
}

extension ServerTests {
    /// A keep-alive client declaring a body over the limit and never sending it gets its 413 and
    /// `Connection: close` at once, and the connection is closed: nothing waits for the idle timeout.
    func testKeepAliveClientDeclaringATooLargeBodyIsAnsweredAndClosed() async throws {
        var config = ServerConfiguration()
        config.maxBodyBytes = 1 << 20
        try await withServer(config) { port, _ in
            let head = "POST /v1/generate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 50000000\r\n\r\n"
            let (reply, seconds) = try await sendHeadOnly(port: port, head)
            XCTAssertTrue(reply.hasPrefix("HTTP/1.1 413"), reply)
            XCTAssertTrue(reply.lowercased().contains("connection: close"), reply)
            XCTAssertLessThan(seconds, 5, "closed after \(seconds) s (the idle timeout is \(config.idleTimeoutSeconds) s)")
        }
    }

    /// HTTP/1.0 closes after each response unless the client asks for keep-alive (RFC 9112 §9.3);
    /// `Connection: close` counts in any letter case.
    func testHTTP10AndConnectionCloseEndTheConnectionAfterTheResponse() async throws {
        try await withServer { port, _ in
            for head in ["GET /health HTTP/1.0\r\n\r\n",
                         "GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Close\r\n\r\n"] {
                let (reply, seconds) = try await sendHeadOnly(port: port, head)
                XCTAssertTrue(reply.contains(" 200 "), reply)
                XCTAssertTrue(reply.lowercased().contains("connection: close"), reply)
                XCTAssertTrue(reply.contains("\"status\":\"ok\""), reply)
                XCTAssertLessThan(seconds, 5, "\(head.prefix(24)): closed after \(seconds) s, not at once")
            }
            // Keep-alive asked for: the connection serves a second request, and closes after it.
            let two = "GET /health HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET /health HTTP/1.0\r\n\r\n"
            let (reply, seconds) = try await sendHeadOnly(port: port, two)
            XCTAssertEqual(reply.components(separatedBy: "\"status\":\"ok\"").count - 1, 2, reply)
            XCTAssertLessThan(seconds, 5)
        }
    }

    /// A plain (not streamed) request whose client hangs up stops generating at its next token
    /// and frees the model; a request whose client left while it queued never runs.
    func testAClientThatHangsUpBeforeItsAnswerFreesTheModel() async throws {
        // A long answer (most of the model's 8192 positions), so that stopping early shows.
        var config = ServerConfiguration()
        config.maxNewTokensLimit = 8192
        config.maxSequences = 1
        try await withServer(config) { port, service in
            var body = try generateBody(Self.reference.cases[0])
            body["max_new_tokens"] = 7000
            // How long the whole generation takes when nobody hangs up.
            let start = Date()
            let full = try await HTTPClient.postJSON(port: port, body)
            let fullSeconds = Date().timeIntervalSince(start)
            XCTAssertEqual(full.status, 200, full.text)
            let generated = (full.json["token_ids"] as? [Int])?.count ?? 0
            try XCTSkipIf(generated < 200 || fullSeconds < 0.3, "the model stopped after \(generated) tokens, \(fullSeconds) s: too short to tell")

            for path in ["/v1/generate", "/v1/chat/completions"] {
                let json: [String: Any] = path == "/v1/generate" ? body : try chatBody(body)
                try await HTTPClient.sendThenHangUp(port: port, path: path, json: json) { await service.gate.running }
                let hungUp = Date()
                let deadline = hungUp.addingTimeInterval(fullSeconds + 20)
                while await service.gate.running, Date() < deadline { try await Task.sleep(nanoseconds: 5_000_000) }
                let stoppedAfter = Date().timeIntervalSince(hungUp)
                XCTAssertLessThan(stoppedAfter, max(0.5, fullSeconds / 3),
                                  "\(path): the model was busy \(stoppedAfter) s after the client left (whole answer: \(fullSeconds) s)")
            }

            // Left while queued: when its turn comes it does not run.
            try await service.gate.acquire()
            let before = service.gate.activity.completed
            try await HTTPClient.sendThenHangUp(port: port, path: "/v1/generate", json: body) { await service.admission.count > 0 }
            try await Task.sleep(nanoseconds: 200_000_000)
            await service.gate.release()
            let deadline = Date().addingTimeInterval(10)
            while service.admission.count > 0, Date() < deadline { try await Task.sleep(nanoseconds: 5_000_000) }
            XCTAssertEqual(service.admission.count, 0)
            XCTAssertEqual(service.gate.activity.completed, before, "a request whose client had left was run")
            let reply = try await HTTPClient.postJSON(port: port, try generateBody(Self.reference.cases[0]))
            XCTAssertEqual(reply.json["token_ids"] as? [Int], Self.reference.cases[0].generated_ids)
        }
    }

    /// The same request in OpenAI's chat shape (image as a data URL).
    func chatBody(_ generate: [String: Any]) throws -> [String: Any] {
        let image = try XCTUnwrap(generate["image"] as? String)
        let url = image.hasPrefix("data:") ? image : "data:image/png;base64," + image
        return ["model": "paligemma",
                "messages": [["role": "user", "content": [["type": "text", "text": generate["prompt"] as? String ?? ""],
                                                          ["type": "image_url", "image_url": ["url": url]]]]],
                "max_tokens": generate["max_new_tokens"] as? Int ?? 16, "temperature": 0]
    }
}
