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

/// The lines of `data` split at newline bytes, whatever else they hold, with whether the last
/// one was cut off (no newline after it).
func splitLines(_ data: Data) -> (lines: [Data], tornLast: Bool) {
    var lines = data.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false).map { Data($0) }
    let torn = !(lines.last?.isEmpty ?? true)
    if !torn, !lines.isEmpty { lines.removeLast() }  // the empty piece after the final newline
    return (lines, torn)
}

/// An appendable results file held exclusively: complete lines already in it are kept whatever
/// bytes they hold, a last line torn by an interruption is cut off (and its request redone), and
/// each answer is appended as one whole line with one write.
final class ResultsFile {
    let path: String
    private let handle: FileHandle
    /// The ids of the answers already in the file.
    private(set) var answered = Set<String>()

    init(path: String) throws {
        self.path = path
        var isDirectory: ObjCBool = false
        if FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory), isDirectory.boolValue {
            throw ValidationError("--results \(path) is a directory; name a file to append answers to")
        }
        let fd = open(path, O_RDWR | O_CREAT | O_APPEND | O_CLOEXEC, 0o644)
        guard fd >= 0 else {
            throw ValidationError("cannot open --results \(path): \(String(cString: strerror(errno)))")
        }
        // Two runs appending to one file would interleave and lose answers: one at a time.
        guard flock(fd, LOCK_EX | LOCK_NB) == 0 else {
            close(fd)
            throw ValidationError("\(path) is being written by another paligemma process; wait for it to finish or choose another --results file")
        }
        handle = FileHandle(fileDescriptor: fd, closeOnDealloc: true)
        let existing = try handle.readToEnd() ?? Data()
        let (lines, torn) = splitLines(existing)
        if torn {
            let keep = existing.lastIndex(of: UInt8(ascii: "\n")).map { $0 - existing.startIndex + 1 } ?? 0
            guard ftruncate(fd, off_t(keep)) == 0 else {
                throw ValidationError("cannot cut the torn last line of \(path): \(String(cString: strerror(errno)))")
            }
        }
        for line in lines {
            // A line that is not an answer (hand-edited, foreign) is kept but answers nothing.
            if let object = (try? JSONSerialization.jsonObject(with: line)) as? [String: Any], let id = object["id"] as? String {
                answered.insert(id)
            }
        }
    }

    /// Appends one line (the newline added here) and flushes it to disk.
    func append(_ line: Data) throws {
        try handle.write(contentsOf: line + Data("\n".utf8))
        try handle.synchronize()
    }
}

/// Runs a JSON-lines file of {image, prompt} requests; with --results, appends one JSON line per
/// request and skips requests already answered there, so an interrupted run resumes. A line that
/// is not a request, or repeats an earlier id, is answered with an error line and the batch goes on.
func runBatch(input: String, results: String?, flags: TaskFlags, shard: Shard? = nil) throws {
    let (model, generation) = (flags.model, flags.generation)
    var isDirectory: ObjCBool = false
    guard FileManager.default.fileExists(atPath: input, isDirectory: &isDirectory), !isDirectory.boolValue else {
        throw ValidationError("--input \(input): \(isDirectory.boolValue ? "is a directory" : "no such file")")
    }
    if let results, URL(fileURLWithPath: results).resolvingSymlinksInPath().standardizedFileURL
        == URL(fileURLWithPath: input).resolvingSymlinksInPath().standardizedFileURL {
        throw ValidationError("--results names the --input file; answers go to a separate file")
    }
    let data: Data
    do { data = try Data(contentsOf: URL(fileURLWithPath: input)) } catch {
        throw ValidationError("cannot read \(input): \(error.localizedDescription)")
    }
    enum Line { case request(BatchItem), invalid(String) }
    var entries: [(number: Int, id: String, line: Line)] = []
    var firstLine: [String: Int] = [:]
    for (n, raw) in splitLines(data).lines.enumerated() {
        let number = n + 1
        guard let text = String(validating: raw, as: UTF8.self) else {
            entries.append((number, "line\(number)", .invalid("\(input):\(number): the line is not valid UTF-8")))
            continue
        }
        if text.trimmingCharacters(in: .whitespaces).isEmpty { continue }
        do {
            let item = try JSONDecoder().decode(BatchItem.self, from: Data(text.utf8))
            let id = item.id ?? "line\(number)"
            if let first = firstLine[id] {
                status("note: \(input):\(number): id '\(id)' repeats line \(first); answered once, for line \(first)")
                continue
            }
            firstLine[id] = number
            entries.append((number, id, .request(item)))
        } catch {
            entries.append((number, "line\(number)", .invalid("\(input):\(number): expected {\"image\": …, \"prompt\": …} (\(error.localizedDescription))")))
        }
    }
    if let shard { entries = entries.filter { shard.contains(id: $0.id) } }
    let out = try results.map { try ResultsFile(path: $0) }
    let done = out?.answered ?? []
    let pending = entries.filter { !done.contains($0.id) }
    let already = entries.count - pending.count
    if already > 0, let results { status("resuming: \(already) of \(entries.count) requests already answered in \(results)") }
    let pipeline = try model.pipeline()
    let bar = ProgressBar(label: "batch")
    var cached: (path: String, image: RGBImage, encoded: EncodedImage)?
    let encoder = TaskResult.jsonEncoder()
    var segmenter: Segmenter??
    for (k, entry) in pending.enumerated() {
        var result = BatchResult(id: entry.id, image: "")
        switch entry.line {
        case let .invalid(reason):
            result.error = reason
        case let .request(item):
            result.image = item.image
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
                                                     segmenter: segmenter ?? nil, id: entry.id, name: item.image)
            } catch {
                result.error = "\(error)"
            }
        }
        let line = try encoder.encode(result)
        if let out {
            try out.append(line)
        } else {
            FileHandle.standardOutput.write(line + Data("\n".utf8))
        }
        bar.update(Double(k + 1) / Double(max(pending.count, 1)))
    }
    bar.finish()
}

struct Chat: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Ask questions about one image, one per line, until end of input.",
        discussion: """
        The image is encoded once; each line becomes "answer <lang> <question>" (or is sent as is with --raw, e.g. "detect cat" or "caption fr"). Type 'exit' or press Ctrl-D to stop.
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
                _ = try pipeline.generate(prompt: prompt, image: encoded, options: generation.options, onText: { text in
                    print(text, terminator: "")
                    flushStandardOutput()
                })
                print("")
            }
        }
    }
}
