import Foundation

/// Which task a prompt asks for, read from its first word the way the checkpoints were trained
/// (`caption en`, `detect cat ; dog`, `segment cat`, …). Case and surrounding whitespace do not
/// matter; anything else is `.other` and is answered as text.
public enum TaskKind: String, Codable, Sendable, CaseIterable {
    case caption, describe, answer, question, ocr, detect, segment, other

    /// The task of `prompt`.
    public init(prompt: String) {
        let first = prompt.trimmingCharacters(in: .whitespacesAndNewlines)
            .split(whereSeparator: \.isWhitespace).first.map { $0.lowercased() } ?? ""
        self = TaskKind(rawValue: first).flatMap { $0 == .other ? nil : $0 } ?? .other
    }

    /// Whether answers hold `<loc>` boxes to parse.
    public var hasBoxes: Bool { self == .detect || self == .segment }
}

/// Everything one prompt on one image produced, in the single form every front end (the
/// library, the task verbs, `generate`, batch mode and the server) reports: the generated text
/// and tokens, the boxes and masks parsed from it, and the timings.
///
/// Encoded as one flat JSON object with snake_case keys (`task`, `prompt`, `text`, `token_ids`,
/// `token_logprobs`, `finish_reason`, `timings`, `width`, `height`, `objects`, `masks`, `notes`,
/// and `id`/`image` when the caller set them). A log-probability that is not finite is written
/// as `null` and noted in `notes`, so the JSON always parses.
public struct TaskResult: Codable, Sendable {
    /// The caller's name for the request (batch mode's `id`), if any.
    public var id: String?
    /// The image's name as the caller gave it (a path or a file name), if any.
    public var image: String?
    public var task: TaskKind
    public var prompt: String
    /// Decoded output, `<loc>`/`<seg>` tokens kept, control tokens dropped.
    public var text: String
    public var tokenIDs: [Int]
    /// Natural-log probability of each generated token.
    public var tokenLogProbs: [Float]
    public var finishReason: GenerationResult.FinishReason
    public var timings: Generation.Timings
    /// Size of the image as decoded (EXIF orientation applied): the frame of `objects`.
    public var width: Int
    public var height: Int
    /// For `detect` and `segment`: the valid boxes in the answer, in image pixels.
    public var objects: [DetectedObject]?
    /// For `segment` with a mask decoder: one mask per object that has 16 valid codes.
    public var masks: [SegmentedObject]?
    /// What the reader should know: boxes skipped as invalid, masks not decoded, non-finite
    /// log-probabilities.
    public var notes: [String]?

    /// Builds the result of `generation` on an image of `width`×`height`: boxes for detect and
    /// segment prompts, masks for segment prompts when `segmenter` is given.
    public init(generation g: Generation, width: Int, height: Int, segmenter: Segmenter? = nil,
                id: String? = nil, image: String? = nil) {
        self.id = id
        self.image = image
        task = TaskKind(prompt: g.prompt)
        prompt = g.prompt
        text = g.text
        tokenIDs = g.tokenIDs
        tokenLogProbs = g.tokenLogProbs
        finishReason = g.finishReason
        timings = g.timings
        self.width = width
        self.height = height
        var notes: [String] = []
        if task.hasBoxes {
            let parsed = LocationParser.parseReport(g.text, imageWidth: width, imageHeight: height)
            objects = parsed.objects
            if parsed.invalidBoxes > 0 {
                notes.append("\(parsed.invalidBoxes) box\(parsed.invalidBoxes == 1 ? "" : "es") with y1 ≤ y0 or x1 ≤ x0 left out as invalid")
            }
        }
        if task == .segment {
            if let segmenter {
                masks = segmenter.segment(text: g.text, imageWidth: width, imageHeight: height)
            } else {
                notes.append("no mask decoder (vae-oid.npz) was given: boxes only")
            }
        }
        let nonFinite = g.tokenLogProbs.filter { !$0.isFinite }.count
        if nonFinite > 0 {
            notes.append("\(nonFinite) token log-probabilit\(nonFinite == 1 ? "y is" : "ies are") not finite (written as null)")
        }
        self.notes = notes.isEmpty ? nil : notes
    }

    /// The answer as the generation it came from.
    public var generation: Generation {
        Generation(prompt: prompt, text: text, tokenIDs: tokenIDs, tokenLogProbs: tokenLogProbs,
                   finishReason: finishReason, timings: timings)
    }

    /// The keys beside the generation's own (`Generation`'s coding writes and reads those).
    enum CodingKeys: String, CodingKey {
        case id, image, task, width, height, objects, masks, notes
    }

    public func encode(to encoder: Encoder) throws {
        try generation.encode(to: encoder)
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encodeIfPresent(id, forKey: .id)
        try c.encodeIfPresent(image, forKey: .image)
        try c.encode(task, forKey: .task)
        try c.encode(width, forKey: .width)
        try c.encode(height, forKey: .height)
        try c.encodeIfPresent(objects, forKey: .objects)
        try c.encodeIfPresent(masks, forKey: .masks)
        try c.encodeIfPresent(notes, forKey: .notes)
    }

    public init(from decoder: Decoder) throws {
        let g = try Generation(from: decoder)
        (prompt, text, tokenIDs, tokenLogProbs, finishReason, timings) = (g.prompt, g.text, g.tokenIDs, g.tokenLogProbs, g.finishReason, g.timings)
        let c = try decoder.container(keyedBy: CodingKeys.self)
        id = try c.decodeIfPresent(String.self, forKey: .id)
        image = try c.decodeIfPresent(String.self, forKey: .image)
        task = try c.decode(TaskKind.self, forKey: .task)
        width = try c.decode(Int.self, forKey: .width)
        height = try c.decode(Int.self, forKey: .height)
        objects = try c.decodeIfPresent([DetectedObject].self, forKey: .objects)
        masks = try c.decodeIfPresent([SegmentedObject].self, forKey: .masks)
        notes = try c.decodeIfPresent([String].self, forKey: .notes)
    }

    /// The encoder behind every JSON answer: sorted keys, slashes unescaped, and any other
    /// non-finite number written as a string rather than failing.
    public static func jsonEncoder(pretty: Bool = false) -> JSONEncoder {
        let e = JSONEncoder()
        e.outputFormatting = pretty ? [.sortedKeys, .withoutEscapingSlashes, .prettyPrinted] : [.sortedKeys, .withoutEscapingSlashes]
        e.nonConformingFloatEncodingStrategy = .convertToString(positiveInfinity: "Infinity", negativeInfinity: "-Infinity", nan: "NaN")
        return e
    }

    /// One line of JSON (no newline).
    public func jsonLine() throws -> String {
        String(decoding: try Self.jsonEncoder().encode(self), as: UTF8.self)
    }
}

extension PaliGemmaPipeline {
    /// Runs `prompt` on an encoded image and parses the answer by task: the one path from a
    /// prompt to a `TaskResult`. `onToken` (optional) gets each token as it is generated; return
    /// false to stop.
    ///
    /// ```swift
    /// let image = try pipeline.encode(image: try pipeline.loadImage(url))
    /// let result = try pipeline.perform("detect cat ; dog", on: image)
    /// for box in result.objects ?? [] { print(box.label, box.x0, box.y0, box.x1, box.y1) }
    /// ```
    public func perform(_ prompt: String, on image: EncodedImage, options: GenerationOptions = GenerationOptions(),
                        segmenter: Segmenter? = nil, id: String? = nil, name: String? = nil,
                        onToken: ((GeneratedToken) -> Bool)? = nil) throws -> TaskResult {
        let g: Generation
        if let onToken {
            g = try generate(prompt: prompt, image: image, options: options, onStep: onToken)
        } else {
            g = try generate(prompt: prompt, image: image, options: options)
        }
        return TaskResult(generation: g, width: image.width, height: image.height, segmenter: segmenter, id: id, image: name)
    }
}
