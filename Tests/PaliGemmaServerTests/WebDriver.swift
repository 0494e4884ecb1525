import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A headless Chromium driven through chromedriver's W3C WebDriver HTTP API (plus its CDP
/// passthrough for the viewport), over the loopback client the server tests use.
final class Browser {
    struct Failure: Error, CustomStringConvertible {
        let description: String
    }

    /// A browser log entry: `level` SEVERE for JavaScript errors, `console.error` and failed loads.
    struct LogEntry {
        let level: String, source: String, message: String
    }

    /// chromedriver and Chromium from `PALIGEMMA_TEST_CHROMEDRIVER` / `PALIGEMMA_TEST_CHROMIUM`, else
    /// Debian's `chromium-driver` and `chromium` on the PATH; nil when either is missing.
    static func locate() -> (driver: String, chromium: String)? {
        let env = ProcessInfo.processInfo.environment
        func find(_ variable: String, _ names: [String]) -> String? {
            if let path = env[variable], FileManager.default.isExecutableFile(atPath: path) { return path }
            let dirs = (env["PATH"] ?? "/usr/bin:/bin").split(separator: ":").map(String.init)
            for name in names {
                for dir in dirs where FileManager.default.isExecutableFile(atPath: dir + "/" + name) { return dir + "/" + name }
            }
            return nil
        }
        guard let driver = find("PALIGEMMA_TEST_CHROMEDRIVER", ["chromedriver"]),
              let chromium = find("PALIGEMMA_TEST_CHROMIUM", ["chromium", "chromium-browser", "google-chrome"]) else { return nil }
        return (driver, chromium)
    }

    let port: Int
    let process: Process
    let profile: URL
    private(set) var session = ""

    /// Starts chromedriver and a headless Chromium session with the browser log on.
    init(driver: String, chromium: String) async throws {
        port = try Self.freePort()
        profile = FileManager.default.temporaryDirectory.appendingPathComponent("paligemma-chromium-\(UUID().uuidString)")
        process = Process()
        process.executableURL = URL(fileURLWithPath: driver)
        process.arguments = ["--port=\(port)"]
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        let deadline = Date().addingTimeInterval(20)
        while true {
            if let status = try? await command("GET", "/status") as? [String: Any],
               status["ready"] as? Bool == true { break }
            guard Date() < deadline, process.isRunning else { stop(); throw Failure(description: "chromedriver did not start") }
            try await Task.sleep(nanoseconds: 100_000_000)
        }
        let options: [String: Any] = [
            "binary": chromium,
            // --no-sandbox: CI runs as root, where Chromium's sandbox cannot start.
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--hide-scrollbars",
                     "--window-size=1280,900", "--user-data-dir=\(profile.path)", "--no-first-run", "--disable-extensions"],
        ]
        let capabilities: [String: Any] = ["alwaysMatch": ["browserName": "chrome", "goog:chromeOptions": options,
                                                           "goog:loggingPrefs": ["browser": "ALL"]]]
        do {
            let value = try await command("POST", "/session", ["capabilities": capabilities]) as? [String: Any]
            guard let id = value?["sessionId"] as? String else { throw Failure(description: "no session id in \(String(describing: value))") }
            session = id
        } catch {
            stop()
            throw error
        }
    }

    func stop() {
        if !session.isEmpty {
            let path = "/session/\(session)"
            session = ""
            _ = try? Self.exchange(port: port, method: "DELETE", path: path, body: Data())
        }
        // SIGKILL: chromedriver inherits the test process's blocked signals, SIGTERM among them.
        if process.isRunning { kill(process.processIdentifier, SIGKILL); process.waitUntilExit() }
        try? FileManager.default.removeItem(at: profile)
    }

    /// One WebDriver command; returns its `value`.
    @discardableResult
    func command(_ method: String, _ path: String, _ body: [String: Any]? = nil) async throws -> Any? {
        let data = try body.map { try JSONSerialization.data(withJSONObject: $0) } ?? Data()
        let port = self.port
        let reply = try await withCheckedThrowingContinuation { (c: CheckedContinuation<HTTPReply, Error>) in
            DispatchQueue.global().async { c.resume(with: Result { try Self.exchange(port: port, method: method, path: path, body: data) }) }
        }
        let value = ((try? JSONSerialization.jsonObject(with: reply.body)) as? [String: Any])?["value"]
        guard reply.status == 200 else {
            let error = value as? [String: Any]
            throw Failure(description: "\(method) \(path): \(reply.status) \(error?["error"] ?? "") \(error?["message"] ?? reply.text)")
        }
        return value is NSNull ? nil : value
    }

    func sessionCommand(_ method: String, _ path: String, _ body: [String: Any]? = nil) async throws -> Any? {
        try await command(method, "/session/\(session)\(path)", body)
    }

    func open(_ url: String) async throws { try await sessionCommand("POST", "/url", ["url": url]) }

    /// Runs `script` (a function body; `arguments` holds `args`) in the page and returns its result.
    @discardableResult
    func run(_ script: String, _ args: [Any] = []) async throws -> Any? {
        try await sessionCommand("POST", "/execute/sync", ["script": script, "args": args])
    }

    func string(_ script: String, _ args: [Any] = []) async throws -> String { (try await run(script, args) as? String) ?? "" }

    /// Waits until `script` returns true (at most `timeout` seconds).
    func wait(_ what: String, timeout: Double = 30, _ script: String, _ args: [Any] = []) async throws {
        let deadline = Date().addingTimeInterval(timeout)
        while try await run(script, args) as? Bool != true {
            guard Date() < deadline else { throw Failure(description: "timed out waiting for \(what)") }
            try await Task.sleep(nanoseconds: 50_000_000)
        }
    }

    /// The element `selector` matches (WebDriver's element id).
    func element(_ selector: String) async throws -> String {
        let value = try await sessionCommand("POST", "/element", ["using": "css selector", "value": selector]) as? [String: Any]
        guard let id = value?["element-6066-11e4-a52e-4f735466cecf"] as? String else { throw Failure(description: "no element \(selector)") }
        return id
    }

    func click(_ selector: String) async throws {
        try await sessionCommand("POST", "/element/\(try await element(selector))/click", [:])
    }

    /// Types `text` into a field after clearing it (a file input is given a path this way).
    func type(_ selector: String, _ text: String, clear: Bool = true) async throws {
        let id = try await element(selector)
        if clear { try await sessionCommand("POST", "/element/\(id)/clear", [:]) }
        try await sessionCommand("POST", "/element/\(id)/value", ["text": text])
    }

    /// The viewport as a phone (`mobile`: the page's viewport meta applies) or a desktop window.
    func viewport(width: Int, height: Int, mobile: Bool) async throws {
        try await sessionCommand("POST", "/goog/cdp/execute", ["cmd": "Emulation.setDeviceMetricsOverride",
                                                              "params": ["width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile]])
    }

    func colorScheme(_ scheme: String) async throws {
        try await sessionCommand("POST", "/goog/cdp/execute", ["cmd": "Emulation.setEmulatedMedia",
                                                              "params": ["features": [["name": "prefers-color-scheme", "value": scheme]]]])
    }

    /// The browser log since the last call.
    func log() async throws -> [LogEntry] {
        let entries = try await sessionCommand("POST", "/se/log", ["type": "browser"]) as? [[String: Any]] ?? []
        return entries.map { LogEntry(level: $0["level"] as? String ?? "", source: $0["source"] as? String ?? "", message: $0["message"] as? String ?? "") }
    }

    /// A PNG of the viewport, or of the whole page.
    func screenshot(fullPage: Bool = false) async throws -> Data {
        let base64: String?
        if fullPage {
            let size = try await run("return [document.scrollingElement.scrollWidth, document.scrollingElement.scrollHeight]") as? [Int] ?? [1, 1]
            let clip: [String: Any] = ["x": 0, "y": 0, "width": size[0], "height": size[1], "scale": 1]
            let value = try await sessionCommand("POST", "/goog/cdp/execute", ["cmd": "Page.captureScreenshot",
                                                                                "params": ["format": "png", "captureBeyondViewport": true, "clip": clip]])
            base64 = (value as? [String: Any])?["data"] as? String
        } else {
            base64 = try await sessionCommand("GET", "/screenshot") as? String
        }
        guard let base64, let data = Data(base64Encoded: base64) else { throw Failure(description: "no screenshot") }
        return data
    }

    /// One request and its answer. chromedriver keeps the connection open whatever the request
    /// says, so the answer ends at its Content-Length, not at the connection's end.
    static func exchange(port: Int, method: String, path: String, body: Data) throws -> HTTPReply {
        let fd = try HTTPClient.connectLoopback(port: port)
        defer { close(fd) }
        var head = "\(method) \(path) HTTP/1.1\r\nHost: 127.0.0.1:\(port)\r\nConnection: close\r\n"
        if !body.isEmpty { head += "Content-Type: application/json; charset=utf-8\r\n" }
        head += "Content-Length: \(body.count)\r\n\r\n"
        let request = Data(head.utf8) + body
        let sent = request.withUnsafeBytes { send(fd, $0.baseAddress!, $0.count, Int32(MSG_NOSIGNAL)) }
        guard sent == request.count else { throw Failure(description: "\(method) \(path): the request was not sent") }
        var response = Data()
        var buffer = [UInt8](repeating: 0, count: 65536)
        while true {
            if let end = response.range(of: Data("\r\n\r\n".utf8)) {
                let headers = String(decoding: response[..<end.lowerBound], as: UTF8.self).lowercased()
                let length = headers.components(separatedBy: "\r\n").first { $0.hasPrefix("content-length:") }
                    .flatMap { Int($0.dropFirst("content-length:".count).trimmingCharacters(in: .whitespaces)) }
                if let length, response.count - end.upperBound >= length { break }
            }
            let n = recv(fd, &buffer, buffer.count, 0)
            if n <= 0 { break }
            response.append(contentsOf: buffer[0..<n])
        }
        return try HTTPClient.parse(response)
    }

    /// A port nothing listens on now (the kernel's pick for port 0).
    static func freePort() throws -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw Failure(description: "socket: \(errno)") }
        defer { close(fd) }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = 0
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) == 0 && getsockname(fd, $0, &length) == 0 }
        }
        guard bound else { throw Failure(description: "bind: \(errno)") }
        return Int(UInt16(bigEndian: addr.sin_port))
    }
}
