import ArgumentParser
import Foundation
import Imaging
import MaskDecoder
import PaliGemma

/// One image's answer as printed with --json: the library's `TaskResult`, plus the files this
/// run wrote for it.
struct ImageResult: Encodable {
    var result: TaskResult
    var maskFiles: [String]?
    var annotated: String?

    enum CodingKeys: String, CodingKey { case maskFiles = "mask_files", annotated }

    func encode(to encoder: Encoder) throws {
        try result.encode(to: encoder)
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encodeIfPresent(maskFiles, forKey: .maskFiles)
        try c.encodeIfPresent(annotated, forKey: .annotated)
    }
}

/// Shared body of every task verb and of `generate`: load the model once, then for each image
/// encode it once, run the prompt, print (text, boxes or JSON lines) and optionally draw.
func runTask(images: [String], prompt: String, flags: TaskFlags) throws {
    guard !images.isEmpty else { throw ValidationError("give at least one image") }
    let verbose = isatty(2) != 0
    let task = TaskKind(prompt: prompt)
    if verbose { status("loading model…") }
    let pipeline = try flags.model.pipeline()
    let segmenter = task == .segment
        ? try Segmenter.locate(explicit: flags.vaeOID.map { URL(fileURLWithPath: $0) }, modelDirectory: try flags.model.resolveDirectory())
        : nil
    if task == .segment, segmenter == nil {
        status("note: no vae-oid.npz in the model directory (pass --vae-oid); printing boxes without masks")
    }
    if let maskDirectory = flags.maskDir {
        try FileManager.default.createDirectory(atPath: maskDirectory, withIntermediateDirectories: true)
    }
    // With --together every image goes into one prompt; else each image gets its own.
    let groups = flags.together ? [images] : images.map { [$0] }
    for (index, group) in groups.enumerated() {
        let path = group.joined(separator: " + ")
        let pictures = try group.map { try pipeline.loadImage(URL(fileURLWithPath: $0)) }
        let image = pictures[0]
        if verbose { status("\(path): encoding \(group.count == 1 ? "image (\(image.width)×\(image.height))" : "\(group.count) images")…") }
        let encoded = group.count == 1 ? try pipeline.encode(image: image) : try pipeline.encode(images: pictures)
        let streamText = !flags.json && !task.hasBoxes && isatty(1) != 0 && groups.count == 1
        let result = try pipeline.perform(prompt, on: encoded, options: flags.generation.options, segmenter: segmenter,
                                          name: path, onToken: streamText ? { token in
                                              print(token.text, terminator: "")
                                              flushStandardOutput()
                                              return true
                                          } : nil)
        var out = ImageResult(result: result)
        if let maskDirectory = flags.maskDir, let masks = result.masks {
            let stem = URL(fileURLWithPath: group[0]).deletingPathExtension().lastPathComponent
            out.maskFiles = try masks.enumerated().map { i, m in
                let file = URL(fileURLWithPath: maskDirectory).appendingPathComponent("\(stem)-mask\(i).png")
                let bits = try m.mask()
                var pixels = [UInt8](repeating: 0, count: bits.count * 3)
                for (j, b) in bits.enumerated() where b != 0 { pixels[3 * j] = 255; pixels[3 * j + 1] = 255; pixels[3 * j + 2] = 255 }
                try PNGEncoder.write(RGBImage(width: m.width, height: m.height, pixels: pixels), to: file)
                return file.path
            }
        }
        if let output = flags.output {
            let target = groups.count == 1 ? output : numbered(output, index)
            let boxes = (result.objects ?? []).map { AnnotationBox(label: $0.label, x0: $0.x0, y0: $0.y0, x1: $0.x1, y1: $0.y1) }
            let overlays = (result.masks ?? []).map { m in
                AnnotationMask(box: AnnotationBox(label: m.object.label, x0: m.object.x0, y0: m.object.y0, x1: m.object.x1, y1: m.object.y1),
                               width: 64, height: 64, values: VQVAEMaskDecoder.probabilities(m.mask64))
            }
            try PNGEncoder.write(Annotator.draw(image: image, boxes: boxes, masks: overlays), to: URL(fileURLWithPath: target))
            out.annotated = target
        }
        if flags.json {
            print(String(decoding: try TaskResult.jsonEncoder().encode(out), as: UTF8.self))
        } else {
            let prefix = groups.count > 1 ? "\(path): " : ""
            if !task.hasBoxes {
                if streamText { print("") } else { print(prefix + result.text) }
            } else {
                // Masks are computed for the segmented objects, in the order of `objects`
                // that carry 16 codes.
                let objects = result.objects ?? []
                if objects.isEmpty { print(prefix + "(nothing found) \(result.text)") }
                var maskIndex = 0
                for o in objects {
                    var line = prefix + String(format: "%@  x0=%.0f y0=%.0f x1=%.0f y1=%.0f", o.label as NSString, o.x0, o.y0, o.x1, o.y1)
                    if let masks = result.masks, maskIndex < masks.count, masks[maskIndex].object == o {
                        line += "  mask \(masks[maskIndex].area) px"
                        if let f = out.maskFiles?[maskIndex] { line += " → \(f)" }
                        maskIndex += 1
                    }
                    print(line)
                }
            }
            for note in result.notes ?? [] { status("note: \(note)") }
            if let a = out.annotated { status("wrote \(a)") }
        }
        if verbose {
            let t = result.timings
            status(String(format: "%@: image %.2f s, prefill %.2f s, %d tokens at %.1f tok/s", path,
                          t.imageSeconds, t.prefillSeconds, t.generatedTokens, t.decodeTokensPerSecond))
        }
    }
}

/// out.png → out-1.png for the second image.
func numbered(_ path: String, _ index: Int) -> String {
    let url = URL(fileURLWithPath: path)
    let ext = url.pathExtension.isEmpty ? "png" : url.pathExtension
    return url.deletingPathExtension().path + "-\(index)." + ext
}

/// Flags every task verb shares.
struct TaskFlags: ParsableArguments {
    @OptionGroup var model: ModelOptions
    @OptionGroup var generation: GenerationFlags

    @Flag(help: "Print one JSON object per image (task, text, token ids, log-probs, boxes, masks, timings; see docs/results.md).")
    var json = false

    @Option(name: .shortAndLong, help: "Write the image with boxes/masks drawn to this PNG file.")
    var output: String?

    @Option(name: .customLong("vae-oid"), help: "For segment prompts: big_vision's vae-oid.npz (default: the one in the model directory).")
    var vaeOID: String?

    @Option(name: .customLong("mask-dir"), help: "For segment prompts: write each mask as a PNG into this directory.")
    var maskDir: String?

    @Flag(help: "Put all the images into one prompt, in order (as the processor does for several images); boxes then refer to the first.")
    var together = false

    /// Runs `prompt` on every image with these flags.
    func run(images: [String], prompt: String) throws {
        try runTask(images: images, prompt: prompt, flags: self)
    }
}

struct Caption: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Caption images.",
        discussion: "Example: paligemma caption photo.jpg --lang fr")
    @Argument(help: "Image files (JPEG, PNG, WebP).") var images: [String]
    @Option(help: "Language code (en, de, fr, es, …).") var lang = "en"
    @OptionGroup var flags: TaskFlags
    func run() throws {
        try wrap { try flags.run(images: images, prompt: PaliGemmaTask.caption(language: lang).prompt) }
    }
}

struct Describe: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Describe images at length (pre-trained and docci checkpoints).",
        discussion: "Example: paligemma describe photo.jpg --max-tokens 200")
    @Argument(help: "Image files.") var images: [String]
    @Option(help: "Language code.") var lang = "en"
    @OptionGroup var flags: TaskFlags
    func run() throws {
        try wrap { try flags.run(images: images, prompt: PaliGemmaTask.describe(language: lang).prompt) }
    }
}

struct Ask: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Answer a question about images.",
        discussion: "Example: paligemma ask photo.jpg --question \"how many shapes are there?\"")
    @Argument(help: "Image files.") var images: [String]
    @Option(name: .shortAndLong, help: "The question.") var question: String
    @Option(help: "Language code.") var lang = "en"
    @OptionGroup var flags: TaskFlags
    func run() throws {
        try wrap { try flags.run(images: images, prompt: PaliGemmaTask.answer(question: question, language: lang).prompt) }
    }
}

struct Detect: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Find things and print their boxes in image pixels.",
        discussion: """
        Boxes are x0 y0 x1 y1 in the original image (the model's <loc> bins / 1023 × size).
        Example: paligemma detect street.jpg --objects "car ; person" --output boxes.png
        """)
    @Argument(help: "Image files.") var images: [String]
    @Option(help: "What to look for, separated by ';'.") var objects: String
    @OptionGroup var flags: TaskFlags
    func run() throws {
        let names = objects.split(separator: ";").map { String($0) }.filter { !$0.trimmingCharacters(in: .whitespaces).isEmpty }
        try wrap { try flags.run(images: images, prompt: PaliGemmaTask.detect(objects: names).prompt) }
    }
}

struct Segment: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Find a thing and print its box and mask.",
        discussion: """
        Masks come from big_vision's VQ-VAE decoder (vae-oid.npz): taken from --vae-oid, else the model directory; without one, boxes only. JSON output carries each mask as COCO run lengths; --mask-dir also writes them as PNG files, --output draws them over the image.
        Example: paligemma segment photo.jpg --object cat --output cat.png --mask-dir masks/
        """)
    @Argument(help: "Image files.") var images: [String]
    @Option(help: "What to segment.") var object: String
    @OptionGroup var flags: TaskFlags
    func run() throws {
        try wrap { try flags.run(images: images, prompt: PaliGemmaTask.segment(object: object).prompt) }
    }
}

struct OCR: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ocr", abstract: "Read the text in images and PDF documents.",
        discussion: """
        A PDF (recognised by its %PDF- header, not its name) is drawn page by page by Poppler's pdfinfo and pdftocairo programs (Debian: apt-get install poppler-utils; macOS: brew install poppler; without them, exit code 6) and each page is read. --tile cuts a page larger than the model's input into overlapping tiles and joins their texts top to bottom, left to right, keeping words read twice in an overlap once (docs/media.md).

        Examples:
          paligemma ocr receipt.png
          paligemma ocr scan.pdf --pages 1-3,5 --dpi 200
          paligemma ocr scan.pdf --tile --json
        """)
    @Argument(help: "Image or PDF files.") var images: [String]
    @OptionGroup var flags: TaskFlags
    @OptionGroup var document: DocumentFlags
    func run() throws {
        try wrap {
            if document.requested || images.contains(where: { PDFPages.isPDF(URL(fileURLWithPath: $0)) }) {
                try runDocuments(paths: images, flags: flags, document: document)
            } else {
                try flags.run(images: images, prompt: PaliGemmaTask.ocr.prompt)
            }
        }
    }
}

struct Generate: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run any prompt on images, or a batch of requests from a JSON-lines file.",
        discussion: """
        Examples:
          paligemma generate photo.jpg --prompt "caption es" --temperature 0.7 --seed 1
          paligemma generate --input requests.jsonl --results answers.jsonl

        Answers are parsed by the prompt's task as the verbs parse them ("detect …" gives boxes, "segment …" boxes and masks); --json prints the same object as every other verb. Each request line is {"image": "a.jpg", "prompt": "caption en", "id": "optional", "max_new_tokens": 32}. With --results, answers are appended as JSON lines and requests already answered there are skipped, so an interrupted batch resumes where it stopped.
        """)
    @Argument(help: "Image files.") var images: [String] = []
    @Option(name: .shortAndLong, help: "The prompt, sent as is (no <image>/<bos>: they are added).") var prompt: String?
    @Option(help: "A JSON-lines file of requests (batch mode).") var input: String?
    @Option(help: "Batch mode: append answers to this JSON-lines file and resume from it.") var results: String?
    @Option(help: "Batch mode: run only shard I of N (0 ≤ I < N), chosen by a stable hash of each id (default: from a Kubernetes Indexed Job or Slurm array when run in one).") var shard: String?
    @OptionGroup var flags: TaskFlags
    func run() throws {
        try wrap {
            if let input {
                guard images.isEmpty, prompt == nil else { throw ValidationError("--input replaces IMAGE and --prompt") }
                var part = try shard.map { try Shard(parsing: $0) }
                if part == nil, let (assigned, source) = Shard.fromEnvironment() {
                    part = assigned
                    status("note: running shard \(assigned) (from \(source))")
                }
                try runBatch(input: input, results: results, flags: flags, shard: part)
                return
            }
            guard shard == nil else { throw ValidationError("--shard splits a batch: use it with --input") }
            guard let prompt else { throw ValidationError("give --prompt (or --input for a batch)") }
            try flags.run(images: images, prompt: prompt)
        }
    }
}

/// Runs `body`, turning library errors into a message and an exit code.
func wrap(_ body: () throws -> Void) throws {
    do {
        try body()
    } catch let e as ExitCode {
        throw e
    } catch let e as ValidationError {
        throw e
    } catch {
        throw fail(error)
    }
}
