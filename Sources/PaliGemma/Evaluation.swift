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
}

/// Task scores over a held-out set, defined as in tools/demo/evaluate.py.
public struct EvaluationReport: Codable, Sendable {
    public struct Metric: Codable, Sendable {
        public var value: Double
        public var count: Int
    }
    /// "caption en exact", "VQA accuracy", "detect recall@0.5", "detect mean IoU", "OCR exact",
    /// "segment mean mask IoU".
    public var metrics: [String: Metric]
    /// Prompts whose generated ids equal transformers' exactly.
    public var identicalToReference: Metric
    public var prompts: Int
    public var seconds: Double

    enum CodingKeys: String, CodingKey {
        case metrics, identicalToReference = "identical_to_transformers", prompts, seconds
    }
}

/// Runs a held-out set through a pipeline and scores the answers.
public enum Evaluator {
    /// Reads `heldout.jsonl` from `directory`.
    public static func items(in directory: URL) throws -> [EvaluationItem] {
        let url = directory.appendingPathComponent("heldout.jsonl")
        let text = try String(contentsOf: url, encoding: .utf8)
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

    /// Scores every item (or the first `limit`). `progress` gets (done, total).
    public static func run(pipeline: PaliGemmaPipeline, segmenter: Segmenter?, directory: URL, limit: Int? = nil,
                           maxNewTokens: Int = 96, progress: ((Int, Int) -> Void)? = nil) throws -> EvaluationReport {
        var all = try items(in: directory)
        if let limit { all = Array(all.prefix(limit)) }
        let start = DispatchTime.now().uptimeNanoseconds
        var exact: [String: [Double]] = [:]
        var detectIoUs: [Double] = []
        var maskIoUs: [Double] = []
        var identical: [Double] = []
        var cache: (name: String, image: RGBImage, encoded: EncodedImage)?
        for (n, item) in all.enumerated() {
            if cache?.name != item.image {
                let image = try pipeline.loadImage(directory.appendingPathComponent(item.image))
                cache = (item.image, image, try pipeline.encode(image: image))
            }
            let (image, encoded) = (cache!.image, cache!.encoded)
            let budget = max(maxNewTokens, (item.outputIDs?.count ?? 0) + 1)
            let g = try pipeline.generate(prompt: item.prompt, image: encoded, options: GenerationOptions(maxNewTokens: budget))
            if let reference = item.outputIDs { identical.append(g.tokenIDs == reference ? 1 : 0) }
            let text = g.text.trimmingCharacters(in: .whitespaces)
            switch item.task {
            case "caption", "answer", "ocr":
                let key: String
                if item.task == "caption" {
                    key = "caption \(item.prompt.split(separator: " ").dropFirst().first ?? "en") exact"
                } else {
                    key = item.task == "answer" ? "VQA accuracy" : "OCR exact"
                }
                exact[key, default: []].append(text == (item.expected ?? "") ? 1 : 0)
            case "detect":
                let found = LocationParser.parse(text, imageWidth: image.width, imageHeight: image.height)
                for (box, label) in zip(item.boxes ?? [], item.labels ?? []) {
                    let candidates = found.filter { $0.label == label }.map { boxIoU(box, [$0.x0, $0.y0, $0.x1, $0.y1]) }
                    detectIoUs.append(candidates.max() ?? 0)
                }
            case "segment":
                guard let segmenter, let maskFile = item.mask, let label = item.labels?.first else { break }
                let truth = try pipeline.imageLoader.load(contentsOf: directory.appendingPathComponent(maskFile))
                let masks = segmenter.segment(text: text, imageWidth: image.width, imageHeight: image.height)
                guard let m = masks.first(where: { $0.object.label == label }) else {
                    maskIoUs.append(0)
                    break
                }
                let predicted = try m.mask()
                var inter = 0, union = 0
                for i in 0..<(truth.width * truth.height) {
                    let t = truth.pixels[3 * i] > 127, p = i < predicted.count && predicted[i] != 0
                    if t && p { inter += 1 }
                    if t || p { union += 1 }
                }
                maskIoUs.append(union > 0 ? Double(inter) / Double(union) : 0)
            default:
                break
            }
            progress?(n + 1, all.count)
        }
        func metric(_ values: [Double]) -> EvaluationReport.Metric {
            .init(value: values.isEmpty ? 0 : values.reduce(0, +) / Double(values.count), count: values.count)
        }
        var metrics: [String: EvaluationReport.Metric] = exact.mapValues(metric)
        if !detectIoUs.isEmpty {
            metrics["detect recall@0.5"] = metric(detectIoUs.map { $0 >= 0.5 ? 1 : 0 })
            metrics["detect mean IoU"] = metric(detectIoUs)
        }
        if !maskIoUs.isEmpty { metrics["segment mean mask IoU"] = metric(maskIoUs) }
        return EvaluationReport(metrics: metrics, identicalToReference: metric(identical), prompts: all.count,
                                seconds: Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9)
    }
}
