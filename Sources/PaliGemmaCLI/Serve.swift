import ArgumentParser
import Foundation
import PaliGemma
import PaliGemmaServer

struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Serve a web page and an HTTP API for the model.",
        discussion: """
        GET / is a page to try the model in a browser: image, task, streamed text, boxes and masks. GET /health describes the model. POST /v1/generate takes {"image": base64, "prompt": …} (or a multipart form) and answers JSON; with ?stream=true, Server-Sent Events. OpenAI's protocol is served too: POST /v1/chat/completions (an image_url data URL and the prompt as text; plain or streamed) and GET /v1/models, so OpenAI clients work with base_url http://HOST:PORT/v1.

        Up to --max-sequences generations run at once and share each decode step (one pass over the weights serves them all), and keep stepping while a newcomer's image is encoded and its prompt prefilled (--decode-share); up to --max-waiting requests queue behind them, streams hear their place in the queue, and more are refused with 503. Masks for segment prompts use vae-oid.npz from --vae-oid, else the one in the model directory; without one, segment answers carry boxes only (and a note saying so).

        Example: paligemma serve --model google/paligemma2-3b-mix-448 --port 8080
        """)
    @OptionGroup var model: ModelOptions
    @Option(help: "Address to listen on (0.0.0.0 for every interface).") var host = "127.0.0.1"
    @Option(parsing: .unconditional, help: "Port to listen on, 0…65535 (0 picks a free one).") var port = 8080
    @Option(name: .customLong("vae-oid"), help: "big_vision's vae-oid.npz (mask decoder weights).") var vaeOID: String?
    @Option(name: .customLong("max-waiting"), parsing: .unconditional, help: "Requests that may wait for a generation slot (0…1024).") var maxWaiting = 8
    @Option(name: .customLong("shutdown-timeout"), parsing: .unconditional, help: "Seconds running requests may take to finish after SIGINT/SIGTERM (0…3600).") var shutdownTimeout = 30
    @Option(name: .customLong("max-kv-mb"), parsing: .unconditional, help: "KV cache the running generations may reserve together, in MB (16…1048576); a request reserves its prompt plus max_new_tokens positions.") var maxKVMB = 8192
    @Option(name: .customLong("max-sequences"), parsing: .unconditional, help: "Generations that run at once, sharing decode steps (1…8; 1 runs one at a time).") var maxSequences = 4
    @Option(name: .customLong("decode-share"), parsing: .unconditional, help: "While a newcomer's image is encoded and its prompt prefilled, the share of time the running generations keep (0…1): 0 prefills first (newcomers start sooner, running streams pause meanwhile), 0.5 takes equal turns, 1 steps between every two layers.") var decodeShare = 0.25
    @Option(name: .customLong("max-body-mb"), parsing: .unconditional, help: "Largest request body, in MB (1…1024).") var maxBodyMB = 32

    @Option(name: .customLong("max-connections"), parsing: .unconditional, help: "Open connections at most (1…65536); more are closed on arrival.") var maxConnections = 256
    @Option(name: .customLong("idle-timeout"), parsing: .unconditional, help: "Seconds a connection may send nothing before it is closed (1…3600).") var idleTimeout = 30

    @Option(name: .customLong("cors-origin"), help: "Let web pages from this origin call the API (e.g. https://example.org); default: none.") var corsOrigin: String?
    @Option(name: .customLong("api-key"), help: "Require Authorization: Bearer KEY on the /v1/ routes (default: $PALIGEMMA_API_KEY, else none).") var apiKey: String?

    func validate() throws {
        guard (1...65536).contains(maxConnections) else { throw ValidationError("--max-connections must be in 1…65536, got \(maxConnections)") }
        guard (1...3600).contains(idleTimeout) else { throw ValidationError("--idle-timeout must be in 1…3600 seconds, got \(idleTimeout)") }
        guard (0...65535).contains(port) else { throw ValidationError("--port must be in 0…65535, got \(port)") }
        guard (1...1024).contains(maxBodyMB) else { throw ValidationError("--max-body-mb must be in 1…1024, got \(maxBodyMB)") }
        guard (0...3600).contains(shutdownTimeout) else { throw ValidationError("--shutdown-timeout must be in 0…3600, got \(shutdownTimeout)") }
        guard (16...1_048_576).contains(maxKVMB) else { throw ValidationError("--max-kv-mb must be in 16…1048576, got \(maxKVMB)") }
        guard (1...8).contains(maxSequences) else { throw ValidationError("--max-sequences must be in 1…8, got \(maxSequences)") }
        guard (0...1).contains(decodeShare) else { throw ValidationError("--decode-share must be in 0…1, got \(decodeShare)") }
        guard (0...1024).contains(maxWaiting) else { throw ValidationError("--max-waiting must be in 0…1024, got \(maxWaiting)") }
    }

    func run() async throws {
        let pipeline: PaliGemmaPipeline
        var segmenter: Segmenter?
        do {
            pipeline = try model.pipeline()
            segmenter = try Segmenter.locate(explicit: vaeOID.map { URL(fileURLWithPath: $0) },
                                             modelDirectory: try model.resolveDirectory())
            if segmenter == nil {
                status("note: no vae-oid.npz in the model directory (pass --vae-oid); segment prompts will return boxes without masks")
            }
        } catch let e as ValidationError {
            throw e
        } catch {
            throw fail(error)
        }
        var config = ServerConfiguration(host: host, port: port, modelName: model.requestedModel().name,
                                         maxBodyBytes: maxBodyMB << 20, maxWaiting: maxWaiting)
        config.maxConnections = maxConnections
        config.maxSequences = maxSequences
        config.decodeShare = decodeShare
        config.shutdownTimeoutSeconds = shutdownTimeout
        config.maxKVMegabytes = maxKVMB
        config.corsOrigin = corsOrigin
        let key = apiKey ?? ProcessInfo.processInfo.environment["PALIGEMMA_API_KEY"].flatMap { $0.isEmpty ? nil : $0 }
        config.apiKey = key
        if key == nil && !["127.0.0.1", "::1", "localhost"].contains(host) {
            status("warning: serving on \(host) without --api-key: anyone who can reach this address can use the model")
        }
        config.idleTimeoutSeconds = idleTimeout
        let service = PaliGemmaService(pipeline: pipeline, segmenter: segmenter, configuration: config)
        let host = self.host
        try await runServer(service: service) { port in
            let shown = host.contains(":") ? "[\(host)]" : host
            print("PaliGemma server on http://\(shown):\(port)/  (Ctrl-C stops)")
            flushStandardOutput()
        }
    }
}
