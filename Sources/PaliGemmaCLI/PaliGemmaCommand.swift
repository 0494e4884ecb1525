import ArgumentParser
import Foundation
import PaliGemma

@main
struct PaliGemmaCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "paligemma",
        abstract: "Run Google's PaliGemma 2 vision-language models on the CPU.",
        discussion: """
        Examples:
          paligemma info --model ~/models/paligemma2-3b-pt-224
          paligemma bench 3b-224 --decode-tokens 16
        """,
        subcommands: [Info.self, Bench.self])
}

/// Prints a library error the way a person can act on, and picks the exit code.
func fail(_ error: Error) -> ExitCode {
    FileHandle.standardError.write(Data("error: \(error)\n".utf8))
    switch error {
    case is CheckpointError: return ExitCode(3)
    case is InputError: return ExitCode(4)
    default: return ExitCode(1)
    }
}

/// Writes a status line to stderr (never to stdout, which carries results).
func status(_ text: String) {
    FileHandle.standardError.write(Data((text + "\n").utf8))
}
