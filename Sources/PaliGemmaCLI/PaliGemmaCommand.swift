import ArgumentParser
import Foundation
import GemmaTokenizer
import Hub
import Imaging
import Kernels
import MaskDecoder
import PaliGemma
import SafeTensors

@main
struct PaliGemmaCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "paligemma",
        abstract: "Run Google's PaliGemma 2 vision-language models on the CPU.",
        discussion: """
        Without --model the bundled demo model is used (trained on synthetic shapes).

        Examples:
          paligemma caption Models/demo/example.png
          paligemma ask photo.jpg --question "what color is the car?"
          paligemma detect photo.jpg --objects "cat ; dog" --output boxes.png
          paligemma caption photo.jpg --model google/paligemma2-3b-mix-224 --json
          paligemma video clip.mp4 --every 2s --task caption --sheet sheet.png
          paligemma ocr scan.pdf --pages 1-3
          paligemma tokenize "detect cat"
          paligemma finetune --data train.jsonl --out my-adapter
          paligemma caption photo.jpg --adapter my-adapter
          paligemma bench 3b-224
        """,
        subcommands: [Caption.self, Describe.self, Ask.self, Detect.self, Segment.self, OCR.self, Generate.self, Video.self, Results.self, Chat.self,
                      Tokenize.self, Info.self, Download.self, Quantize.self, Finetune.self, Merge.self, Bench.self, Eval.self, Serve.self])
}

/// Prints a library error the way a person can act on, and picks the exit code.
func fail(_ error: Error) -> ExitCode {
    FileHandle.standardError.write(Data("error: \(error)\n".utf8))
    // 3: the model (checkpoint, tokenizer) is unusable; 4: the input (image, prompt, options) is;
    // 5: a download failed; 6: a program a verb drives (ffmpeg, Poppler) is not installed.
    switch error {
    case let media as MediaError:
        if case .programMissing = media { return ExitCode(6) }
        return ExitCode(4)
    case is CheckpointError, is SafeTensorsError, is TokenizerError: return ExitCode(3)
    case is InputError, is ImageError: return ExitCode(4)
    case is MaskDecoderError, is NumPyError: return ExitCode(3)
    case is HubError: return ExitCode(5)
    case let lora as LoRAError:
        if case .adapterFile = lora { return ExitCode(3) }
        return ExitCode(4)
    default: return ExitCode(1)
    }
}

/// Writes a status line to stderr (never to stdout, which carries results).
func status(_ text: String) {
    FileHandle.standardError.write(Data((text + "\n").utf8))
}

/// Says once, on stderr, when PALIGEMMA_ISA named a kernel level this CPU cannot run (the best
/// level runs instead), so that a benchmark or a bug report does not silently measure another one.
func warnAboutIgnoredKernelLevel() {
    guard let ignored = KernelLevel.ignoredRequest, kernelLevelWarning.first() else { return }
    status("warning: PALIGEMMA_ISA: \(ignored); running at \(KernelLevel.active.name)")
}
private let kernelLevelWarning = Once()

/// Pushes what `print` has buffered out now (streamed tokens, the server's address).
func flushStandardOutput() {
    // fflush(NULL) flushes every output stream, stdout among them, without reading the C global
    // `stdout`, a mutable variable that Swift 6 does not let concurrent code touch.
    fflush(nil)
}

/// Something said once per run, by whichever caller gets there first.
// @unchecked Sendable: `done` is only touched under `lock`.
final class Once: @unchecked Sendable {
    private let lock = NSLock()
    private var done = false

    /// True the first time only.
    func first() -> Bool {
        lock.withLock {
            defer { done = true }
            return !done
        }
    }
}
