import Foundation
import PackagePlugin

/// Compiles each .html file of a target into a string constant named after it (`index.html` →
/// `indexHTML`), generated at build time by TextToSwift.
@main
struct EmbedText: BuildToolPlugin {
    func createBuildCommands(context: PluginContext, target: Target) throws -> [Command] {
        guard let target = target as? SourceModuleTarget else { return [] }
        let tool = try context.tool(named: "TextToSwift")
        return target.sourceFiles.filter { $0.url.pathExtension == "html" }.map { file in
            let stem = file.url.deletingPathExtension().lastPathComponent
            let name = constantName(stem) + file.url.pathExtension.uppercased()
            let output = context.pluginWorkDirectoryURL.appendingPathComponent(name + ".swift")
            return .buildCommand(displayName: "Embedding \(file.url.lastPathComponent) as \(name)",
                                 executable: tool.url,
                                 arguments: [file.url.path, output.path, name],
                                 inputFiles: [file.url], outputFiles: [output])
        }
    }

    /// "index" → "index", "web-page" → "webPage": a lower-camel-case Swift identifier.
    func constantName(_ stem: String) -> String {
        let words = stem.split { !($0.isLetter || $0.isNumber) }.map(String.init)
        guard let first = words.first else { return "text" }
        let name = first.prefix(1).lowercased() + first.dropFirst() + words.dropFirst().map { $0.prefix(1).uppercased() + $0.dropFirst() }.joined()
        return name.first!.isNumber ? "_" + name : name
    }
}
