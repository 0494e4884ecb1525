import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

/// One HTTP answer: status, headers (lower-cased names) and, unless streamed to a sink, the body.
struct HTTPResponse: Sendable {
    var status: Int
    var headers: [String: String]
    var body: Data
    var url: URL

    func header(_ name: String) -> String? { headers[name.lowercased()] }
}

/// A transport failure (no answer, or an answer cut short), as opposed to an HTTP error status.
struct TransportError: Error, Sendable {
    var url: URL
    var reason: String
}

/// Receives a streamed response body. Called on one serial queue, in order.
protocol BodySink: AnyObject {
    /// Called with the response head; return `true` to stream the body into ``write(_:)``,
    /// `false` to buffer it into ``HTTPResponse/body`` (error answers). Throwing aborts the transfer.
    func begin(_ response: HTTPResponse) throws -> Bool
    /// Called with each body chunk. Throwing aborts the transfer.
    func write(_ data: Data) throws
}

/// URLSession (libcurl-backed on Linux) behind a small async interface, with redirect control: HEAD requests for
/// hub metadata must read the first answer's headers, downloads follow redirects to the CDN without the token.
final class HTTPTransport: Sendable {
    let timeout: TimeInterval

    init(timeout: TimeInterval) { self.timeout = timeout }

    /// Sends `request`; follows redirects when `followRedirects` (dropping `Authorization` when the host
    /// changes); streams the body into `sink` when the sink accepts it, else buffers it.
    func send(_ request: URLRequest, followRedirects: Bool, sink: BodySink? = nil) async throws -> HTTPResponse {
        let config = URLSessionConfiguration.ephemeral
        config.requestCachePolicy = .reloadIgnoringLocalCacheData
        config.urlCache = nil
        config.timeoutIntervalForRequest = timeout
        config.timeoutIntervalForResource = 7 * 24 * 3600
        config.httpShouldSetCookies = false
        let queue = OperationQueue()
        queue.maxConcurrentOperationCount = 1
        let delegate = TaskDelegate(original: request, followRedirects: followRedirects, sink: sink)
        let session = URLSession(configuration: config, delegate: delegate, delegateQueue: queue)
        defer { session.finishTasksAndInvalidate() }
        var req = request
        req.timeoutInterval = timeout
        let task = session.dataTask(with: req)
        return try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (cont: CheckedContinuation<HTTPResponse, Error>) in
                delegate.setContinuation(cont)
                task.resume()
            }
        } onCancel: {
            task.cancel()
        }
    }
}

// @unchecked Sendable: `continuation` and `finished` are only touched under `lock`; the other
// state only by the delegate callbacks, which the session calls one at a time on its serial queue.
private final class TaskDelegate: NSObject, URLSessionDataDelegate, @unchecked Sendable {
    private let original: URLRequest
    private let followRedirects: Bool
    private let sink: BodySink?
    private let lock = NSLock()
    private var continuation: CheckedContinuation<HTTPResponse, Error>?
    private var response: HTTPResponse?
    private var streaming = false
    private var buffer = Data()
    private var sinkError: Error?
    private var finished: Result<HTTPResponse, Error>?

    init(original: URLRequest, followRedirects: Bool, sink: BodySink?) {
        self.original = original
        self.followRedirects = followRedirects
        self.sink = sink
    }

    func setContinuation(_ c: CheckedContinuation<HTTPResponse, Error>) {
        lock.lock()
        if let done = finished {
            lock.unlock()
            c.resume(with: done)
            return
        }
        continuation = c
        lock.unlock()
    }

    private func finish(_ result: Result<HTTPResponse, Error>) {
        lock.lock()
        let c = continuation
        continuation = nil
        if c == nil { finished = result }
        lock.unlock()
        c?.resume(with: result)
    }

    func urlSession(_ session: URLSession, task: URLSessionTask, willPerformHTTPRedirection response: HTTPURLResponse,
                    newRequest request: URLRequest, completionHandler: @escaping (URLRequest?) -> Void) {
        guard followRedirects else { return completionHandler(nil) }
        var next = request
        if next.url?.host != original.url?.host || next.url?.port != original.url?.port {
            next.setValue(nil, forHTTPHeaderField: "Authorization")
        }
        completionHandler(next)
    }

    func urlSession(_ session: URLSession, dataTask: URLSessionDataTask, didReceive response: URLResponse,
                    completionHandler: @escaping (URLSession.ResponseDisposition) -> Void) {
        guard let http = response as? HTTPURLResponse else {
            sinkError = TransportError(url: original.url!, reason: "not an HTTP response")
            return completionHandler(.cancel)
        }
        var headers: [String: String] = [:]
        for (k, v) in http.allHeaderFields {
            if let k = k as? String, let v = v as? String { headers[k.lowercased()] = v }
        }
        let r = HTTPResponse(status: http.statusCode, headers: headers, body: Data(), url: http.url ?? original.url!)
        self.response = r
        if let sink {
            do { streaming = try sink.begin(r) } catch {
                sinkError = error
                return completionHandler(.cancel)
            }
        }
        completionHandler(.allow)
    }

    func urlSession(_ session: URLSession, dataTask: URLSessionDataTask, didReceive data: Data) {
        guard sinkError == nil else { return }
        if streaming, let sink {
            do { try sink.write(data) } catch {
                sinkError = error
                dataTask.cancel()
            }
        } else if buffer.count < 1 << 24 {
            buffer.append(data)
        }
    }

    func urlSession(_ session: URLSession, task: URLSessionTask, didCompleteWithError error: Error?) {
        if let sinkError { return finish(.failure(sinkError)) }
        if let error {
            return finish(.failure(TransportError(url: original.url!, reason: Self.describe(error))))
        }
        guard var r = response else {
            return finish(.failure(TransportError(url: original.url!, reason: "no response")))
        }
        r.body = buffer
        finish(.success(r))
    }

    static func describe(_ error: Error) -> String {
        if let u = error as? URLError {
            switch u.code {
            case .timedOut: return "timed out"
            case .networkConnectionLost: return "connection lost"
            case .cannotConnectToHost: return "cannot connect to host"
            case .cannotFindHost: return "cannot find host"
            case .notConnectedToInternet: return "not connected to the internet"
            case .cancelled: return "cancelled"
            default: return u.localizedDescription
            }
        }
        return "\(error)"
    }
}
