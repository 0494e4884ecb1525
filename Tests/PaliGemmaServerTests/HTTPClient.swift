import Dispatch
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A plain HTTP/1.1 reply.
struct HTTPReply {
    var status: Int
    var headers: [String: String]  // lowercased names
    var body: Data

    var text: String { String(decoding: body, as: UTF8.self) }
    var json: [String: Any] { ((try? JSONSerialization.jsonObject(with: body)) as? [String: Any]) ?? [:] }
    var errorCode: String? { (json["error"] as? [String: Any])?["code"] as? String }
    var errorMessage: String? { (json["error"] as? [String: Any])?["message"] as? String }

    /// Server-Sent Events in order: (event, data).
    var events: [(event: String, data: String)] {
        text.components(separatedBy: "\n\n").compactMap { block in
            var event = "message", data = ""
            for line in block.split(separator: "\n") {
                if line.hasPrefix("event:") { event = line.dropFirst(6).trimmingCharacters(in: .whitespaces) }
                if line.hasPrefix("data:") { data += line.dropFirst(5).trimmingCharacters(in: .whitespaces) }
            }
            return data.isEmpty ? nil : (event, data)
        }
    }
}

enum ClientError: Error { case socket(String), malformed(String) }

/// A minimal loopback HTTP/1.1 client on POSIX sockets (`Connection: close`, chunked bodies
/// decoded). Blocking; `request` runs it off Swift's cooperative threads.
enum HTTPClient {
    static func request(port: Int, method: String, path: String, headers: [String: String] = [:],
                        body: Data = Data()) async throws -> HTTPReply {
        try await withCheckedThrowingContinuation { (c: CheckedContinuation<HTTPReply, Error>) in
            DispatchQueue.global().async {
                c.resume(with: Result { try blockingRequest(port: port, method: method, path: path, headers: headers, body: body) })
            }
        }
    }

    static func postJSON(port: Int, path: String = "/v1/generate", _ object: [String: Any]) async throws -> HTTPReply {
        try await request(port: port, method: "POST", path: path, headers: ["Content-Type": "application/json"],
                          body: try JSONSerialization.data(withJSONObject: object))
    }

    /// Sends a request, reads until `marker` arrives, then hangs up; returns what was read.
    static func readUntilThenHangUp(port: Int, path: String, json: [String: Any], marker: String) async throws -> String {
        let body = try JSONSerialization.data(withJSONObject: json)
        return try await withCheckedThrowingContinuation { (c: CheckedContinuation<String, Error>) in
            DispatchQueue.global().async {
                c.resume(with: Result {
                    let fd = try connectLoopback(port: port)
                    defer { close(fd) }
                    let head = "POST \(path) HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: \(body.count)\r\n\r\n"
                    let request = Data(head.utf8) + body
                    _ = request.withUnsafeBytes { send(fd, $0.baseAddress!, $0.count, Int32(MSG_NOSIGNAL)) }
                    var text = ""
                    var buffer = [UInt8](repeating: 0, count: 4096)
                    while !text.contains(marker) {
                        let n = recv(fd, &buffer, buffer.count, 0)
                        if n <= 0 { break }
                        text += String(decoding: buffer[0..<n], as: UTF8.self)
                    }
                    return text
                })
            }
        }
    }

    /// Sends a request, waits until `ready` holds (at most 30 s), then hangs up without reading.
    static func sendThenHangUp(port: Int, path: String, json: [String: Any], ready: () async -> Bool) async throws {
        let body = try JSONSerialization.data(withJSONObject: json)
        let fd = try connectLoopback(port: port)
        defer { close(fd) }
        let head = "POST \(path) HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: \(body.count)\r\n\r\n"
        let request = Data(head.utf8) + body
        let sent = request.withUnsafeBytes { send(fd, $0.baseAddress!, $0.count, Int32(MSG_NOSIGNAL)) }
        guard sent == request.count else { throw POSIXError(.EPIPE) }
        let deadline = Date().addingTimeInterval(30)
        while !(await ready()), Date() < deadline { try await Task.sleep(nanoseconds: 2_000_000) }
    }

    static func connectLoopback(port: Int) throws -> Int32 {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw ClientError.socket("socket: \(errno)") }
        var timeout = timeval(tv_sec: 50, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = in_port_t(UInt16(port).bigEndian)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        let connected = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard connected == 0 else { close(fd); throw ClientError.socket("connect: \(errno)") }
        return fd
    }

    static func blockingRequest(port: Int, method: String, path: String, headers: [String: String], body: Data) throws -> HTTPReply {
        let fd = try connectLoopback(port: port)
        defer { close(fd) }
        var head = "\(method) \(path) HTTP/1.1\r\nHost: 127.0.0.1:\(port)\r\nConnection: close\r\n"
        for (k, v) in headers { head += "\(k): \(v)\r\n" }
        if !body.isEmpty || method == "POST" { head += "Content-Length: \(body.count)\r\n" }
        head += "\r\n"
        let request = Data(head.utf8) + body
        // The server may answer (413) before reading everything: a failed send is not an error.
        request.withUnsafeBytes { raw in
            var sent = 0
            while sent < raw.count {
                let n = send(fd, raw.baseAddress! + sent, raw.count - sent, Int32(MSG_NOSIGNAL))
                if n <= 0 { break }
                sent += n
            }
        }
        var response = Data()
        var buffer = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = recv(fd, &buffer, buffer.count, 0)
            if n <= 0 { break }
            response.append(contentsOf: buffer[0..<n])
        }
        return try parse(response)
    }

    static func parse(_ data: Data) throws -> HTTPReply {
        guard let split = data.range(of: Data("\r\n\r\n".utf8)) else { throw ClientError.malformed("no header end in \(data.count) bytes") }
        let lines = String(decoding: data[..<split.lowerBound], as: UTF8.self).components(separatedBy: "\r\n")
        let statusParts = lines[0].split(separator: " ")
        guard statusParts.count >= 2, let status = Int(statusParts[1]) else { throw ClientError.malformed(lines[0]) }
        var headers: [String: String] = [:]
        for line in lines.dropFirst() {
            guard let colon = line.firstIndex(of: ":") else { continue }
            headers[line[..<colon].lowercased()] = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
        }
        var body = Data(data[split.upperBound...])
        if headers["transfer-encoding"]?.lowercased() == "chunked" {
            var out = Data()
            var rest = body[...]
            while let lineEnd = rest.range(of: Data("\r\n".utf8)) {
                let sizeText = String(decoding: rest[..<lineEnd.lowerBound], as: UTF8.self).split(separator: ";")[0]
                guard let size = Int(sizeText.trimmingCharacters(in: .whitespaces), radix: 16) else { break }
                if size == 0 { break }
                let start = lineEnd.upperBound
                out.append(rest[start..<min(start + size, rest.endIndex)])
                rest = rest[min(start + size + 2, rest.endIndex)...]
            }
            body = out
        }
        return HTTPReply(status: status, headers: headers, body: body)
    }
}
