import ArgumentParser
import Foundation
import PaliGemma

struct Quantize: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Write a copy of a checkpoint with 8- or 4-bit weights.",
        discussion: """
        The Gemma 2 matrices and the token embedding (also the output projection) are stored in the chosen format, the vision tower's attention and MLP matrices in 8 bits (with either format), all in groups of 32 inputs with one f16 scale each. The result loads like any checkpoint: paligemma caption photo.jpg --model OUT.
        Example: paligemma quantize ~/models/paligemma2-3b-mix-224 ~/models/paligemma2-3b-mix-224-q8 --format q8
        """)

    @Argument(help: "Source checkpoint directory, big_vision .npz tree, hub id in the cache, or 'demo'.") var source: String
    @Argument(help: "New directory to write.") var destination: String
    @Option(help: "q8 (about 8.5 bits per weight) or q4 (about 4.5).") var format: String = "q8"

    func run() throws {
        try wrap {
            guard let f = Quantizer.Format(rawValue: format) else {
                throw ValidationError("--format must be q8 or q4")
            }
            var options = ModelOptions()
            options.model = source
            let from = try options.resolveDirectory()
            let to = URL(fileURLWithPath: destination)
            if from.standardizedFileURL == to.standardizedFileURL { throw ValidationError("destination must differ from the source") }
            let bar = ProgressBar(label: "quantizing")
            try Quantizer.quantize(source: from, destination: to, format: f) { bar.update($0) }
            bar.finish()
            status("wrote \(to.path)")
        }
    }
}
