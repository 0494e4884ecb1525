import ArgumentParser
import Foundation
import Kernels
import PaliGemma
import PaliGemmaTools

struct Info: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Describe a checkpoint: sizes, image tokens, softcaps, weight formats.",
        discussion: "Example: paligemma info --model ~/models/paligemma2-3b-pt-224 --json")

    @Option(name: .shortAndLong, help: "Checkpoint directory (config.json + *.safetensors).")
    var model: String

    @Flag(help: "Print the parsed configuration as JSON.")
    var json = false

    func run() async throws {
        do {
            let m = try PaliGemmaModel(directory: URL(fileURLWithPath: model))
            if json {
                let encoder = JSONEncoder()
                encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
                print(String(decoding: try encoder.encode(m.config), as: UTF8.self))
                return
            }
            let c = m.config
            let family = c.text.postNorms ? "PaliGemma 2" : "PaliGemma 1"
            print("""
            checkpoint      \(model)
            layout          \(m.bigVisionTree == nil ? "Hugging Face (config.json + safetensors)" : "big_vision tree (.npz), settings " + (FileManager.default.fileExists(atPath: m.directory.appendingPathComponent("config.json").path) ? "from config.json beside it" : "read off its shapes"))
            family          \(family)\(ModelPreset.published(matching: c).map { ", shapes of the published \($0)" } ?? ", shapes of no published checkpoint")
            image           \(c.vision.imageSize)×\(c.vision.imageSize) px, patch \(c.vision.patchSize), \(c.numImageTokens) image tokens
            vision tower    SigLIP \(c.vision.numHiddenLayers) layers × \(c.vision.hiddenSize) (heads \(c.vision.numAttentionHeads), MLP \(c.vision.intermediateSize))
            decoder         \(c.text.postNorms ? "Gemma 2" : "Gemma") \(c.text.numHiddenLayers) layers × \(c.text.hiddenSize) (heads \(c.text.numAttentionHeads), kv heads \(c.text.numKeyValueHeads), head_dim \(c.text.headDim), MLP \(c.text.intermediateSize))
            vocabulary      \(c.text.vocabSize) (image token \(c.imageTokenIndex))
            softcaps        attention \(c.text.attnLogitSoftcapping.map { "\($0)" } ?? "off"), final \(c.text.finalLogitSoftcapping.map { "\($0)" } ?? "off")
            sliding window  \(c.text.slidingWindow.map { "\($0)" } ?? "off") on \(c.text.slidingLayers.filter { $0 }.count) of \(c.text.numHiddenLayers) layers
            weights         \(m.weightSummary)
            backend         \(m.backend.name)
            kernel levels   \(KernelLevel.available.map(\.name).joined(separator: ", ")) (PALIGEMMA_ISA caps them)
            """)
        } catch {
            throw fail(error)
        }
    }
}
