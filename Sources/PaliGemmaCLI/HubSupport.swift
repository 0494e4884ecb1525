import ArgumentParser
import Foundation
import Hub

/// A hub id (`org/name`, optionally `@revision`) found in the Hugging Face cache, offline.
func hubSnapshot(_ id: String) -> URL? {
    guard isHubRepoID(parseRepoID(id).repo) else { return nil }
    return resolveModel(id)
}

struct Download: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Download a model from the Hugging Face hub into the standard cache.",
        discussion: """
        Files land in ~/.cache/huggingface/hub (or $HF_HUB_CACHE, $HF_HOME/hub) exactly as Python's huggingface_hub stores them, so both share downloads. Partial files resume; LFS files are checked against their SHA-256. Gated repositories (all PaliGemma ones) need you to accept the licence on the model page and a token: $HF_TOKEN or ~/.cache/huggingface/token. $HF_ENDPOINT points at another hub.

        Example: paligemma download google/paligemma2-3b-mix-224
        """)

    @Argument(help: "Repository id, e.g. google/paligemma2-3b-mix-448.") var repo: String
    @Option(help: "Branch, tag or commit.") var revision = "main"
    @Option(parsing: .upToNextOption, help: "Only files matching these globs (e.g. '*.json' '*.safetensors').")
    var include: [String] = []

    func run() async throws {
        let bar = ProgressBar(label: "download")
        do {
            let client = HubClient()
            let url = try await client.download(repo: repo, revision: revision, matching: include.isEmpty ? nil : include) { p in
                if let f = p.fractionCompleted { bar.update(f) }
            }
            bar.finish()
            print(url.path)
        } catch {
            bar.finish()
            throw fail(error)
        }
    }
}
