import Foundation

/// Looks `org/name` up in the Hugging Face cache ($HF_HUB_CACHE, $HF_HOME/hub or
/// ~/.cache/huggingface/hub): models--org--name/snapshots/<refs/main>.
func hubSnapshot(_ id: String) -> URL? {
    let parts = id.split(separator: "/")
    guard parts.count == 2 else { return nil }
    let env = ProcessInfo.processInfo.environment
    let root: URL
    if let cache = env["HF_HUB_CACHE"] {
        root = URL(fileURLWithPath: cache)
    } else if let home = env["HF_HOME"] {
        root = URL(fileURLWithPath: home).appendingPathComponent("hub")
    } else {
        root = FileManager.default.homeDirectoryForCurrentUser.appendingPathComponent(".cache/huggingface/hub")
    }
    let repo = root.appendingPathComponent("models--\(parts[0])--\(parts[1])")
    guard let ref = try? String(contentsOf: repo.appendingPathComponent("refs/main"), encoding: .utf8) else { return nil }
    let snapshot = repo.appendingPathComponent("snapshots").appendingPathComponent(ref.trimmingCharacters(in: .whitespacesAndNewlines))
    return FileManager.default.fileExists(atPath: snapshot.appendingPathComponent("config.json").path) ? snapshot : nil
}
