import Foundation

/// Settings read from the environment the way `huggingface_hub` reads them.
///
/// Every lookup takes the environment as a dictionary so that tests (and embedders) can pass their own;
/// the default is the process environment.
public struct HubEnvironment: Sendable {
    /// The variables consulted (`HF_HOME`, `HF_HUB_CACHE`, `HF_TOKEN`, `HF_ENDPOINT`, `HF_HUB_OFFLINE`, `HOME`, …).
    public var variables: [String: String]

    /// Wraps `variables`; by default the current process environment.
    public init(_ variables: [String: String] = ProcessInfo.processInfo.environment) {
        self.variables = variables
    }

    private func value(_ name: String) -> String? {
        guard let v = variables[name]?.trimmingCharacters(in: .whitespacesAndNewlines), !v.isEmpty else { return nil }
        return v
    }

    private func expand(_ path: String) -> URL {
        if path == "~" || path.hasPrefix("~/") { return URL(fileURLWithPath: home + path.dropFirst(), isDirectory: true) }
        return URL(fileURLWithPath: path, isDirectory: true)
    }

    private var home: String { value("HOME") ?? NSHomeDirectory() }

    /// `$HF_HOME`, else `$XDG_CACHE_HOME/huggingface`, else `~/.cache/huggingface`.
    public var hfHome: URL {
        if let v = value("HF_HOME") { return expand(v) }
        if let v = value("XDG_CACHE_HOME") { return expand(v).appendingPathComponent("huggingface", isDirectory: true) }
        return expand("~/.cache/huggingface")
    }

    /// `$HF_HUB_CACHE` (or the older `$HUGGINGFACE_HUB_CACHE`), else `<HF_HOME>/hub`.
    public var hubCache: URL {
        if let v = value("HF_HUB_CACHE") ?? value("HUGGINGFACE_HUB_CACHE") { return expand(v) }
        return hfHome.appendingPathComponent("hub", isDirectory: true)
    }

    /// The token file: `$HF_TOKEN_PATH`, else `<HF_HOME>/token`.
    public var tokenFile: URL {
        if let v = value("HF_TOKEN_PATH") { return expand(v) }
        return hfHome.appendingPathComponent("token")
    }

    /// `$HF_TOKEN` (or the older `$HUGGING_FACE_HUB_TOKEN`), else the first line of the token file; `nil` if neither.
    public var token: String? {
        if let v = value("HF_TOKEN") ?? value("HUGGING_FACE_HUB_TOKEN") { return v }
        guard let data = FileManager.default.contents(atPath: tokenFile.path),
              let text = String(data: data, encoding: .utf8) else { return nil }
        let line = text.split(whereSeparator: \.isNewline).first.map(String.init)?
            .trimmingCharacters(in: .whitespaces) ?? ""
        return line.isEmpty ? nil : line
    }

    /// `$HF_ENDPOINT` without a trailing slash, else `https://huggingface.co`.
    public var endpoint: URL {
        if let v = value("HF_ENDPOINT") {
            var s = v
            while s.hasSuffix("/") { s.removeLast() }
            if let url = URL(string: s) { return url }
        }
        return URL(string: "https://huggingface.co")!
    }

    /// Whether `HF_HUB_OFFLINE` is set to a true value (`1`, `true`, `yes`, `on`).
    public var offline: Bool {
        guard let v = value("HF_HUB_OFFLINE")?.lowercased() else { return false }
        return ["1", "true", "yes", "on"].contains(v)
    }
}

/// The Hugging Face hub cache, laid out exactly as `huggingface_hub` lays it out, so models downloaded
/// by Python tools are found and vice versa:
///
/// ```
/// <root>/models--google--paligemma2-3b-mix-448/
///     refs/main                       the commit hash "main" points to
///     blobs/<sha256 or git etag>      file contents
///     snapshots/<commit>/<path>       relative symlinks → ../../blobs/<hash>
/// ```
public struct HubCache: Sendable {
    /// The cache directory (`…/huggingface/hub`).
    public let root: URL

    /// A cache at `root`, or at the standard location (`$HF_HUB_CACHE`, else `$HF_HOME/hub`,
    /// else `~/.cache/huggingface/hub`) when `root` is `nil`.
    public init(root: URL? = nil, environment: HubEnvironment = HubEnvironment()) {
        self.root = root ?? environment.hubCache
    }

    /// `models--org--name` for `org/name`.
    public static func folderName(repo: String) -> String {
        "models--" + repo.split(separator: "/", omittingEmptySubsequences: false).joined(separator: "--")
    }

    /// The directory holding `refs`, `blobs` and `snapshots` of `repo`.
    public func repoDirectory(repo: String) -> URL {
        root.appendingPathComponent(Self.folderName(repo: repo), isDirectory: true)
    }

    /// Whether `s` is a full 40-character hexadecimal commit hash.
    public static func isCommitHash(_ s: String) -> Bool {
        s.utf8.count == 40 && s.utf8.allSatisfy { ($0 >= 48 && $0 <= 57) || ($0 >= 97 && $0 <= 102) }
    }

    /// The commit hash `revision` points to in the cache (`refs/<revision>`), or `revision` itself when it is a
    /// commit hash; `nil` when unknown. Never touches the network.
    public func commit(repo: String, revision: String = "main") -> String? {
        if Self.isCommitHash(revision) { return revision }
        let ref = repoDirectory(repo: repo).appendingPathComponent("refs").appendingPathComponent(revision)
        guard let data = FileManager.default.contents(atPath: ref.path),
              let text = String(data: data, encoding: .utf8) else { return nil }
        let hash = text.trimmingCharacters(in: .whitespacesAndNewlines)
        return hash.isEmpty ? nil : hash
    }

    /// The snapshot directory of `repo` at `revision` (branch, tag or commit hash; default `main`), or `nil` when
    /// that snapshot is not in the cache. Never touches the network.
    public func snapshotDirectory(repo: String, revision: String = "main") -> URL? {
        guard let commit = commit(repo: repo, revision: revision) else { return nil }
        let dir = repoDirectory(repo: repo).appendingPathComponent("snapshots", isDirectory: true)
            .appendingPathComponent(commit, isDirectory: true)
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: dir.path, isDirectory: &isDir), isDir.boolValue else { return nil }
        return dir
    }

    /// Where `path` of `repo` at `commit` lives in the snapshot tree (whether or not it exists).
    public func snapshotFile(repo: String, commit: String, path: String) -> URL {
        repoDirectory(repo: repo).appendingPathComponent("snapshots", isDirectory: true)
            .appendingPathComponent(commit, isDirectory: true).appendingPathComponent(path)
    }

    /// Where the blob named `etag` of `repo` lives (whether or not it exists).
    public func blobFile(repo: String, etag: String) -> URL {
        repoDirectory(repo: repo).appendingPathComponent("blobs", isDirectory: true).appendingPathComponent(etag)
    }
}

/// Splits `org/name@revision` into the repository id and revision (default `main`).
public func parseRepoID(_ id: String) -> (repo: String, revision: String) {
    if let at = id.lastIndex(of: "@"), at != id.startIndex {
        let rev = String(id[id.index(after: at)...])
        return (String(id[..<at]), rev.isEmpty ? "main" : rev)
    }
    return (id, "main")
}

/// Whether `id` looks like a hub repository id (`name` or `org/name`, optionally `@revision`) rather than a path.
public func isHubRepoID(_ id: String) -> Bool {
    let repo = parseRepoID(id).repo
    if repo.isEmpty || repo.hasPrefix(".") || repo.hasPrefix("/") || repo.hasPrefix("~") || repo.hasSuffix("/") { return false }
    let parts = repo.split(separator: "/", omittingEmptySubsequences: false)
    guard parts.count <= 2, parts.allSatisfy({ !$0.isEmpty && !$0.hasPrefix(".") && !$0.hasSuffix(".") && !$0.contains("--") }) else {
        return false
    }
    return repo.unicodeScalars.allSatisfy { CharacterSet.alphanumerics.contains($0) || "-_./".unicodeScalars.contains($0) }
}

/// Resolves a `--model` argument without touching the network: an existing local directory is returned as is;
/// a hub id (`google/paligemma2-3b-mix-448`, optionally `@revision`) is looked up in the standard Hugging Face
/// cache and its snapshot directory returned. `nil` when neither matches (the caller may then download).
public func resolveModel(_ idOrPath: String, cache: HubCache = HubCache()) -> URL? {
    var path = idOrPath
    if path == "~" || path.hasPrefix("~/") { path = NSHomeDirectory() + path.dropFirst() }
    var isDir: ObjCBool = false
    if FileManager.default.fileExists(atPath: path, isDirectory: &isDir), isDir.boolValue {
        return URL(fileURLWithPath: path, isDirectory: true).standardizedFileURL
    }
    guard isHubRepoID(idOrPath) else { return nil }
    let (repo, revision) = parseRepoID(idOrPath)
    return cache.snapshotDirectory(repo: repo, revision: revision)
}
