import Foundation
import Hummingbird
import Imaging
import NIOCore
import PaliGemma

/// A `POST /v1/chat/completions` body as OpenAI's protocol defines it, reduced to what
/// PaliGemma can do: one image (a `data:` URL in an `image_url` part) and one prompt (the text
/// parts of the last user message: PaliGemma's task prompts such as `caption en` or
/// `detect cat` pass through unchanged).
struct ChatRequest: Sendable {
    var model: String?
    var images: [Data]
    var prompt: String
    var options: GenerationOptions
    var stream: Bool
    var includeUsage: Bool
    var logprobs: Bool
    var stop: [String]

    /// Fields clients send that change nothing here (at their neutral values).
    static let accepted: Set<String> = [
        "model", "messages", "max_tokens", "max_completion_tokens", "temperature", "top_p", "top_k", "seed", "stop", "n",
        "stream", "stream_options", "logprobs", "top_logprobs", "user", "frequency_penalty", "presence_penalty",
    ]

    static func parse(body: Data) throws -> ChatRequest {
        guard !body.isEmpty else { throw APIError.badRequest("invalid_json", "the request body is empty; send a JSON object with \"messages\"") }
        guard let object = try? JSONSerialization.jsonObject(with: body) else {
            throw APIError.badRequest("invalid_json", "the request body is not valid JSON")
        }
        guard let fields = object as? [String: Any] else { throw APIError.badRequest("invalid_json", "the request body must be a JSON object") }
        if let unknown = fields.keys.filter({ !accepted.contains($0) }).sorted().first {
            throw APIError(.badRequest, code: "unknown_field", message: "unknown field '\(unknown)'", param: unknown)
        }
        func number(_ key: String) throws -> Double? {
            guard let value = fields[key], !(value is NSNull) else { return nil }
            // JSON true/false arrive as NSNumber too, with the objCType of a C char.
            guard let n = value as? NSNumber, String(cString: n.objCType) != "c" else {
                throw APIError(.badRequest, code: "invalid_option", message: "'\(key)' must be a number", param: key)
            }
            return n.doubleValue
        }
        func integer(_ key: String) throws -> Int? {
            guard let v = try number(key) else { return nil }
            guard v == v.rounded(), abs(v) < 1e15 else {
                throw APIError(.badRequest, code: "invalid_option", message: "'\(key)' must be an integer", param: key)
            }
            return Int(v)
        }
        func flag(_ key: String) throws -> Bool {
            guard let value = fields[key], !(value is NSNull) else { return false }
            guard let b = value as? Bool else { throw APIError(.badRequest, code: "invalid_option", message: "'\(key)' must be true or false", param: key) }
            return b
        }
        if let n = try integer("n"), n != 1 {
            throw APIError(.badRequest, code: "invalid_option", message: "'n' must be 1: one answer per request", param: "n")
        }
        if let k = try integer("top_logprobs"), k != 0 {
            throw APIError(.badRequest, code: "invalid_option", message: "'top_logprobs' is not supported (each token's own log-probability is, with 'logprobs': true)", param: "top_logprobs")
        }
        for key in ["frequency_penalty", "presence_penalty"] {
            if let v = try number(key), v != 0 {
                throw APIError(.badRequest, code: "invalid_option", message: "'\(key)' is not supported; leave it at 0", param: key)
            }
        }
        var options = GenerationOptions()
        if let v = try integer("max_completion_tokens") ?? integer("max_tokens") { options.maxNewTokens = v }
        if let v = try number("temperature") { options.temperature = Float(v) }
        if let v = try number("top_p") { options.topP = Float(v) }
        if let v = try integer("top_k") { options.topK = v }
        if let v = try integer("seed") {
            // OpenAI's seeds may be negative; any integer names one random stream.
            options.seed = UInt64(bitPattern: Int64(v))
        } else {
            options.seed = UInt64.random(in: 0...UInt64.max)
        }
        var stop: [String] = []
        switch fields["stop"] {
        case nil, is NSNull: break
        case let s as String: stop = [s]
        case let list as [Any]:
            stop = try list.map {
                guard let s = $0 as? String else { throw APIError(.badRequest, code: "invalid_option", message: "'stop' must be a string or a list of strings", param: "stop") }
                return s
            }
        default: throw APIError(.badRequest, code: "invalid_option", message: "'stop' must be a string or a list of strings", param: "stop")
        }
        stop = stop.filter { !$0.isEmpty }
        guard stop.count <= 4 else { throw APIError(.badRequest, code: "invalid_option", message: "'stop' takes at most 4 strings", param: "stop") }
        var includeUsage = false
        if let so = fields["stream_options"], !(so is NSNull) {
            guard let o = so as? [String: Any] else {
                throw APIError(.badRequest, code: "invalid_option", message: "'stream_options' must be an object", param: "stream_options")
            }
            includeUsage = (o["include_usage"] as? Bool) ?? false
        }
        let (images, prompt) = try content(of: fields["messages"])
        return ChatRequest(model: fields["model"] as? String, images: images, prompt: prompt, options: options,
                           stream: try flag("stream"), includeUsage: includeUsage, logprobs: try flag("logprobs"), stop: stop)
    }

    /// The images (those of the last message that has any, in order: several go into one
    /// prompt) and the prompt (the last user message's text).
    static func content(of messages: Any?) throws -> ([Data], String) {
        guard let list = messages as? [Any], !list.isEmpty else {
            throw APIError(.badRequest, code: "missing_field", message: "'messages' must be a non-empty list of messages", param: "messages")
        }
        var imageURLs: [String] = []
        var prompt: String?
        for (i, item) in list.enumerated() {
            guard let message = item as? [String: Any], let role = message["role"] as? String else {
                throw APIError(.badRequest, code: "invalid_message", message: "messages[\(i)] must be an object with a 'role'", param: "messages")
            }
            var texts: [String] = [], urls: [String] = []
            switch message["content"] {
            case let s as String: texts = [s]
            case let parts as [Any]:
                for (j, p) in parts.enumerated() {
                    guard let part = p as? [String: Any], let type = part["type"] as? String else {
                        throw APIError(.badRequest, code: "invalid_message", message: "messages[\(i)].content[\(j)] must be an object with a 'type'", param: "messages")
                    }
                    switch type {
                    case "text":
                        guard let t = part["text"] as? String else {
                            throw APIError(.badRequest, code: "invalid_message", message: "messages[\(i)].content[\(j)] has no 'text'", param: "messages")
                        }
                        texts.append(t)
                    case "image_url":
                        let url = (part["image_url"] as? [String: Any])?["url"] as? String ?? part["image_url"] as? String
                        guard let url else {
                            throw APIError(.badRequest, code: "invalid_message", message: "messages[\(i)].content[\(j)] has no image_url.url", param: "messages")
                        }
                        guard url.hasPrefix("data:") else {
                            throw APIError(.badRequest, code: "invalid_image_url",
                                           message: "image_url must be a data: URL (data:image/jpeg;base64,…); this server fetches nothing from the network",
                                           param: "messages")
                        }
                        urls.append(url)
                    default:
                        throw APIError(.badRequest, code: "invalid_message", message: "content part type '\(type)' is not supported (text, image_url)", param: "messages")
                    }
                }
            case nil, is NSNull: break
            default:
                throw APIError(.badRequest, code: "invalid_message", message: "messages[\(i)].content must be a string or a list of parts", param: "messages")
            }
            // PaliGemma answers one prompt: the last user message's text; system and assistant
            // turns carry nothing it was trained to use.
            if role == "user" { prompt = texts.joined(separator: " ") }
            if !urls.isEmpty { imageURLs = urls }
        }
        guard !imageURLs.isEmpty else {
            throw APIError(.badRequest, code: "missing_image", message: "no image: add a content part {\"type\": \"image_url\", \"image_url\": {\"url\": \"data:image/jpeg;base64,…\"}}", param: "messages")
        }
        guard let prompt, !prompt.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty else {
            throw APIError(.badRequest, code: "invalid_prompt", message: "the last user message has no text; PaliGemma needs a prompt such as \"caption en\" or \"answer en what is this?\"", param: "messages")
        }
        try GenerateRequest.checkImageCount(imageURLs.count)
        return (try imageURLs.map { try GenerateRequest.decodeBase64($0) }, prompt)
    }
}

/// Cuts generated text at the first stop string, holding back text that may be the start of
/// one, so that a stream never shows what the answer then drops.
struct StopMatcher {
    let stops: [String]
    private(set) var text = ""
    private(set) var emitted = 0  // characters of `text` already released
    private(set) var stopped = false

    init(_ stops: [String]) { self.stops = stops }

    /// Adds generated text; returns what may be released now.
    mutating func add(_ piece: String) -> String {
        guard !stopped else { return "" }
        text += piece
        if let cut = stops.compactMap({ text.range(of: $0)?.lowerBound }).min() {
            stopped = true
            return release(upTo: text.distance(from: text.startIndex, to: cut))
        }
        let hold = (stops.map(\.count).max() ?? 1) - 1
        return release(upTo: max(emitted, text.count - hold))
    }

    /// The rest at the end of generation.
    mutating func finish() -> String { stopped ? "" : release(upTo: text.count) }

    /// The whole answer as released.
    var answer: String { String(text.prefix(emitted)) }

    private mutating func release(upTo end: Int) -> String {
        guard end > emitted else { return "" }
        let start = text.index(text.startIndex, offsetBy: emitted), stop = text.index(text.startIndex, offsetBy: end)
        emitted = end
        return String(text[start..<stop])
    }
}

/// OpenAI's response and chunk shapes.
enum OpenAIShapes {
    struct Model: Encodable { let id: String; let object = "model"; let created: Int; let owned_by = "paligemma-swift" }
    struct ModelList: Encodable { let object = "list"; let data: [Model] }
    struct Usage: Encodable { let prompt_tokens: Int; let completion_tokens: Int; let total_tokens: Int }
    struct TokenLogProb: Encodable { let token: String; let logprob: Float?; let bytes: [UInt8]; let top_logprobs: [String] = [] }
    struct LogProbs: Encodable { let content: [TokenLogProb] }
    struct Message: Encodable { let role = "assistant"; let content: String }
    struct Choice: Encodable {
        let index = 0
        let message: Message
        let logprobs: LogProbs?
        let finish_reason: String

        enum CodingKeys: String, CodingKey { case index, message, logprobs, finish_reason }
        func encode(to encoder: Encoder) throws {
            var c = encoder.container(keyedBy: CodingKeys.self)
            try c.encode(index, forKey: .index)
            try c.encode(message, forKey: .message)
            try c.encode(logprobs, forKey: .logprobs)  // null, not absent
            try c.encode(finish_reason, forKey: .finish_reason)
        }
    }
    struct Completion: Encodable {
        let id: String
        let object = "chat.completion"
        let created: Int
        let model: String
        let choices: [Choice]
        let usage: Usage
        /// Beyond OpenAI's shape: the task's parsed answer (boxes, masks, timings), as /v1/generate gives it.
        let paligemma: TaskResult
    }
    struct Delta: Encodable { var role: String?; var content: String? }
    struct ChunkChoice: Encodable {
        let index = 0
        let delta: Delta
        let logprobs: LogProbs?
        let finish_reason: String?

        enum CodingKeys: String, CodingKey { case index, delta, logprobs, finish_reason }
        func encode(to encoder: Encoder) throws {
            var c = encoder.container(keyedBy: CodingKeys.self)
            try c.encode(index, forKey: .index)
            try c.encode(delta, forKey: .delta)
            try c.encode(logprobs, forKey: .logprobs)
            try c.encode(finish_reason, forKey: .finish_reason)
        }
    }
    struct Chunk: Encodable {
        let id: String
        let object = "chat.completion.chunk"
        let created: Int
        let model: String
        let choices: [ChunkChoice]
        let usage: Usage?

        enum CodingKeys: String, CodingKey { case id, object, created, model, choices, usage }
        func encode(to encoder: Encoder) throws {
            var c = encoder.container(keyedBy: CodingKeys.self)
            try c.encode(id, forKey: .id)
            try c.encode(object, forKey: .object)
            try c.encode(created, forKey: .created)
            try c.encode(model, forKey: .model)
            try c.encode(choices, forKey: .choices)
            try c.encode(usage, forKey: .usage)
        }
    }
}

extension PaliGemmaService {
    /// `GET /v1/models`: the one model this server runs.
    func modelsResponse() throws -> Response {
        try jsonResponse(OpenAIShapes.ModelList(data: [.init(id: modelName, created: startedAt)]))
    }

    /// `POST /v1/chat/completions`.
    /// - Parameter clientGone: set when the connection closes; the generation stops at its next token.
    func chatCompletions(_ request: Request, clientGone: CancellationFlag) async throws -> Response {
        let start = monotonicSeconds()
        let body = try await readBody(request)
        let ticket = try admission.admit()
        if await gate.isFull { throw APIError.busy(waiting: await gate.waiting) }
        let chat = try await offload { try ChatRequest.parse(body: body) }
        try validate(GenerateRequest(images: chat.images, prompt: chat.prompt, options: chat.options))
        let cost = try kvCost(GenerateRequest(images: chat.images, prompt: chat.prompt, options: chat.options))
        let images = try await decode(chat.images, name: "image_url")
        let id = "chatcmpl-" + UUID().uuidString.replacingOccurrences(of: "-", with: "").lowercased()
        let created = Int(Date().timeIntervalSince1970)
        if chat.stream {
            return chatStream(chat, images: images, ticket: ticket, cost: cost, id: id, created: created, start: start, cancel: clientGone)
        }
        defer { images.release(); ticket.release() }
        let waitStart = monotonicSeconds()
        let (pipeline, segmenter, imageCache) = (self.pipeline, self.segmenter, self.imageCache)
        try await gate.acquire(unless: clientGone, cost: cost)
        let result: (TaskResult, String, Bool) = try await gate.executeThenRelease(cost: cost) {
            var matcher = StopMatcher(chat.stop)
            let r = try runGeneration(pipeline: pipeline, images: images, prompt: chat.prompt, options: chat.options,
                                      segmenter: segmenter, cache: imageCache, cancel: clientGone) { _ in }
            // Stops are applied to the finished text here; the stream applies them as it goes.
            _ = matcher.add(r.text)
            _ = matcher.finish()
            return (r, matcher.answer, matcher.stopped)
        }.get()
        if clientGone.isCancelled { throw APIError.clientGone }
        var (task, text, stopped) = result
        metrics.recordGeneration(tokens: task.tokenIDs.count, decodeSeconds: task.timings.decodeSeconds,
                                 tokensPerSecond: task.timings.decodeTokensPerSecond)
        task.timings.queueSeconds = max(0, monotonicSeconds() - waitStart - task.timings.imageSeconds - task.timings.prefillSeconds - task.timings.decodeSeconds)
        task.timings.totalSeconds = monotonicSeconds() - start
        let tokens = stopped ? tokensCovering(text, of: task) : task.tokenIDs.count
        let choice = OpenAIShapes.Choice(message: .init(content: text),
                                         logprobs: chat.logprobs ? logProbs(task, count: tokens) : nil,
                                         finish_reason: stopped || task.finishReason == .stopToken ? "stop" : "length")
        let usage = OpenAIShapes.Usage(prompt_tokens: task.timings.promptTokens, completion_tokens: task.tokenIDs.count,
                                       total_tokens: task.timings.promptTokens + task.tokenIDs.count)
        return try jsonResponse(OpenAIShapes.Completion(id: id, created: created, model: chat.model ?? modelName,
                                                        choices: [choice], usage: usage, paligemma: task))
    }

    /// How many generated tokens it takes to spell `prefix` of the answer.
    func tokensCovering(_ prefix: String, of task: TaskResult) -> Int {
        var n = 0
        while n < task.tokenIDs.count, pipeline.tokenizer.decode(task.tokenIDs.prefix(n).map(Int32.init)).count < prefix.count { n += 1 }
        return n
    }

    /// Each generated token (the stop token excluded) with its log-probability.
    func logProbs(_ task: TaskResult, count: Int) -> OpenAIShapes.LogProbs {
        let eos = Set(pipeline.model.config.text.eosTokenIDs)
        let entries = zip(task.tokenIDs, task.tokenLogProbs).prefix(count).filter { !eos.contains($0.0) }.map { id, lp in
            let piece = pipeline.tokenizer.decode([Int32(id)], skipSpecialTokens: false)
            return OpenAIShapes.TokenLogProb(token: piece, logprob: lp.isFinite ? lp : nil, bytes: Array(piece.utf8))
        }
        return OpenAIShapes.LogProbs(content: entries)
    }

    /// The answer as `chat.completion.chunk` events, then `data: [DONE]`.
    func chatStream(_ chat: ChatRequest, images: DecodedImages, ticket: Admission.Ticket, cost: Int, id: String,
                    created: Int, start: Double, cancel: CancellationFlag) -> Response {
        let headers: HTTPFields = [.contentType: "text/event-stream; charset=utf-8", .cacheControl: "no-store"]
        let model = chat.model ?? modelName
        @Sendable func data(_ value: some Encodable) -> String {
            "data: " + String(decoding: (try? encoder().encode(value)) ?? Data("{}".utf8), as: UTF8.self) + "\n\n"
        }
        @Sendable func chunk(_ delta: OpenAIShapes.Delta, logprobs: OpenAIShapes.LogProbs? = nil, finish: String? = nil) -> String {
            data(OpenAIShapes.Chunk(id: id, created: created, model: model,
                                    choices: [.init(delta: delta, logprobs: logprobs, finish_reason: finish)], usage: nil))
        }
        return Response(status: .ok, headers: headers, body: ResponseBody { [self] writer in
            defer { images.release(); ticket.release() }
            do {
                try await gate.acquire(unless: cancel, cost: cost)
            } catch {
                try await writer.write(ByteBuffer(string: "data: " + APIError.from(error).json + "\n\n"))
                try await writer.finish(nil)
                return
            }
            let (events, continuation) = AsyncStream.makeStream(of: String.self)
            let (pipeline, segmenter, imageCache) = (self.pipeline, self.segmenter, self.imageCache)
            continuation.yield(chunk(.init(role: "assistant", content: "")))
            let generation = Task { () -> Result<(TaskResult, Bool), Error> in
                defer { continuation.finish() }
                return await gate.executeThenRelease(cost: cost) { () -> (TaskResult, Bool) in
                    var matcher = StopMatcher(chat.stop)
                    let eos = Set(pipeline.model.config.text.eosTokenIDs)
                    let task = try runGeneration(pipeline: pipeline, images: images, prompt: chat.prompt, options: chat.options,
                                                 segmenter: segmenter, cache: imageCache, cancel: cancel) { token in
                        let released = matcher.add(token.text)
                        var lp: OpenAIShapes.LogProbs?
                        if chat.logprobs, let tid = token.id, !eos.contains(tid) {
                            let piece = pipeline.tokenizer.decode([Int32(tid)], skipSpecialTokens: false)
                            lp = .init(content: [.init(token: piece, logprob: token.logProb.flatMap { $0.isFinite ? $0 : nil }, bytes: Array(piece.utf8))])
                        }
                        if !released.isEmpty || lp != nil { continuation.yield(chunk(.init(content: released), logprobs: lp)) }
                        if matcher.stopped { cancel.cancel() }
                    }
                    let rest = matcher.finish()
                    if !rest.isEmpty { continuation.yield(chunk(.init(content: rest))) }
                    return (task, matcher.stopped)
                }
            }
            let clientGone = await relay(events, to: &writer, cancel: cancel)
            let outcome = await generation.value
            if clientGone { return }
            var tail = ""
            switch outcome {
            case let .success((task, stopped)):
                metrics.recordGeneration(tokens: task.tokenIDs.count, decodeSeconds: task.timings.decodeSeconds,
                                         tokensPerSecond: task.timings.decodeTokensPerSecond)
                tail += chunk(.init(), finish: stopped || task.finishReason == .stopToken ? "stop" : "length")
                if chat.includeUsage {
                    let usage = OpenAIShapes.Usage(prompt_tokens: task.timings.promptTokens, completion_tokens: task.tokenIDs.count,
                                                   total_tokens: task.timings.promptTokens + task.tokenIDs.count)
                    tail += data(OpenAIShapes.Chunk(id: id, created: created, model: model, choices: [], usage: usage))
                }
            case let .failure(error):
                tail += "data: " + APIError.from(error).json + "\n\n"
            }
            tail += "data: [DONE]\n\n"
            try await writer.write(ByteBuffer(string: tail))
            try await writer.finish(nil)
        })
    }
}
