import ArgumentParser
import Foundation
import Imaging
import Kernels
import PaliGemma

/// Where the model comes from: --model, $PALIGEMMA_MODEL, ~/.config/paligemma/config.json, or
/// the demo model shipped in the repository.
struct ModelOptions: ParsableArguments {
    @Option(name: .shortAndLong, help: ArgumentHelp(
        "A checkpoint directory, a big_vision/Kaggle .npz tree (or its folder), a hub id resolved in the Hugging Face cache (google/paligemma2-3b-mix-448), or 'demo'.",
        discussion: "Default: $PALIGEMMA_MODEL, then \"model\" in ~/.config/paligemma/config.json, then the bundled demo model."))
    var model: String?

    @Option(parsing: .unconditional, help: "Worker threads (default: all cores).")
    var threads: Int?

    @Option(help: ArgumentHelp("Image resize: bicubic (PIL's, as transformers does; default) or bilinear-aa (big_vision's antialiased bilinear, as the model was trained)."))
    var resize = "bicubic"

    @Option(name: .customLong("max-pixels"), parsing: .unconditional, help: "Refuse images larger than this many pixels (checked before decoding).")
    var maxPixels = 100_000_000

    @Option(help: ArgumentHelp(
        "Prefill products: float32 (exact), bf16 (the CPU's bf16 dot products, as PyTorch in bfloat16; about twice as fast) or auto.",
        discussion: "auto uses float32 for small checkpoints (under 256 MB, where it costs nothing) and bf16 otherwise."))
    var products = "auto"

    @Option(help: ArgumentHelp(
        "Transparent images: drop (keep the colours as stored, as transformers' load_image and big_vision do) or white (composite on white).",
        discussion: "The checkpoints were trained on images whose alpha channel was dropped."))
    var alpha = "drop"

    @Option(help: ArgumentHelp("A LoRA adapter directory (adapter_config.json + adapter_model.safetensors) to apply: one `paligemma finetune` wrote, or PEFT's save_pretrained.",
                               valueName: "dir"))
    var adapter: String?

    /// The demo-model note is printed once per run.
    static let demoNote = Once()

    /// Where the demo model may live: $PALIGEMMA_DEMO_MODEL, beside the executable
    /// (`Models/demo`, or `share/paligemma/demo` of an install prefix), or in the checkout this
    /// binary was built from.
    static var demoCandidates: [URL] {
        if let env = ProcessInfo.processInfo.environment["PALIGEMMA_DEMO_MODEL"] { return [URL(fileURLWithPath: env)] }
        let executable = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath().deletingLastPathComponent()
        return [executable.appendingPathComponent("Models/demo"),
                executable.deletingLastPathComponent().appendingPathComponent("share/paligemma/demo"),
                URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
                    .deletingLastPathComponent().appendingPathComponent("Models/demo")]
    }

    /// The demo model's directory, or an error saying how to do without it.
    static func demoDirectory() throws -> URL {
        let candidates = demoCandidates
        if let found = candidates.first(where: { FileManager.default.fileExists(atPath: $0.appendingPathComponent("config.json").path) }) {
            return found
        }
        throw CheckpointError.missingFile(path: candidates.map(\.path).joined(separator: ", "), hint:
            "The bundled demo model is not beside this binary (it lives in the source checkout's Models/demo). "
            + "Pass --model DIR (or a hub id after `paligemma download google/paligemma2-3b-mix-224`), "
            + "or set PALIGEMMA_DEMO_MODEL to a copy of Models/demo.")
    }

    /// The configured model name, and whether it fell back to the demo.
    func requestedModel() -> (name: String, isDefault: Bool) {
        if let model { return (model, false) }
        if let env = ProcessInfo.processInfo.environment["PALIGEMMA_MODEL"], !env.isEmpty { return (env, false) }
        let config = FileManager.default.homeDirectoryForCurrentUser.appendingPathComponent(".config/paligemma/config.json")
        if let data = try? Data(contentsOf: config),
           let object = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any],
           let name = object["model"] as? String {
            return (name, false)
        }
        return ("demo", true)
    }

    /// The checkpoint directory to load.
    func resolveDirectory() throws -> URL {
        let (name, isDefault) = requestedModel()
        if name == "demo" {
            let directory = try Self.demoDirectory()
            if isDefault && Self.demoNote.first() {
                status("note: no --model given; using the bundled demo model (\(directory.path))")
            }
            return directory
        }
        var isDirectory: ObjCBool = false
        if FileManager.default.fileExists(atPath: name, isDirectory: &isDirectory) {
            guard isDirectory.boolValue || name.lowercased().hasSuffix(".npz") else {
                throw InputError.option("--model \(name) is a file; give the checkpoint's directory (the folder holding config.json and the *.safetensors files), or a big_vision .npz tree")
            }
            return URL(fileURLWithPath: name)
        }
        if let resolved = resolveHubModel(name) { return resolved }
        throw CheckpointError.missingFile(path: name, hint: name.contains("/") && !name.hasPrefix("/") && !name.hasPrefix(".")
            ? "Not a directory and not in the Hugging Face cache; run `paligemma download \(name)` first."
            : "Pass a checkpoint directory, a hub id, or 'demo'.")
    }

    /// The compute backend for the checkpoint in `directory`.
    func backend(for directory: URL) throws -> FastBackend {
        guard let precision = ProductPrecision(rawValue: products) else {
            throw ValidationError("--products must be auto, float32 or bf16")
        }
        warnAboutIgnoredKernelLevel()
        return FastBackend(threads: try checkedThreads(), bf16Products: precision.usesBF16(directory: directory))
    }

    /// --threads, refused when absurd and clamped (with a note) to the cores.
    func checkedThreads() throws -> Int? {
        guard let threads else { return nil }
        guard threads >= 1 && threads <= 4096 else { throw ValidationError("--threads must be in 1…4096, got \(threads)") }
        let cores = ProcessInfo.processInfo.activeProcessorCount
        if threads > cores {
            status("note: --threads \(threads) is more than this machine's \(cores) cores; using \(cores)")
            return cores
        }
        return threads
    }

    /// How image files are read: pixel limit and transparency.
    func imageLoader() throws -> ImageLoader {
        guard maxPixels > 0 else { throw ValidationError("--max-pixels must be positive") }
        let handling: AlphaHandling
        switch alpha {
        case "drop": handling = .drop
        case "white": handling = .compositeOnWhite
        default: throw ValidationError("--alpha must be drop or white")
        }
        return ImageLoader(maxPixels: maxPixels, alpha: handling)
    }

    func pipeline() throws -> PaliGemmaPipeline {
        let filter: ResizeFilter
        switch resize {
        case "bicubic": filter = .bicubicPIL
        case "bilinear-aa", "bilinear": filter = .bilinearAntialias
        default: throw ValidationError("--resize must be bicubic or bilinear-aa")
        }
        let loader = try imageLoader()
        let directory = try resolveDirectory()
        let lora = try adapter.map { path -> LoRAAdapter in
            let config = try PaliGemmaConfig.load(from: directory.appendingPathComponent("config.json"))
            return try LoRAAdapter.load(from: URL(fileURLWithPath: path), text: config.text, vision: config.vision)
        }
        return try PaliGemmaPipeline(directory: directory, backend: backend(for: directory),
                                     imageLoader: loader, resize: filter, adapter: lora)
    }
}

/// Sampling and length flags shared by every generating verb.
struct GenerationFlags: ParsableArguments {
    @Option(name: .customLong("max-tokens"), parsing: .unconditional, help: "Most tokens to generate (at most the model's context).")
    var maxTokens = 64

    @Option(parsing: .unconditional, help: "0 = greedy (default); above 0 samples.")
    var temperature: Float = 0

    @Option(name: .customLong("top-k"), parsing: .unconditional, help: "Sample among the k most likely tokens (0 = all).")
    var topK = 0

    @Option(name: .customLong("top-p"), parsing: .unconditional, help: "Sample among the smallest set of tokens with this much probability.")
    var topP: Float = 1

    @Option(parsing: .unconditional, help: "Random seed for sampling.")
    var seed: UInt64 = 0

    func validate() throws {
        guard (1...65536).contains(maxTokens) else { throw ValidationError("--max-tokens must be in 1…65536 (the model's context bounds it further), got \(maxTokens)") }
        guard temperature >= 0 && temperature.isFinite else { throw ValidationError("--temperature must be a number ≥ 0, got \(temperature)") }
        guard topK >= 0 else { throw ValidationError("--top-k must be ≥ 0 (0: no limit), got \(topK)") }
        guard topP > 0 && topP <= 1 else { throw ValidationError("--top-p must be in (0, 1], got \(topP)") }
    }

    var options: GenerationOptions {
        GenerationOptions(maxNewTokens: maxTokens, temperature: temperature, topK: topK, topP: topP, seed: seed)
    }
}

/// Hub ids in the standard Hugging Face cache (filled in by the Hub module when present).
func resolveHubModel(_ id: String) -> URL? {
    hubSnapshot(id)
}
