import Dispatch
import Foundation
import Imaging

/// One held-out prompt: an image, a prompt, what the answer should be, and what transformers
/// generated for it (one line of `heldout.jsonl`, written by tools/demo/heldout.py).
public struct EvaluationItem: Decodable, Sendable {
    public var image: String
    public var task: String
    public var prompt: String
    public var expected: String?
    /// transformers' greedy ids (ending with the stop token) and text on the same input.
    public var outputIDs: [Int]?
    public var outputText: String?
    /// Detection/segmentation ground truth: [x0, y0, x1, y1] in pixels, with labels.
    public var boxes: [[Double]]?
    public var labels: [String]?
    /// Segmentation ground truth: a mask PNG beside the images.
    public var mask: String?

    enum CodingKeys: String, CodingKey {
        case image, task, prompt, expected, outputIDs = "output_ids", outputText = "output_text", boxes, labels, mask
    }

    /// A fine-tuning example as a prompt to score: the task is the prompt's first word and the
    /// answer must equal the suffix exactly.
    public init(_ example: TrainingExample) {
        image = example.image.path
        prompt = example.prefix
        task = example.prefix.split(separator: " ").first.map { $0.lowercased() } ?? "answer"
        if !["caption", "answer", "ocr"].contains(task) { task = "exact" }
        expected = example.suffix
    }
}

/// Which answers a held-out run scores.
public enum EvaluationAnswers: String, Sendable, CaseIterable {
    /// Generate every answer with the pipeline (greedy).
    case generated
    /// Decode transformers' recorded `output_ids` instead: scores the scorer alone, with no
    /// generation, so it must give the Python evaluator's figures exactly.
    case transformers
}

/// Task scores over a held-out set, defined as in tools/demo/evaluate.py.
public struct EvaluationReport: Codable, Sendable {
    public struct Metric: Codable, Sendable {
        public var value: Double
        public var count: Int
    }
    /// One prompt's answer and what it added to each metric (one value per ground-truth object
    /// for detection, one per prompt otherwise).
    public struct PromptResult: Codable, Sendable {
        public var image: String
        public var prompt: String
        public var answer: String
        /// Whether the generated ids equal transformers' (nil when none were recorded, or when
        /// transformers' answers are the ones scored).
        public var identicalToTransformers: Bool?
        public var scores: [String: [Double]]

        enum CodingKeys: String, CodingKey {
            case image, prompt, answer, identicalToTransformers = "identical_to_transformers", scores
        }
    }
    /// "caption en exact", "VQA accuracy", "detect recall@0.5", "detect precision@0.5",
    /// "detect mean IoU", "OCR exact", "segment mean mask IoU".
    public var metrics: [String: Metric]
    /// Prompts whose generated ids equal transformers' exactly.
    public var identicalToReference: Metric
    public var prompts: Int
    public var seconds: Double
    public var results: [PromptResult]

    enum CodingKeys: String, CodingKey {
        case metrics, identicalToReference = "identical_to_transformers", prompts, seconds, results
    }
}

/// Runs a held-out set through a pipeline and scores the answers.
public enum Evaluator {
    /// Reads `heldout.jsonl` from `directory`, or, when `directory` is a `.jsonl` file of
    /// fine-tuning examples (`{"image", "prefix", "suffix"}`), its examples scored by exact answer.
    public static func items(in directory: URL) throws -> [EvaluationItem] {
        if directory.pathExtension == "jsonl" {
            let (examples, skipped) = try TrainingExample.load(jsonl: directory)
            if let first = skipped.first { throw InputError.option("\(first) (\(skipped.count) line\(skipped.count == 1 ? "" : "s") unusable)") }
            return examples.map(EvaluationItem.init)
        }
        let url = directory.appendingPathComponent("heldout.jsonl")
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: directory.path, isDirectory: &isDirectory), isDirectory.boolValue else {
            throw InputError.option("--set \(directory.path): no such directory (a held-out set is a directory with heldout.jsonl and its images)")
        }
        guard FileManager.default.fileExists(atPath: url.path) else {
            throw InputError.option("\(directory.path) has no heldout.jsonl (written by tools/demo/heldout.py)")
        }
        let text: String
        do { text = try String(contentsOf: url, encoding: .utf8) } catch {
            throw InputError.option("\(url.path): not readable as UTF-8 text (\(error.localizedDescription))")
        }
        return try text.split(separator: "\n").enumerated().map { n, line in
            do {
                return try JSONDecoder().decode(EvaluationItem.self, from: Data(line.utf8))
            } catch {
                throw InputError.option("\(url.path):\(n + 1): not an evaluation item (\(error.localizedDescription))")
            }
        }
    }

    /// Intersection over union of two [x0, y0, x1, y1] boxes.
    public static func boxIoU(_ a: [Double], _ b: [Double]) -> Double {
        guard a.count == 4, b.count == 4 else { return 0 }
        let ix = max(0, min(a[2], b[2]) - max(a[0], b[0])), iy = max(0, min(a[3], b[3]) - max(a[1], b[1]))
        let inter = ix * iy
        let union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
        return union > 0 ? inter / union : 0
    }

    /// Each true box's IoU with the predicted box matched to it (0 when none): pairs with the
    /// same label, highest IoU first, each true and each predicted box used at most once (greedy,
    /// as COCO matches detections), so extra boxes cannot raise recall and lower precision.
    public static func matchBoxes(truth: [([Double], String)], predicted: [([Double], String)]) -> [Double] {
        var pairs: [(iou: Double, t: Int, p: Int)] = []
        for (i, t) in truth.enumerated() {
            for (j, p) in predicted.enumerated() where p.1 == t.1 {
                let iou = boxIoU(t.0, p.0)
                if iou > 0 { pairs.append((iou, i, j)) }
            }
        }
        pairs.sort { ($0.iou, -$0.t, -$0.p) > ($1.iou, -$1.t, -$1.p) }
        var ious = [Double](repeating: 0, count: truth.count)
        var matchedTruth = Set<Int>(), matchedPrediction = Set<Int>()
        for pair in pairs where !matchedTruth.contains(pair.t) && !matchedPrediction.contains(pair.p) {
            ious[pair.t] = pair.iou
            matchedTruth.insert(pair.t)
            matchedPrediction.insert(pair.p)
        }
        return ious
    }

    /// Scores every item (or the first `limit`). `progress` gets (done, total).
    public static func run(pipeline: PaliGemmaPipeline, segmenter: Segmenter?, directory: URL, limit: Int? = nil,
                           maxNewTokens: Int = 96, answers: EvaluationAnswers = .generated,
                           progress: ((Int, Int) -> Void)? = nil) throws -> EvaluationReport {
        var all = try items(in: directory)
        if let limit { all = Array(all.prefix(limit)) }
        let start = DispatchTime.now().uptimeNanoseconds
        var results: [EvaluationReport.PromptResult] = []
        // Consecutive prompts share an image: load it (and encode it, when generating) once.
        var image: (name: String, pixels: RGBImage)?
        var encoded: (name: String, value: EncodedImage)?
        for (n, item) in all.enumerated() {
            if image?.name != item.image {
                let url = item.image.hasPrefix("/") ? URL(fileURLWithPath: item.image) : directory.appendingPathComponent(item.image)
                image = (item.image, try pipeline.loadImage(url))
            }
            let pixels = image!.pixels
            let text: String, identical: Bool?
            switch answers {
            case .generated:
                if encoded?.name != item.image { encoded = (item.image, try pipeline.encode(image: pixels)) }
                let budget = max(maxNewTokens, (item.outputIDs?.count ?? 0) + 1)
                let g = try pipeline.generate(prompt: item.prompt, image: encoded!.value,
                                              options: GenerationOptions(maxNewTokens: budget))
                (text, identical) = (g.text, item.outputIDs.map { g.tokenIDs == $0 })
            case .transformers:
                guard let ids = item.outputIDs else {
                    throw InputError.option("\(item.image) \"\(item.prompt)\": no output_ids recorded to score; "
                                            + "write the set with tools/demo/heldout.py, or score generated answers")
                }
                (text, identical) = (pipeline.tokenizer.decode(ids.map(Int32.init), skipSpecialTokens: true), nil)
            }
            let scores = try score(item, answer: text.trimmingCharacters(in: .whitespaces), image: pixels,
                                   loader: pipeline.imageLoader, segmenter: segmenter, directory: directory)
            results.append(.init(image: item.image, prompt: item.prompt, answer: text,
                                 identicalToTransformers: identical, scores: scores))
            progress?(n + 1, all.count)
        }
        func metric(_ values: [Double]) -> EvaluationReport.Metric {
            .init(value: values.isEmpty ? 0 : values.reduce(0, +) / Double(values.count), count: values.count)
        }
        var pooled: [String: [Double]] = [:]
        for r in results { pooled.merge(r.scores, uniquingKeysWith: +) }
        return EvaluationReport(metrics: pooled.mapValues(metric),
                                identicalToReference: metric(results.compactMap { $0.identicalToTransformers.map { $0 ? 1 : 0 } }),
                                prompts: all.count, seconds: Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9,
                                results: results)
    }

    /// One answer's contribution to each metric.
    static func score(_ item: EvaluationItem, answer text: String, image: RGBImage, loader: ImageLoader,
                      segmenter: Segmenter?, directory: URL) throws -> [String: [Double]] {
        switch item.task {
        case "exact":
            let word = item.prompt.split(separator: " ").first.map(String.init) ?? "answer"
            return ["\(word) exact": [text == (item.expected ?? "") ? 1 : 0]]
        case "caption", "answer", "ocr":
            let key: String
            if item.task == "caption" {
                key = "caption \(item.prompt.split(separator: " ").dropFirst().first ?? "en") exact"
            } else {
                key = item.task == "answer" ? "VQA accuracy" : "OCR exact"
            }
            return [key: [text == (item.expected ?? "") ? 1 : 0]]
        case "detect":
            let found = LocationParser.parse(text, imageWidth: image.width, imageHeight: image.height)
            let truth = Array(zip(item.boxes ?? [], item.labels ?? []))
            guard !truth.isEmpty else { return [:] }
            let ious = matchBoxes(truth: truth, predicted: found.map { ([$0.x0, $0.y0, $0.x1, $0.y1], $0.label) })
            let hits = ious.filter { $0 >= 0.5 }.count
            // Precision counts one value per predicted box: 1 for each matched at IoU ≥ 0.5.
            let precision = (0..<found.count).map { $0 < hits ? 1.0 : 0.0 }
            return ["detect recall@0.5": ious.map { $0 >= 0.5 ? 1 : 0 }, "detect mean IoU": ious,
                    "detect precision@0.5": precision]
        case "segment":
            guard let segmenter, let maskFile = item.mask, let label = item.labels?.first else { return [:] }
            let truth = try loader.load(contentsOf: directory.appendingPathComponent(maskFile))
            let masks = segmenter.segment(text: text, imageWidth: image.width, imageHeight: image.height)
            guard let m = masks.first(where: { $0.object.label == label }) else { return ["segment mean mask IoU": [0]] }
            let predicted = try m.mask()
            var inter = 0, union = 0
            for i in 0..<(truth.width * truth.height) {
                let t = truth.pixels[3 * i] > 127, p = i < predicted.count && predicted[i] != 0
                if t && p { inter += 1 }
                if t || p { union += 1 }
            }
            return ["segment mean mask IoU": [union > 0 ? Double(inter) / Double(union) : 0]]
        default:
            return [:]
        }
    }
}
