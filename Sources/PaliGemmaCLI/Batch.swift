import ArgumentParser
import Foundation
import Imaging
import PaliGemma

/// One line of a batch file.
struct BatchItem: Decodable {
    var id: String?
    var image: String
    var prompt: String
    var maxNewTokens: Int?

    enum CodingKeys: String, CodingKey { case id, image, prompt, maxNewTokens = "max_new_tokens" }
}

/// One line of batch output: the request's `TaskResult` (with `id` and `image` set), or the
/// request's id, image and an error.
struct BatchResult: Encodable {
    var id: String
    var image: String
    var result: TaskResult?
    var error: String?

    enum CodingKeys: String, CodingKey { case id, image, error }

    func encode(to encoder: Encoder) throws {
        if let result {
            try result.encode(to: encoder)
        } else {
            var c = encoder.container(keyedBy: CodingKeys.self)
            try c.encode(id, forKey: .id)
            try c.encode(image, forKey: .image)
            try c.encodeIfPresent(error, forKey: .error)
        }
    }
}

/// Runs a JSON-lines file of {image, prompt} requests; with --results, appends one JSON line per
/// request and skips requests already answered there, so an interrupted run resumes.
func runBatch(input: String, results: String?, flags: TaskFlags) throws {
    let (model, generation) = (flags.model, flags.generation)
    let text: String
    do { text = try String(contentsOfFile: input, encoding: .utf8) } catch {
        throw ValidationError("cannot read \(input): \(error.localizedDescription)")
    }
    var items: [(Int, BatchItem)] = []
    for (n, line) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
        let trimmed = line.trimmingCharacters(in: .whitespaces)
        if trimmed.isEmpty { continue }
        do {
            items.append((n + 1, try JSONDecoder().decode(BatchItem.self, from: Data(trimmed.utf8))))
        } catch {
            throw ValidationError("\(input):\(n + 1): expected {\"image\": …, \"prompt\": …} (\(error.localizedDescription))")
        }
    }
    var done = Set<String>()
    var out: FileHandle? = nil
    if let results {
        if let existing = try? String(contentsOfFile: results, encoding: .utf8) {
            for line in existing.split(separator: "\n") {
                // A line cut by an interruption does not parse and is answered again.
                if let obj = (try? JSONSerialization.jsonObject(with: Data(line.utf8))) as? [String: Any],
                   let id = obj["id"] as? String { done.insert(id) }
            }
            // Drop a partial last line so appended results start on a fresh line.
            if !existing.isEmpty && !existing.hasSuffix("\n") {
                let kept = existing.split(separator: "\n").dropLast().joined(separator: "\n")
                try (kept.isEmpty ? "" : kept + "\n").write(toFile: results, atomically: true, encoding: .utf8)
            }
        } else {
            FileManager.default.createFile(atPath: results, contents: nil)
        }
        out = try FileHandle(forWritingTo: URL(fileURLWithPath: results))
        try out?.seekToEnd()
    }
    let pending = items.filter { !done.contains($0.1.id ?? "line\($0.0)") }
    if !done.isEmpty { status("resuming: \(done.count) of \(items.count) already answered in \(results!)") }
    let pipeline = try model.pipeline()
    let bar = ProgressBar(label: "batch")
    var cached: (path: String, image: RGBImage, encoded: EncodedImage)?
    let encoder = TaskResult.jsonEncoder()
    var segmenter: Segmenter??
    for (k, (line, item)) in pending.enumerated() {
        let id = item.id ?? "line\(line)"
        var result = BatchResult(id: id, image: item.image)
        do {
            // Consecutive requests on one image encode it once.
            if cached?.path != item.image {
                let image = try pipeline.loadImage(URL(fileURLWithPath: item.image))
                cached = (item.image, image, try pipeline.encode(image: image))
            }
            var options = generation.options
            if let m = item.maxNewTokens { options.maxNewTokens = m }
            if TaskKind(prompt: item.prompt) == .segment, segmenter == nil {
                segmenter = .some(try Segmenter.locate(explicit: flags.vaeOID.map { URL(fileURLWithPath: $0) },
                                                       modelDirectory: try model.resolveDirectory()))
            }
            result.result = try pipeline.perform(item.prompt, on: cached!.encoded, options: options,
                                                 segmenter: segmenter ?? nil, id: id, name: item.image)
        } catch {
            result.error = "\(error)"
        }
        let data = try encoder.encode(result) + Data("\n".utf8)
        if let out {
            try out.write(contentsOf: data)
            try out.synchronize()
        } else {
            FileHandle.standardOutput.write(data)
        }
        bar.update(Double(k + 1) / Double(max(pending.count, 1)))
    }
    bar.finish()
    try out?.close()
}

struct Chat: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Ask questions about one image, one per line, until end of input.",
        discussion: """
        The image is encoded once; each line becomes "answer <lang> <question>" (or is sent as is
        with --raw, e.g. "detect cat" or "caption fr"). Type 'exit' or press Ctrl-D to stop.
        Example: paligemma chat photo.jpg
        """)
    @Argument(help: "The image.") var image: String
    @Option(help: "Language code for questions.") var lang = "en"
    @Flag(help: "Send each line as the prompt, unchanged.") var raw = false
    @OptionGroup var model: ModelOptions
    @OptionGroup var generation: GenerationFlags

    func run() throws {
        try wrap {
            let interactive = isatty(0) != 0
            let pipeline = try model.pipeline()
            let picture = try pipeline.loadImage(URL(fileURLWithPath: image))
            let encoded = try pipeline.encode(image: picture)
            if interactive { status("\(image) (\(picture.width)×\(picture.height)) ready. Ask away; Ctrl-D ends.") }
            while true {
                if interactive { FileHandle.standardError.write(Data("> ".utf8)) }
                guard let line = readLine() else { break }
                let question = line.trimmingCharacters(in: .whitespaces)
                if question.isEmpty { continue }
                if question == "exit" || question == "quit" { break }
                let prompt = raw ? question : PaliGemmaTask.answer(question: question, language: lang).prompt
                _ = try pipeline.generate(prompt: prompt, image: encoded, options: generation.options) {
                    print($0, terminator: "")
                    flushStandardOutput()
                }
                print("")
            }
        }
    }
}
