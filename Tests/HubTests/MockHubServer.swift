import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
@testable import Hub

/// A tiny HTTP/1.1 server on 127.0.0.1 (random free port, one background thread, one connection at a time,
/// `Connection: close`) that mimics the Hugging Face hub endpoints the downloader uses. It stops itself after
/// `lifetime` seconds at the latest. No external network is ever touched.
// @unchecked Sendable: the requests seen, the dropped transfers and the stop flag are only touched
// under `lock`; the socket, port and thread are set in `start` before the server thread exists;
// the behaviour switches are set by a test before it sends a request, and the server thread reads
// them only after accepting that request's connection.
final class MockHubServer: @unchecked Sendable {
    struct RepoFile {
        let path: String
        let data: Data
        let lfs: Bool
        let sha256: String
        /// Stand-in for a git blob id: 40 hex characters.
        let gitETag: String

        init(path: String, data: Data, lfs: Bool) {
            self.path = path
            self.data = data
            self.lfs = lfs
            sha256 = SHA256.hexDigest(data)
            gitETag = String(SHA256.hexDigest(Array("blob ".utf8) + Array(data)).prefix(40))
        }
    }

    struct Repo {
        var commit: String
        var files: [RepoFile]
        /// When set, the repo is gated: requests need `Authorization: Bearer <token>`.
        var token: String? = nil
    }

    struct Request {
        var method: String
        var path: String
        var headers: [String: String]
        var time = Date()
    }

    // Behaviour switches for the CDN path.
    /// Cut the connection halfway through the body on the first GET of each CDN file.
    var dropFirstCDNTransfer = false
    /// Serve bytes that do not match the SHA-256 (one byte flipped).
    var corruptCDN = false
    /// Answer ranged requests with 200 and the whole file.
    var ignoreRange = false
    /// Host name the CDN redirects point at: another name for the loopback address, so the client sees a
    /// different host (and must not send the token there).
    var cdnHost = "localhost"

    private(set) var port: UInt16 = 0
    var base: URL { URL(string: "http://127.0.0.1:\(port)")! }

    private var repos: [String: Repo]
    private let lock = NSLock()
    private var recorded: [Request] = []
    private var dropped: Set<String> = []
    private var stopFlag = false
    private var listenFD: Int32 = -1
    private var thread: Thread?
    private let done = DispatchSemaphore(value: 0)

    init(repos: [String: Repo]) { self.repos = repos }

    /// All requests seen so far.
    var requests: [Request] { lock.lock(); defer { lock.unlock() }; return recorded }

    func start(lifetime: TimeInterval = 30) throws {
        #if os(Linux)
        listenFD = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        #else
        listenFD = socket(AF_INET, SOCK_STREAM, 0)
        #endif
        guard listenFD >= 0 else { throw POSIXError(.EIO) }
        var yes: Int32 = 1
        setsockopt(listenFD, SOL_SOCKET, SO_REUSEADDR, &yes, socklen_t(MemoryLayout<Int32>.size))
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = 0
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        let rc = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(listenFD, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard rc == 0, listen(listenFD, 16) == 0 else { throw POSIXError(.EADDRINUSE) }
        var bound = sockaddr_in()
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &bound) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(listenFD, $0, &len) }
        }
        port = UInt16(bigEndian: bound.sin_port)
        let deadline = Date().addingTimeInterval(lifetime)
        let t = Thread { [self] in
            self.serve(until: deadline)
            self.done.signal()
        }
        thread = t
        t.start()
    }

    func stop() {
        lock.lock(); stopFlag = true; lock.unlock()
        if thread != nil { done.wait(); thread = nil }
    }

    private var stopping: Bool { lock.lock(); defer { lock.unlock() }; return stopFlag }

    private func serve(until deadline: Date) {
        defer { close(listenFD) }
        while !stopping && Date() < deadline {
            var pfd = pollfd(fd: listenFD, events: Int16(POLLIN), revents: 0)
            guard poll(&pfd, 1, 50) > 0 else { continue }
            let fd = accept(listenFD, nil, nil)
            guard fd >= 0 else { continue }
            var tv = timeval(tv_sec: 2, tv_usec: 0)
            setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
            handle(fd)
            close(fd)
        }
    }

    // MARK: HTTP

    private func readRequest(_ fd: Int32) -> Request? {
        var data = [UInt8]()
        var buf = [UInt8](repeating: 0, count: 4096)
        while data.count < 65536 {
            let n = recv(fd, &buf, buf.count, 0)
            if n <= 0 { return nil }
            data.append(contentsOf: buf[0..<n])
            if let end = findHeaderEnd(data) {
                let text = String(decoding: data[0..<end], as: UTF8.self)
                let lines = text.components(separatedBy: "\r\n")
                let parts = lines[0].split(separator: " ")
                guard parts.count >= 2 else { return nil }
                var headers: [String: String] = [:]
                for line in lines.dropFirst() {
                    guard let c = line.firstIndex(of: ":") else { continue }
                    headers[line[..<c].lowercased()] = line[line.index(after: c)...].trimmingCharacters(in: .whitespaces)
                }
                return Request(method: String(parts[0]), path: String(parts[1]), headers: headers)
            }
        }
        return nil
    }

    private func findHeaderEnd(_ d: [UInt8]) -> Int? {
        guard d.count >= 4 else { return nil }
        for i in 0...(d.count - 4) where d[i] == 13 && d[i + 1] == 10 && d[i + 2] == 13 && d[i + 3] == 10 { return i }
        return nil
    }

    private func sendAll(_ fd: Int32, _ bytes: [UInt8]) {
        var off = 0
        while off < bytes.count {
            #if os(Linux)
            let n = bytes[off...].withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            #else
            let n = bytes[off...].withUnsafeBytes { send(fd, $0.baseAddress, $0.count, 0) }
            #endif
            if n <= 0 { return }
            off += n
        }
    }

    private func respond(_ fd: Int32, _ status: Int, _ reason: String, headers: [(String, String)] = [],
                         body: [UInt8] = [], head: Bool = false, contentLength: Int? = nil, sendOnly: Int? = nil) {
        var text = "HTTP/1.1 \(status) \(reason)\r\n"
        var hs = headers
        hs.append(("Content-Length", "\(contentLength ?? body.count)"))
        hs.append(("Connection", "close"))
        for (k, v) in hs { text += "\(k): \(v)\r\n" }
        text += "\r\n"
        sendAll(fd, Array(text.utf8))
        if !head { sendAll(fd, Array(body.prefix(sendOnly ?? body.count))) }
    }

    private func json(_ obj: Any) -> [UInt8] { Array(try! JSONSerialization.data(withJSONObject: obj)) }

    private func handle(_ fd: Int32) {
        guard let req = readRequest(fd) else { return }
        lock.lock(); recorded.append(req); lock.unlock()
        let head = req.method == "HEAD"
        let path = req.path.split(separator: "?", maxSplits: 1).first.map(String.init) ?? req.path
        let comps = path.split(separator: "/", omittingEmptySubsequences: false).dropFirst().map {
            String($0).removingPercentEncoding ?? String($0)
        }
        let notFound = { (code: String, msg: String) in
            // Like the real hub, an unknown repo under "private-*" answers 401 so as not to reveal private repos.
            let hidden = code == "RepoNotFound" && comps.contains { $0.hasPrefix("private-") }
            self.respond(fd, hidden ? 401 : 404, hidden ? "Unauthorized" : "Not Found",
                         headers: [("X-Error-Code", code), ("Content-Type", "application/json")],
                         body: self.json(["error": msg]), head: head)
        }
        // CDN: /cdn/<sha256>
        if comps.count == 2 && comps[0] == "cdn" {
            guard let file = repos.values.flatMap(\.files).first(where: { $0.sha256 == comps[1] }) else {
                return notFound("EntryNotFound", "no such object")
            }
            var bytes = Array(file.data)
            if corruptCDN, !bytes.isEmpty { bytes[bytes.count / 2] ^= 0xff }
            lock.lock()
            let drop = dropFirstCDNTransfer && !head && !dropped.contains(file.sha256)
            if drop { dropped.insert(file.sha256) }
            lock.unlock()
            if let range = req.headers["range"], !ignoreRange, range.hasPrefix("bytes="),
               let start = Int(range.dropFirst(6).split(separator: "-").first ?? "") {
                guard start < bytes.count else {
                    return respond(fd, 416, "Range Not Satisfiable", headers: [("Content-Range", "bytes */\(bytes.count)")], head: head)
                }
                let part = Array(bytes[start...])
                return respond(fd, 206, "Partial Content",
                               headers: [("Content-Range", "bytes \(start)-\(bytes.count - 1)/\(bytes.count)"), ("Accept-Ranges", "bytes")],
                               body: part, head: head, sendOnly: drop ? part.count / 2 : nil)
            }
            return respond(fd, 200, "OK", headers: [("Accept-Ranges", "bytes")], body: bytes, head: head,
                           sendOnly: drop ? bytes.count / 2 : nil)
        }
        // API: /api/models/<org>/<name>/revision/<rev>
        if comps.count >= 6 && comps[0] == "api" && comps[1] == "models" && comps[4] == "revision" {
            let id = comps[2] + "/" + comps[3]
            guard let repo = repos[id] else { return notFound("RepoNotFound", "Repository not found") }
            if let token = repo.token, req.headers["authorization"] != "Bearer \(token)" {
                return respond(fd, 401, "Unauthorized", headers: [("X-Error-Code", "GatedRepo")],
                               body: json(["error": "Access to model \(id) is restricted."]), head: head)
            }
            let rev = comps[5...].joined(separator: "/")
            guard rev == "main" || rev == repo.commit else { return notFound("RevisionNotFound", "Invalid rev id: \(rev)") }
            let siblings: [[String: Any]] = repo.files.map { f in
                var s: [String: Any] = ["rfilename": f.path, "size": f.data.count, "blobId": f.gitETag]
                if f.lfs { s["lfs"] = ["sha256": f.sha256, "size": f.data.count, "pointerSize": 134] }
                return s
            }
            return respond(fd, 200, "OK", headers: [("Content-Type", "application/json")],
                           body: json(["id": id, "sha": repo.commit, "siblings": siblings]), head: head)
        }
        // resolve: /<org>/<name>/resolve/<rev>/<path...>
        if comps.count >= 5 && comps[2] == "resolve" {
            let id = comps[0] + "/" + comps[1]
            guard let repo = repos[id] else { return notFound("RepoNotFound", "Repository not found") }
            if let token = repo.token, req.headers["authorization"] != "Bearer \(token)" {
                return respond(fd, 401, "Unauthorized", headers: [("X-Error-Code", "GatedRepo")],
                               body: json(["error": "Access to model \(id) is restricted."]), head: head)
            }
            guard comps[3] == "main" || comps[3] == repo.commit else { return notFound("RevisionNotFound", "Invalid rev id") }
            let filePath = comps[4...].joined(separator: "/")
            guard let file = repo.files.first(where: { $0.path == filePath }) else {
                return notFound("EntryNotFound", "Entry not found")
            }
            if file.lfs {
                return respond(fd, 302, "Found", headers: [
                    ("Location", "http://\(cdnHost):\(port)/cdn/\(file.sha256)"),
                    ("X-Repo-Commit", repo.commit), ("ETag", "\"\(file.gitETag)\""),
                    ("X-Linked-Etag", "\"\(file.sha256)\""), ("X-Linked-Size", "\(file.data.count)"),
                ], body: Array("Found. Redirecting".utf8), head: head)
            }
            return respond(fd, 200, "OK", headers: [("X-Repo-Commit", repo.commit), ("ETag", "\"\(file.gitETag)\"")],
                           body: Array(file.data), head: head)
        }
        notFound("NotFound", "no route")
    }
}
