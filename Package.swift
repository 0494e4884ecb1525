// swift-tools-version:6.2
import PackageDescription

// Layers, dependencies pointing down:
//   PaliGemmaCLI (the `paligemma` tool)
//     → PaliGemmaServer (HTTP API and web page), PaliGemmaTools (what `bench` needs)
//       → PaliGemma (model, generation, tasks)
//         → Kernels (numeric interface, reference + fast backends) → CKernels (C SIMD)
//         → GemmaTokenizer, Imaging (→ CImageShims → CJPEG, CPNG), MaskDecoder, Hub, SafeTensors
// Only Kernels calls CKernels. Every target builds in the Swift 6 language mode (the default of
// this tools version).

let package = Package(
    name: "PaliGemmaSwift",
    platforms: [.macOS(.v14)],
    // Each reusable module is a product of its own, so an app can take the tokenizer, the image
    // codecs or the safetensors reader without the model.
    products: [
        .library(name: "PaliGemma", targets: ["PaliGemma"]),
        .library(name: "GemmaTokenizer", targets: ["GemmaTokenizer"]),
        .library(name: "Imaging", targets: ["Imaging"]),
        .library(name: "SafeTensors", targets: ["SafeTensors"]),
        .library(name: "Hub", targets: ["Hub"]),
        .library(name: "MaskDecoder", targets: ["MaskDecoder"]),
        .library(name: "PaliGemmaServer", targets: ["PaliGemmaServer"]),
        .library(name: "Kernels", targets: ["Kernels"]),
        .executable(name: "paligemma", targets: ["PaliGemmaCLI"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/weichsel/ZIPFoundation", from: "0.9.19"),
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.0.0"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.65.0"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.0.0"),
    ],
    targets: [
        // C kernels: each fast routine carries its own target attribute and is picked at run
        // time, so one binary runs on any x86-64 (and on arm64 through the portable paths).
        .target(name: "CKernels", cSettings: [.unsafeFlags(["-O3", "-fno-math-errno"])]),
        .target(name: "Kernels", dependencies: ["CKernels"]),
        .target(name: "SafeTensors"),
        .target(name: "GemmaTokenizer"),
        // Image codecs: Debian's libjpeg-turbo and libpng as system libraries, wrapped by a small C
        // shim that turns their longjmp/abort error paths into error codes; libwebp is loaded by
        // the shim from its runtime library when the first WebP file arrives (no headers needed).
        .systemLibrary(name: "CJPEG", path: "Sources/CJPEG",
                       providers: [.apt(["libjpeg62-turbo-dev"]), .brew(["jpeg-turbo"])]),
        .systemLibrary(name: "CPNG", path: "Sources/CPNG", pkgConfig: "libpng",
                       providers: [.apt(["libpng-dev"]), .brew(["libpng"])]),
        .target(
            name: "CImageShims", dependencies: ["CJPEG", "CPNG"],
            cSettings: [.unsafeFlags(["-O2"])],
            linkerSettings: [.linkedLibrary("jpeg"), .linkedLibrary("png16"), .linkedLibrary("z"),
                              .linkedLibrary("dl", .when(platforms: [.linux]))]),
        .target(name: "Imaging", dependencies: ["CImageShims"]),
        // big_vision's VQ-VAE mask decoder (reads vae-oid.npz): <seg> codes → 64×64 masks.
        .target(name: "MaskDecoder", dependencies: ["ZIPFoundation"]),
        // Hugging Face hub downloads into the standard cache layout.
        .target(name: "Hub"),
        .target(
            name: "PaliGemma",
            dependencies: ["Kernels", "SafeTensors", "GemmaTokenizer", "Imaging", "MaskDecoder", "Hub"]),
        // HTTP server with a web page (Hummingbird 2): /v1/generate (JSON or SSE), /health, /.
        // The page is Resources/index.html, compiled in as a string by the EmbedText plugin.
        .target(
            name: "PaliGemmaServer",
            dependencies: ["PaliGemma", "Imaging", "MaskDecoder", .product(name: "Hummingbird", package: "hummingbird"),
                           .product(name: "NIOCore", package: "swift-nio"), .product(name: "NIOHTTP1", package: "swift-nio"),
                           .product(name: "ServiceLifecycle", package: "swift-service-lifecycle")],
            plugins: ["EmbedText"]),
        // Build-time only: turns a text file into a Swift string constant, so the served page
        // needs no resource bundle beside the binary.
        .executableTarget(name: "TextToSwift"),
        .plugin(name: "EmbedText", capability: .buildTool(), dependencies: ["TextToSwift"]),
        // What `paligemma bench` needs and library users do not: the published shapes as presets,
        // random-weight checkpoints, the machine's ceilings and the non-model measurements.
        .target(
            name: "PaliGemmaTools",
            dependencies: ["PaliGemma", "Kernels", "SafeTensors", "GemmaTokenizer", "Imaging"]),
        .executableTarget(
            name: "PaliGemmaCLI",
            dependencies: ["PaliGemma", "PaliGemmaServer", "PaliGemmaTools", "Hub", "Imaging", "MaskDecoder", "GemmaTokenizer",
                           "Kernels", "SafeTensors", .product(name: "ArgumentParser", package: "swift-argument-parser")]),
        .testTarget(name: "KernelsTests", dependencies: ["Kernels"]),
        .testTarget(name: "SafeTensorsTests", dependencies: ["SafeTensors"]),
        .testTarget(name: "GemmaTokenizerTests", dependencies: ["GemmaTokenizer"]),
        .testTarget(name: "ImagingTests", dependencies: ["Imaging"]),
        .testTarget(name: "MaskDecoderTests", dependencies: ["MaskDecoder"]),
        .testTarget(name: "HubTests", dependencies: ["Hub"]),
        // Runs the built `paligemma` binary on the fixtures, as a person would.
        .testTarget(name: "CLITests"),
        .testTarget(name: "PaliGemmaTests", dependencies: ["PaliGemma", "PaliGemmaTools", "SafeTensors"]),
        .testTarget(
            name: "PaliGemmaServerTests",
            dependencies: ["PaliGemmaServer", "PaliGemma", "Imaging"]),
    ]
)
