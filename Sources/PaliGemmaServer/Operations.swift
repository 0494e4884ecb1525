import Foundation
import PaliGemma
import Hummingbird
import Logging
import NIOCore

/// Counters behind `GET /metrics` (Prometheus text format), shared by every request.
final class ServerMetrics: @unchecked Sendable {
    // Everything below is only touched under `lock`.
    private let lock = NSLock()
    private var requests: [String: Int] = [:]              // "route|status" → count
    private var seconds: [String: (sum: Double, count: Int)] = [:]  // route → time to the response head
    private var generatedTokens = 0
    private var generations = 0
    private var decodeSeconds = 0.0
    private var lastTokensPerSecond = 0.0

    /// The routes metrics name; anything else counts as "other", so labels stay few.
    static let routes: Set<String> = ["/", "/health", "/metrics", "/v1/generate", "/v1/stream", "/v1/models", "/v1/chat/completions"]

    func recordRequest(path: String, status: Int, seconds elapsed: Double) {
        let route = Self.routes.contains(path) ? path : "other"
        lock.lock()
        requests["\(route)|\(status)", default: 0] += 1
        let s = seconds[route] ?? (0, 0)
        seconds[route] = (s.sum + elapsed, s.count + 1)
        lock.unlock()
    }

    func recordGeneration(tokens: Int, decodeSeconds seconds: Double, tokensPerSecond: Double) {
        lock.lock()
        generatedTokens += tokens
        generations += 1
        decodeSeconds += seconds
        if tokensPerSecond > 0 { lastTokensPerSecond = tokensPerSecond }
        lock.unlock()
    }

    /// The exposition text, with the queue's and the shared decode steps' state read by the caller.
    func text(busy: Bool, waiting: Int, steps: BatchedDecoding.Counts?) -> String {
        lock.lock()
        defer { lock.unlock() }
        var out = ""
        func metric(_ name: String, _ type: String, _ help: String, _ lines: [String]) {
            out += "# HELP \(name) \(help)\n# TYPE \(name) \(type)\n" + lines.map { $0 + "\n" }.joined()
        }
        metric("paligemma_requests_total", "counter", "Requests answered, by route and status.",
               requests.sorted { $0.key < $1.key }.map { key, n in
                   let parts = key.split(separator: "|", maxSplits: 1)
                   return "paligemma_requests_total{route=\"\(parts[0])\",status=\"\(parts[1])\"} \(n)"
               })
        metric("paligemma_request_seconds", "summary", "Time from a request's arrival to its response head (a stream's first byte).",
               seconds.sorted { $0.key < $1.key }.flatMap { route, s in
                   ["paligemma_request_seconds_sum{route=\"\(route)\"} \(s.sum)",
                    "paligemma_request_seconds_count{route=\"\(route)\"} \(s.count)"]
               })
        metric("paligemma_generations_total", "counter", "Generations finished.", ["paligemma_generations_total \(generations)"])
        metric("paligemma_generated_tokens_total", "counter", "Tokens generated.", ["paligemma_generated_tokens_total \(generatedTokens)"])
        metric("paligemma_decode_seconds_total", "counter", "Time spent decoding.", ["paligemma_decode_seconds_total \(decodeSeconds)"])
        metric("paligemma_decode_tokens_per_second", "gauge", "Decode speed of the last generation.",
               ["paligemma_decode_tokens_per_second \(lastTokensPerSecond)"])
        metric("paligemma_busy", "gauge", "1 while a generation runs.", ["paligemma_busy \(busy ? 1 : 0)"])
        metric("paligemma_queue_waiting", "gauge", "Requests waiting for the model.", ["paligemma_queue_waiting \(waiting)"])
        if let steps {
            metric("paligemma_decode_steps_total", "counter", "Decode steps run (each serves every sequence ready for a token).",
                   ["paligemma_decode_steps_total \(steps.steps)"])
            metric("paligemma_decode_step_sequences_total", "counter", "Sequences the decode steps served, summed (over steps: the mean batch).",
                   ["paligemma_decode_step_sequences_total \(steps.sequences)"])
            metric("paligemma_decode_steps_between_layers_total", "counter", "Decode steps run between the layers of a newcomer's image encoding or prefill.",
                   ["paligemma_decode_steps_between_layers_total \(steps.betweenLayers)"])
        }
        return out
    }
}

/// One access-log line per request (method, path, status, milliseconds, request id) through
/// swift-log, the request's id echoed in `X-Request-Id`, and the request counted in the metrics.
struct AccessLogMiddleware<Context: RequestContext>: RouterMiddleware {
    let metrics: ServerMetrics

    func handle(_ request: Request, context: Context,
                next: (Request, Context) async throws -> Response) async throws -> Response {
        let start = monotonicSeconds()
        // A client's own id is kept when it is short and plain; else one is made.
        let given = request.headers[.init("X-Request-Id")!].flatMap { id in
            id.count <= 64 && id.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "-" || $0 == "_" }) ? id : nil
        }
        let id = given ?? String(UUID().uuidString.prefix(8)).lowercased()
        var response: Response
        do {
            response = try await next(request, context)
        } catch {
            // Errors become JSON responses further in; anything else still gets logged.
            let e = APIError.from(error)
            log(request, status: Int(e.status.code), id: id, start: start, logger: context.logger)
            throw error
        }
        response.headers[.init("X-Request-Id")!] = id
        log(request, status: Int(response.status.code), id: id, start: start, logger: context.logger)
        return response
    }

    private func log(_ request: Request, status: Int, id: String, start: Double, logger: Logger) {
        let elapsed = monotonicSeconds() - start
        metrics.recordRequest(path: request.uri.path, status: status, seconds: elapsed)
        logger.info("\(request.method) \(request.uri.path) \(status) \(String(format: "%.1f", elapsed * 1000)) ms id=\(id)")
    }
}

/// `Authorization: Bearer KEY` on every `/v1/` route when the server has an API key.
struct APIKeyMiddleware<Context: RequestContext>: RouterMiddleware {
    let key: String

    func handle(_ request: Request, context: Context,
                next: (Request, Context) async throws -> Response) async throws -> Response {
        guard request.uri.path.hasPrefix("/v1/") else { return try await next(request, context) }
        let presented = request.headers[.authorization].flatMap { header -> String? in
            let parts = header.split(separator: " ", maxSplits: 1)
            return parts.count == 2 && parts[0].lowercased() == "bearer" ? String(parts[1]) : nil
        }
        // Compared in constant time, so the key cannot be guessed a byte at a time.
        guard let presented, Array(presented.utf8).count == Array(key.utf8).count,
              zip(presented.utf8, key.utf8).reduce(0, { $0 | ($1.0 ^ $1.1) }) == 0 else {
            throw APIError(.unauthorized, code: "invalid_api_key",
                           message: "this server needs an API key: send Authorization: Bearer <key> (the key given to --api-key)")
        }
        return try await next(request, context)
    }
}

/// `405 Method Not Allowed` with `Allow` for a known path asked with another method (instead of
/// the router's 404).
struct MethodNotAllowedMiddleware<Context: RequestContext>: RouterMiddleware {
    let routes: [String: [HTTPRequest.Method]]

    func handle(_ request: Request, context: Context,
                next: (Request, Context) async throws -> Response) async throws -> Response {
        if let allowed = routes[request.uri.path], !allowed.contains(request.method), request.method != .options {
            let list = allowed.map(\.rawValue).joined(separator: ", ")
            var response = APIError(.methodNotAllowed, code: "method_not_allowed",
                                    message: "\(request.uri.path) answers \(list), not \(request.method.rawValue)").response()
            response.headers[.allow] = list
            return response
        }
        return try await next(request, context)
    }
}
