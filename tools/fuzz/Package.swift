// swift-tools-version:6.0
// libFuzzer harnesses for the PaliGemmaSwift library products. A separate package, so that the
// root package's `swift build` / `swift test` neither build nor see it. Build and run through
// tools/fuzz/run.sh, which compiles everything with AddressSanitizer and libFuzzer's coverage
// instrumentation and links libFuzzer's driver; see docs/fuzzing.md.
//
// Each fuzzer is `@_cdecl("LLVMFuzzerTestOneInput") fuzz(_:_:)` plus a main.swift that hands it to
// `LLVMFuzzerRunDriver`. (SwiftPM's own `--sanitize=fuzzer` cannot build the root package: it
// compiles every executable, the EmbedText plugin's TextToSwift tool included, without a main.)
import Foundation
import PackageDescription

// A path dependency's identity is its directory's name (wt-fuzz, main, PaliGemmaSwift, …), so
// read it from where this manifest lives instead of spelling it.
let rootDirectory = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
    .deletingLastPathComponent().deletingLastPathComponent()
let root = rootDirectory.lastPathComponent

func fuzzer(_ name: String, _ products: [String], extra: [Target.Dependency] = []) -> Target {
    .executableTarget(
        name: name,
        dependencies: ["FuzzSupport"] + extra + products.map { .product(name: $0, package: root) },
        swiftSettings: [.swiftLanguageMode(.v5)])
}

let package = Package(
    name: "PaliGemmaFuzz",
    platforms: [.macOS(.v14)],
    dependencies: [.package(path: "../..")],
    targets: [
        .target(name: "CFuzzDriver"),
        .target(name: "FuzzSupport", dependencies: ["CFuzzDriver"], swiftSettings: [.swiftLanguageMode(.v5)]),
        fuzzer("FuzzSafeTensors", ["SafeTensors"]),
        fuzzer("FuzzConfig", ["PaliGemma"]),
        // What both tokenizer fuzzers do with a tokenizer that loaded.
        .target(name: "TokenizerExercise", dependencies: [.product(name: "GemmaTokenizer", package: root)],
                swiftSettings: [.swiftLanguageMode(.v5)]),
        fuzzer("FuzzTokenizerJSON", ["GemmaTokenizer"], extra: ["TokenizerExercise"]),
        fuzzer("FuzzTokenizerModel", ["GemmaTokenizer"], extra: ["TokenizerExercise"]),
        fuzzer("FuzzNpy", ["MaskDecoder"]),
        fuzzer("FuzzNpz", ["MaskDecoder"]),
        fuzzer("FuzzBigVision", ["PaliGemma", "SafeTensors"]),
        fuzzer("FuzzImage", ["Imaging"]),
        fuzzer("FuzzLocation", ["PaliGemma", "GemmaTokenizer"]),
        fuzzer("FuzzServerJSON", ["PaliGemmaServer"]),
        fuzzer("FuzzServerMultipart", ["PaliGemmaServer"]),
    ]
)
