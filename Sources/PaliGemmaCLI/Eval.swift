import ArgumentParser
import Foundation
import PaliGemma

extension EvaluationAnswers: ExpressibleByArgument {}

struct Eval: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Score a model on a held-out set (caption/VQA/OCR exact match, detection recall, precision and IoU with one-to-one matching, mask IoU).",
        discussion: """
        The set is a directory with heldout.jsonl (one {image, task, prompt, expected, boxes, labels, mask, output_ids} per line, as tools/demo/heldout.py writes it) and its images. Also reports how many outputs are identical to transformers' recorded ones. --json adds every prompt's answer and scores. --answers transformers scores transformers' recorded answers instead of generating (checks the scorer against tools/demo/evaluate.py's summary.json).
        --set may also be a JSONL file of fine-tuning examples ({"image", "prefix", "suffix"}, as `paligemma finetune` reads): each answer is scored by exact match, per task and language ("caption es exact"); add --adapter to score a fine-tuned adapter.
        Examples:
          paligemma eval --set Tests/Fixtures/demo
          paligemma eval --set test.jsonl --adapter es-adapter
        """)
    @Option(help: "Held-out set directory, or a JSONL file of fine-tuning examples.") var set: String
    @Option(help: "Only the first N prompts.") var limit: Int?
    @Option(name: .customLong("vae-oid"), help: "Mask decoder weights (default: the model's vae-oid.npz).") var vaeOID: String?
    @Option(help: "What to score: generated (the model's answers) or transformers (the recorded output_ids, to check the scorer).")
    var answers: EvaluationAnswers = .generated
    @Flag(help: "Print the report as JSON, with every prompt's answer and scores.") var json = false
    @OptionGroup var model: ModelOptions

    func run() throws {
        try wrap {
            let directory = try model.resolveDirectory()
            let pipeline = try model.pipeline()
            let segmenter = try Segmenter.locate(explicit: vaeOID.map { URL(fileURLWithPath: $0) }, modelDirectory: directory)
            if segmenter == nil { status("note: no vae-oid.npz in the model directory (pass --vae-oid); segment prompts are not scored") }
            let bar = ProgressBar(label: "eval")
            let report = try Evaluator.run(pipeline: pipeline, segmenter: segmenter, directory: URL(fileURLWithPath: set),
                                           limit: limit, answers: answers) { done, total in bar.update(Double(done) / Double(total)) }
            bar.finish()
            if json {
                let encoder = JSONEncoder()
                encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
                print(String(decoding: try encoder.encode(report), as: UTF8.self))
                return
            }
            func line(_ name: String, _ m: EvaluationReport.Metric) {
                print(name.padding(toLength: 28, withPad: " ", startingAt: 0) + String(format: "%6.1f%%  (n=%d)", m.value * 100, m.count))
            }
            for (name, m) in report.metrics.sorted(by: { $0.key < $1.key }) { line(name, m) }
            if report.identicalToReference.count > 0 { line("identical to transformers", report.identicalToReference) }
            print(String(format: "%d prompts in %.1f s", report.prompts, report.seconds))
        }
    }
}
