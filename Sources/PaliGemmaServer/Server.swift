import Dispatch
import Foundation
import Hummingbird
import Logging
import Imaging
import MaskDecoder
import NIOCore
import PaliGemma
import ServiceLifecycle

/// Limits and addresses of the server.
public struct ServerConfiguration: Sendable {
    public var host: String
    /// 0 picks a free port (see `onServerRunning` of `makeServerApplication`).
    public var port: Int
    /// The model's name in `/health` (default: the checkpoint directory's name).
    public var modelName: String?
    /// Larger request bodies are refused with 413.
    public var maxBodyBytes: Int
    /// Generations that run at once, sharing each decode step (continuous batching); 1 runs one
    /// at a time. More wait in the queue.
    public var maxSequences: Int = 4
    /// While a request's image is encoded and its prompt prefilled, the share of time the running
    /// generations' decode steps may take (``BatchedDecoding/decodeShareBetweenLayers``).
    public var decodeShare: Double = 0.25
    /// Requests that may wait for a generation slot; more are refused with 503.
    public var maxWaiting: Int
    /// Largest `max_new_tokens` accepted (bounds the KV cache a request can allocate).
    public var maxNewTokensLimit: Int
    /// Longest prompt accepted, in characters.
    public var maxPromptCharacters: Int
    /// Largest image accepted, in pixels (nil: the pipeline's `ImageLoader.maxPixels`).
    public var maxImagePixels: Int?
    /// Decoded images held at once (the one generating and the next); more wait undecoded.
    public var maxDecodedImages: Int = 2
    /// Encoded images kept for reuse when the same picture comes again (0: none).
    public var cachedImages: Int = 4
    /// Open connections at most; more are closed as they arrive, so idle ones cannot use up the
    /// process's file descriptors.
    public var maxConnections: Int = 256
    /// Origin allowed to call the API from a browser (CORS); nil: none besides the page itself.
    public var corsOrigin: String?
    /// When set, every /v1/ route needs `Authorization: Bearer <apiKey>`.
    public var apiKey: String?
    /// A connection that sends nothing for this long (between requests, or in the middle of a
    /// body) is closed.
    public var idleTimeoutSeconds: Int = 30
    /// KV cache the running generations may reserve together, in MB: a request reserves its
    /// prompt plus `max_new_tokens` positions; one that does not fit waits, one larger than the
    /// whole budget is refused.
    public var maxKVMegabytes: Int = 8192
    /// On SIGINT or SIGTERM, running requests (streams included) may finish for this long before
    /// they are cut (``runServer(service:onServerRunning:)``).
    public var shutdownTimeoutSeconds: Int = 30

    public init(host: String = "127.0.0.1", port: Int = 8080, modelName: String? = nil, maxBodyBytes: Int = 32 << 20,
                maxWaiting: Int = 8, maxNewTokensLimit: Int = 1024, maxPromptCharacters: Int = 4096,
                maxImagePixels: Int? = nil) {
        self.host = host
        self.port = port
        self.modelName = modelName
        self.maxBodyBytes = maxBodyBytes
        self.maxWaiting = maxWaiting
        self.maxNewTokensLimit = maxNewTokensLimit
        self.maxPromptCharacters = maxPromptCharacters
        self.maxImagePixels = maxImagePixels
    }
}

/// The model behind the HTTP API: parses requests, serialises generations, shapes answers.
public final class PaliGemmaService: Sendable {
    public let pipeline: PaliGemmaPipeline
    public let segmenter: Segmenter?
    public let configuration: ServerConfiguration
    let gate: InferenceGate
    let decodeSlots: DecodeSlots
    /// Requests admitted and not yet answered, at most `maxWaiting` + 1.
    let admission: Admission
    /// Encodings of the last images seen.
    let imageCache: EncodedImageCache
    /// What `/metrics` reports.
    let metrics = ServerMetrics()
    /// The shared decode steps' counts when the service was made (the model may have run before).
    private let stepsAtStart: BatchedDecoding.Counts?
    let imageLoader: ImageLoader

    /// When the service started (Unix seconds), for `/v1/models`.
    let startedAt = Int(Date().timeIntervalSince1970)

    /// The shared decode steps counted since the service was made (nil without shared steps).
    var stepsSinceStart: BatchedDecoding.Counts? {
        guard let start = stepsAtStart, let now = pipeline.model.batchedDecoding?.counts else { return nil }
        return now.since(start)
    }

    public init(pipeline: PaliGemmaPipeline, segmenter: Segmenter?, configuration: ServerConfiguration = ServerConfiguration()) {
        self.pipeline = pipeline
        self.segmenter = segmenter
        self.configuration = configuration
        let shared = configuration.maxSequences > 1
        if shared {
            let batching = pipeline.model.enableBatchedDecoding(maxSequences: configuration.maxSequences)
            batching.decodeShareBetweenLayers = configuration.decodeShare
            stepsAtStart = batching.counts
        } else {
            stepsAtStart = nil
        }
        gate = InferenceGate(maxWaiting: configuration.maxWaiting, slots: shared ? configuration.maxSequences : 1,
                             kvBudget: configuration.maxKVMegabytes.multipliedReportingOverflow(by: 1 << 20).overflow
                                ? .max : configuration.maxKVMegabytes << 20)
        decodeSlots = DecodeSlots(count: configuration.maxDecodedImages)
        admission = Admission(maxWaiting: configuration.maxWaiting)
        imageCache = EncodedImageCache(capacity: configuration.cachedImages)
        var loader = pipeline.imageLoader
        if let limit = configuration.maxImagePixels { loader.maxPixels = min(loader.maxPixels, limit) }
        imageLoader = loader
    }

    public var modelName: String { configuration.modelName ?? pipeline.model.directory.lastPathComponent }

    /// The routes: `GET /`, `GET /health`, `POST /v1/generate` (`?stream=true` for SSE), `POST /v1/stream`,
    /// and OpenAI's `GET /v1/models` and `POST /v1/chat/completions`.
    public func router() -> Router<ServerRequestContext> {
        let router = Router(context: ServerRequestContext.self)
        router.add(middleware: AccessLogMiddleware(metrics: metrics))
        if let origin = configuration.corsOrigin {
            router.add(middleware: CORSMiddleware(allowOrigin: .custom(origin), allowHeaders: [.accept, .authorization, .contentType],
                                                  allowMethods: [.get, .post, .head, .options]))
        }
        router.add(middleware: JSONErrorMiddleware())
        router.add(middleware: MethodNotAllowedMiddleware(routes: [
            "/": [.get, .head], "/health": [.get, .head], "/examples": [.get], "/metrics": [.get, .head], "/v1/models": [.get, .head],
            "/v1/generate": [.post], "/v1/stream": [.post], "/v1/chat/completions": [.post],
        ]))
        if let key = configuration.apiKey { router.add(middleware: APIKeyMiddleware(key: key)) }
        // One self-contained document (no external resources, no framework), Resources/index.html:
        // it posts to /v1/generate?stream=true, shows the text as the tokens arrive, and draws
        // boxes and masks over the image.
        router.get("/") { _, _ in
            Response(status: .ok,
                     headers: [.contentType: "text/html; charset=utf-8", .cacheControl: "no-store"],
                     body: .init(byteBuffer: ByteBuffer(string: indexHTML)))
        }
        router.get("/health") { [self] _, _ in try await healthResponse() }
        router.get("/metrics") { [self] _, _ in
            Response(status: .ok, headers: [.contentType: "text/plain; version=0.0.4; charset=utf-8"],
                     body: .init(byteBuffer: ByteBuffer(string: metrics.text(busy: await gate.running, waiting: await waitingCount(),
                                                                                steps: stepsSinceStart))))
        }
        // HEAD: the GET answer's status and headers, no body.
        for path in ["/", "/health", "/metrics", "/v1/models"] {
            router.head(RouterPath(path)) { [self] _, _ in
                let full: Response
                switch path {
                case "/health": full = try await healthResponse()
                case "/v1/models": full = try modelsResponse()
                default: full = Response(status: .ok, headers: [.contentType: path == "/" ? "text/html; charset=utf-8" : "text/plain; charset=utf-8"])
                }
                return Response(status: full.status, headers: full.headers)
            }
        }
        router.post("/v1/generate") { [self] request, context in
            let stream = request.uri.queryParameters["stream"].map { ["1", "true", "yes"].contains($0.lowercased()) } ?? false
            return try await generate(request, stream: stream, clientGone: context.clientGoneFlag())
        }
        router.post("/v1/stream") { [self] request, context in
            try await generate(request, stream: true, clientGone: context.clientGoneFlag())
        }
        // OpenAI's protocol, for the clients that speak it.
        router.get("/v1/models") { [self] _, _ in try modelsResponse() }
        router.post("/v1/chat/completions") { [self] request, context in
            try await chatCompletions(request, clientGone: context.clientGoneFlag())
        }
        // The page's example images and model-fitting defaults (PageResources.swift).
        addPageRoutes(to: router)
        return router
    }

    /// Requests admitted but not generating: parsing, decoding or queued.
    func waitingCount() async -> Int { max(0, admission.count - (await gate.active)) }

    func healthResponse() async throws -> Response {
        let health = Health(status: "ok", model: modelName, imageSize: pipeline.model.imageSize,
                            imageTokens: pipeline.model.numImageTokens, segmentation: segmenter != nil,
                            busy: await gate.running, waiting: await waitingCount(),
                            maxWaiting: configuration.maxWaiting, maxBodyBytes: configuration.maxBodyBytes,
                            maxNewTokens: configuration.maxNewTokensLimit)
        return try jsonResponse(health)
    }

    struct Health: Encodable {
        let status: String, model: String, imageSize: Int, imageTokens: Int, segmentation: Bool
        let busy: Bool, waiting: Int, maxWaiting: Int, maxBodyBytes: Int, maxNewTokens: Int
        enum CodingKeys: String, CodingKey {
            case status, model, imageSize = "image_size", imageTokens = "image_tokens", segmentation, busy, waiting
            case maxWaiting = "max_waiting", maxBodyBytes = "max_body_bytes", maxNewTokens = "max_new_tokens"
        }
    }

    // MARK: generation

    /// - Parameter clientGone: set when the connection closes; the generation stops at its next token.
    func generate(_ request: Request, stream: Bool, clientGone: CancellationFlag) async throws -> Response {
        let start = monotonicSeconds()
        let body = try await readBody(request)
        // Admit first: a request the queue would refuse costs no parsing and no decoding.
        let ticket = try admission.admit()
        if await gate.isFull { throw APIError.busy(waiting: await gate.waiting) }
        let contentType = request.headers[.contentType]
        let parsed = try await offload { try GenerateRequest.parse(body: body, contentType: contentType) }
        try validate(parsed)
        let cost = try kvCost(parsed)
        let images = try await decode(parsed.images, name: "image")
        if stream {
            return streamingResponse(parsed, images: images, ticket: ticket, cost: cost, start: start, cancel: clientGone)
        }
        defer { images.release(); ticket.release() }
        let (pipeline, prompt, options) = (self.pipeline, parsed.prompt, parsed.options)
        let waitStart = monotonicSeconds()
        try await gate.acquire(unless: clientGone, cost: cost)
        let queued = monotonicSeconds() - waitStart
        let (segmenter, imageCache) = (self.segmenter, self.imageCache)
        let result = try await gate.executeThenRelease(cost: cost) {
            try runGeneration(pipeline: pipeline, images: images, prompt: prompt, options: options, segmenter: segmenter, cache: imageCache,
                              cancel: clientGone, onToken: nil)
        }.get()
        if clientGone.isCancelled { throw APIError.clientGone }
        return try jsonResponse(try await postprocess(result, queued: queued, start: start))
    }

    /// Server-Sent Events: `token` per token, then `done` with the full result (or `error`).
    func streamingResponse(_ parsed: GenerateRequest, images: DecodedImages, ticket: Admission.Ticket, cost: Int,
                           start: Double, cancel: CancellationFlag) -> Response {
        let headers: HTTPFields = [.contentType: "text/event-stream; charset=utf-8", .cacheControl: "no-store"]
        return Response(status: .ok, headers: headers, body: ResponseBody { [self] writer in
            defer { images.release(); ticket.release() }
            // Waiting (with `queued` events while other generations hold every slot), then the
            // tokens, all through one stream of events.
            let (events, continuation) = AsyncStream.makeStream(of: String.self)
            let (pipeline, prompt, options, segmenter, imageCache) = (self.pipeline, parsed.prompt, parsed.options, self.segmenter, self.imageCache)
            let generation = Task { () -> (Result<TaskResult, Error>, Double) in
                defer { continuation.finish() }
                let waitStart = monotonicSeconds()
                do {
                    try await gate.acquire(unless: cancel, cost: cost) { ahead in
                        continuation.yield(sse("queued", "{\"position\":\(ahead)}"))
                    }
                } catch {
                    return (.failure(error), 0)
                }
                let queued = monotonicSeconds() - waitStart
                let outcome = await gate.executeThenRelease(cost: cost) {
                    try runGeneration(pipeline: pipeline, images: images, prompt: prompt, options: options, segmenter: segmenter, cache: imageCache,
                                      cancel: cancel) { token in
                        if let data = try? encoder().encode(token) {
                            continuation.yield(sse("token", String(decoding: data, as: UTF8.self)))
                        }
                    }
                }
                return (outcome, queued)
            }
            let clientGone = await relay(events, to: &writer, cancel: cancel)
            let (outcome, queued) = await generation.value
            if clientGone { return }
            let final: String
            switch outcome {
            case let .success(r):
                do {
                    let done = try await postprocess(r, queued: queued, start: start)
                    final = sse("done", String(decoding: try encoder().encode(done), as: UTF8.self))
                } catch {
                    final = sse("error", APIError.from(error).json)
                }
            case let .failure(error):
                final = sse("error", APIError.from(error).json)
            }
            try await writer.write(ByteBuffer(string: final))
            try await writer.finish(nil)
        })
    }

    /// The timings of the whole request.
    func postprocess(_ result: TaskResult, queued: Double, start: Double) async throws -> TaskResult {
        var r = result
        metrics.recordGeneration(tokens: r.tokenIDs.count, decodeSeconds: r.timings.decodeSeconds,
                                 tokensPerSecond: r.timings.decodeTokensPerSecond)
        r.timings.queueSeconds = queued
        r.timings.totalSeconds = monotonicSeconds() - start
        return r
    }

    /// Bytes of KV cache a request reserves: its prompt plus `max_new_tokens` positions, float32
    /// keys and values in every layer. Refused when the whole budget would not hold it.
    func kvCost(_ request: GenerateRequest) throws -> Int {
        let t = pipeline.model.config.text
        let positions = pipeline.promptTokens(request.prompt, images: request.images.count).ids.count + request.options.maxNewTokens
        let bytes = positions * t.numHiddenLayers * 2 * t.numKeyValueHeads * t.headDim * 4
        let budget = configuration.maxKVMegabytes
        guard bytes <= budget << 20 else {
            throw APIError.badRequest("invalid_option", "the prompt and max_new_tokens need \(bytes >> 20) MB of KV cache; this server allows \(budget) MB at once (--max-kv-mb); ask for fewer tokens")
        }
        return bytes
    }

    /// Refuses prompts and options that make no sense before any model work.
    func validate(_ request: GenerateRequest) throws {
        let prompt = request.prompt.trimmingCharacters(in: .whitespacesAndNewlines)
        guard !prompt.isEmpty else { throw APIError.badRequest("invalid_prompt", "the prompt is empty; e.g. \"caption en\"") }
        guard request.prompt.count <= configuration.maxPromptCharacters else {
            throw APIError.badRequest("invalid_prompt", "the prompt has \(request.prompt.count) characters; at most \(configuration.maxPromptCharacters) are accepted")
        }
        // Control tokens typed into the prompt (e.g. "<image>") would fail in prefill; refuse them
        // now, so that a streaming request gets a status rather than an error event.
        let imageID = pipeline.tokenizer.imageTokenID
        let found = pipeline.promptTokens(request.prompt).ids.reduce(0) { $0 + ($1 == imageID ? 1 : 0) }
        if found != pipeline.model.numImageTokens {
            throw APIError.badRequest("invalid_prompt", "the prompt contains <image>, which stands for the image's own tokens; remove it")
        }
        try request.options.validate()
        guard request.options.maxNewTokens <= configuration.maxNewTokensLimit else {
            throw APIError.badRequest("invalid_option", "max_new_tokens must be in 1…\(configuration.maxNewTokensLimit) on this server, got \(request.options.maxNewTokens)")
        }
    }

    /// Decodes a request's images once a decode slot is free; the slot is held until they are
    /// encoded (or the request ends).
    func decode(_ files: [Data], name: String) async throws -> DecodedImages {
        let lease = await decodeSlots.take()
        let loader = imageLoader
        do {
            let images = try await offload {
                try files.enumerated().map { i, data in try loader.decode(data, name: files.count == 1 ? name : "\(name) \(i + 1)") }
            }
            return DecodedImages(images, lease: lease)
        } catch {
            lease.release()
            throw error
        }
    }

    /// The whole body, refusing more than `maxBodyBytes` (413) without buffering it.
    func readBody(_ request: Request) async throws -> Data {
        let limit = configuration.maxBodyBytes
        if let length = request.headers[.contentLength].flatMap({ Int($0) }), length > limit {
            throw APIError.bodyTooLarge(limit: limit)
        }
        var buffer = ByteBuffer()
        // Past the limit the rest is read and dropped (up to as much again, at least 64 MB), so a
        // client that sends its whole body before reading gets its 413 instead of a stalled send.
        let drainLimit = max(limit, 64 << 20)
        var dropped = 0, refused = false
        do {
            for try await var chunk in request.body {
                if refused {
                    dropped += chunk.readableBytes
                    if dropped > drainLimit { break }
                    continue
                }
                guard buffer.readableBytes + chunk.readableBytes <= limit else {
                    refused = true
                    dropped = buffer.readableBytes + chunk.readableBytes
                    buffer = ByteBuffer()
                    continue
                }
                buffer.writeBuffer(&chunk)
            }
            if refused { throw APIError.bodyTooLarge(limit: limit) }
        } catch let error as APIError {
            throw error
        } catch {
            // A malformed chunked encoding, or a client gone mid-body: the request's fault.
            throw APIError.badRequest("invalid_body", "the request body could not be read (\(error))")
        }
        return Data(buffer.readableBytesView)
    }
}

/// Writes a stream's events as they come; a client gone cancels the generation at its next token
/// (the rest of the events are drained unwritten). Returns whether the client went away.
func relay(_ events: AsyncStream<String>, to writer: inout any ResponseBodyWriter, cancel: CancellationFlag) async -> Bool {
    var clientGone = false
    for await event in events where !clientGone {
        do { try await writer.write(ByteBuffer(string: event)) } catch {
            clientGone = true
            cancel.cancel()
        }
    }
    return clientGone
}

/// Runs CPU work (image decoding, mask placement) off Swift's cooperative threads.
func offload<T>(_ work: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<T, Error>) in
        DispatchQueue.global(qos: .userInitiated).async { continuation.resume(with: Result { try work() }) }
    }
}

func offload<T>(_ work: @escaping @Sendable () -> T) async -> T {
    await withCheckedContinuation { (continuation: CheckedContinuation<T, Never>) in
        DispatchQueue.global(qos: .userInitiated).async { continuation.resume(returning: work()) }
    }
}

func encoder() -> JSONEncoder { TaskResult.jsonEncoder() }

func jsonResponse(_ value: some Encodable, status: HTTPResponse.Status = .ok) throws -> Response {
    let data = try encoder().encode(value)
    return Response(status: status, headers: [.contentType: "application/json; charset=utf-8"],
                    body: .init(byteBuffer: ByteBuffer(bytes: data)))
}

/// One Server-Sent Event (`data` is one line of JSON).
func sse(_ event: String, _ data: String) -> String { "event: \(event)\ndata: \(data)\n\n" }

/// The HTTP server for `pipeline`, bound to `host:port`. Run it with `try await app.runService()`.
///
/// - Parameters:
///   - segmenter: big_vision's mask decoder; without it `segment` prompts return boxes only.
///   - onServerRunning: called with the bound port once the server listens (useful with port 0).
public func makeServerApplication(pipeline: PaliGemmaPipeline, segmenter: Segmenter? = nil,
                                  host: String = "127.0.0.1", port: Int = 8080,
                                  configuration: ServerConfiguration = ServerConfiguration(),
                                  onServerRunning: @escaping @Sendable (Int) async -> Void = { _ in }) -> some ApplicationProtocol {
    var config = configuration
    config.host = host
    config.port = port
    return makeServerApplication(service: PaliGemmaService(pipeline: pipeline, segmenter: segmenter, configuration: config),
                                 onServerRunning: onServerRunning)
}

/// The HTTP server for an existing service (its configuration gives the address).
public func makeServerApplication(service: PaliGemmaService,
                                  onServerRunning: @escaping @Sendable (Int) async -> Void = { _ in }) -> some ApplicationProtocol {
    let limiter = ConnectionLimiter.Counter(limit: service.configuration.maxConnections)
    let idle = service.configuration.idleTimeoutSeconds
    let maxBody = service.configuration.maxBodyBytes
    return Application(router: service.router(),
                server: .http1(configuration: .init(additionalChannelHandlers: [ConnectionLimiter(counter: limiter),
                                                                                HTTP1ConnectionRules.Installer(maxBodyBytes: maxBody)],
                                                    idleTimeout: .seconds(Int64(idle)))),
                configuration: .init(address: .hostname(service.configuration.host, port: service.configuration.port),
                                     serverName: "paligemma"),
                onServerRunning: { channel in await onServerRunning(channel.localAddress?.port ?? service.configuration.port) })
}

/// Serves `service` until SIGINT or SIGTERM, then stops taking connections, lets the requests
/// already running (streams included) finish for up to `shutdownTimeoutSeconds`, cancels what is
/// left, and returns.
public func runServer(service: PaliGemmaService, onServerRunning: @escaping @Sendable (Int) async -> Void = { _ in }) async throws {
    let app = makeServerApplication(service: service, onServerRunning: onServerRunning)
    var config = ServiceGroupConfiguration(services: [app], gracefulShutdownSignals: [.sigterm, .sigint],
                                           logger: Logger(label: "paligemma"))
    config.maximumGracefulShutdownDuration = .seconds(max(0, service.configuration.shutdownTimeoutSeconds))
    try await ServiceGroup(configuration: config).run()
}
