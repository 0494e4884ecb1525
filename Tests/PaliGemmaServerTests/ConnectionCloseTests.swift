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
