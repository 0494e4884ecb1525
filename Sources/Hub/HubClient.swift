import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// Download progress, reported per chunk (throttled) and always at the start and end of every file.
public struct DownloadProgress: Sendable, Equatable {
    /// The file being fetched (path inside the repository).
    public var file: String
    /// Zero-based index of ``file`` among the files to fetch.
    public var fileIndex: Int
    /// How many files the download covers.
    public var fileCount: Int
    /// Bytes of ``file`` present so far (a resumed file starts above zero).
    public var fileCompleted: Int64
    /// Size of ``file`` when known.
    public var fileTotal: Int64?
    /// Bytes present so far over all files (files already in the cache count as done).
    public var completed: Int64
    /// Total size of all files when the hub reported every size.
    public var total: Int64?

    /// Overall fraction done in 0…1, when the total is known.
    public var fractionCompleted: Double? {
        guard let total, total > 0 else { return total == 0 ? 1 : nil }
        return min(1, Double(completed) / Double(total))
    }
}

/// One file of a repository as listed by the hub.
public struct HubFile: Sendable, Equatable {
    /// Path inside the repository (`model-00001-of-00002.safetensors`).
    public var path: String
    /// Size in bytes when listed.
    public var size: Int64?
    /// SHA-256 of an LFS file when listed.
    public var lfsSHA256: String?
}

/// What `GET /api/models/{repo}/revision/{revision}` says about a revision.
public struct RevisionInfo: Sendable, Equatable {
    /// The commit hash the revision resolves to.
    public var commit: String
    /// The files of the repository at that commit.
    public var files: [HubFile]
}

/// Metadata from `HEAD /{repo}/resolve/{revision}/{path}`, read from the first answer (no redirects followed).
public struct FileMetadata: Sendable, Equatable {
    /// `X-Repo-Commit`.
    public var commit: String?
    /// `X-Linked-Etag` (an LFS file's SHA-256) or else `ETag` (git blob id), without quotes or `W/`.
    public var etag: String
    /// `X-Linked-Size`, else `Content-Length`.
    public var size: Int64?
    /// Where to GET the bytes: the redirect target (CDN) or the resolve URL itself.
    public var location: URL
}

/// Downloads repositories from the Hugging Face hub (or a mirror at `HF_ENDPOINT`) into the standard cache,
/// exactly as `huggingface_hub` does: blobs named by etag, snapshot entries as relative symlinks,
/// `refs/<revision>` holding the commit. Interrupted downloads resume with `Range` requests; LFS files are
/// checked against their SHA-256. The library prints nothing; pass a progress callback instead.
public struct HubClient: Sendable {
    /// The hub, e.g. `https://huggingface.co` (no trailing slash).
    public let endpoint: URL
    /// The bearer token sent to the hub (never to a CDN on another host).
    public let token: String?
    /// The cache downloads go into.
    public let cache: HubCache
    /// How many times a dropped or failed transfer is retried (resuming) before giving up.
    public var maxRetries: Int = 5
    /// Seconds before the first retry; doubled each time, capped at 10 s.
    public var retryDelay: TimeInterval = 1
    /// Idle timeout for a request, in seconds.
    public var timeout: TimeInterval = 60
    /// Refuse all network access and answer from the cache only (`HF_HUB_OFFLINE`).
    public var offline: Bool

    /// A client for `endpoint` (default `$HF_ENDPOINT`, else `https://huggingface.co`), authenticating with
    /// `token` (default `$HF_TOKEN`, else the token file), downloading into `cache`.
    public init(endpoint: URL? = nil, token: String? = nil, cache: HubCache = HubCache(),
                environment: HubEnvironment = HubEnvironment()) {
        var e = endpoint ?? environment.endpoint
        while e.absoluteString.hasSuffix("/"), let t = URL(string: String(e.absoluteString.dropLast())) { e = t }
        self.endpoint = e
        self.token = token ?? environment.token
        self.cache = cache
        self.offline = environment.offline
    }

    // MARK: Public API

    /// Downloads `repo` at `revision` (branch, tag or commit; default `main`) into the cache and returns its
    /// snapshot directory. `matching` keeps only files matching one of the glob patterns (`*.json`, `*.safetensors`).
    /// Files already in the cache are not fetched again. Offline, or when the hub cannot be reached, a cached
    /// snapshot is returned if present.
    public func download(repo: String, revision: String = "main", matching: [String]? = nil,
                         progress: (@Sendable (DownloadProgress) -> Void)? = nil) async throws -> URL {
        guard isHubRepoID(repo), !repo.contains("@") else { throw HubError.invalidRepoID(repo) }
        if offline {
            if let dir = cache.snapshotDirectory(repo: repo, revision: revision) { return dir }
            throw HubError.offline(repo: repo, revision: revision, cache: cache.root.path)
        }
        let info: RevisionInfo
        do {
            info = try await revisionInfo(repo: repo, revision: revision)
        } catch HubError.network(_, _) where cache.snapshotDirectory(repo: repo, revision: revision) != nil {
            return cache.snapshotDirectory(repo: repo, revision: revision)!
        }
        let files = info.files.filter { f in matching.map { Self.matches(f.path, patterns: $0) } ?? true }
        let tracker = ProgressTracker(files: files, callback: progress)
        let snapshot = cache.repoDirectory(repo: repo).appendingPathComponent("snapshots", isDirectory: true)
            .appendingPathComponent(info.commit, isDirectory: true)
        try makeDirectory(snapshot)
        for (index, file) in files.enumerated() {
            try Task.checkCancellation()
            try await fetchFile(repo: repo, commit: info.commit, file: file, index: index, tracker: tracker)
        }
        if revision != info.commit {
            let ref = cache.repoDirectory(repo: repo).appendingPathComponent("refs").appendingPathComponent(revision)
            try makeDirectory(ref.deletingLastPathComponent())
            do { try Data(info.commit.utf8).write(to: ref, options: .atomic) } catch {
                throw HubError.fileSystem(path: ref.path, reason: "\(error)")
            }
        }
        return snapshot
    }

    /// Lists the files of `repo` at `revision` and the commit it points to
    /// (`GET {endpoint}/api/models/{repo}/revision/{revision}?blobs=true`).
    public func revisionInfo(repo: String, revision: String = "main") async throws -> RevisionInfo {
        let url = URL(string: "\(endpoint.absoluteString)/api/models/\(repo)/revision/\(Self.escape(revision, keepSlash: false))?blobs=true")!
        let r = try await withRetries(url: url) {
            try await transport.send(request(url, method: "GET"), followRedirects: true)
        }
        guard r.status == 200 else { throw mapError(r, repo: repo, revision: revision, path: nil) }
        guard let json = try? JSONSerialization.jsonObject(with: r.body) as? [String: Any],
              let sha = json["sha"] as? String else {
            throw HubError.invalidResponse(url: url.absoluteString, reason: "no 'sha' in the revision JSON")
        }
        let siblings = json["siblings"] as? [[String: Any]] ?? []
        let files = siblings.compactMap { s -> HubFile? in
            guard let name = s["rfilename"] as? String else { return nil }
            let lfs = s["lfs"] as? [String: Any]
            let size = (lfs?["size"] as? NSNumber ?? s["size"] as? NSNumber)?.int64Value
            return HubFile(path: name, size: size, lfsSHA256: lfs?["sha256"] as? String)
        }
        return RevisionInfo(commit: sha, files: files)
    }

    /// Reads a file's metadata with `HEAD {endpoint}/{repo}/resolve/{revision}/{path}`, like `huggingface_hub`:
    /// absolute redirects (to a CDN) are not followed, their headers are the answer; relative ones (renamed repos) are.
    public func fileMetadata(repo: String, revision: String, path: String) async throws -> FileMetadata {
        var url = resolveURL(repo: repo, revision: revision, path: path)
        var hops = 0
        while true {
            let target = url
            var req = request(target, method: "HEAD")
            req.setValue("identity", forHTTPHeaderField: "Accept-Encoding")
            let r = try await withRetries(url: target) { try await transport.send(req, followRedirects: false) }
            if (300..<400).contains(r.status), let loc = r.header("Location"), URL(string: loc)?.host == nil, hops < 5,
               let next = URL(string: loc, relativeTo: target)?.absoluteURL {
                url = next
                hops += 1
                continue
            }
            guard r.status == 200 || (300..<400).contains(r.status) else {
                throw mapError(r, repo: repo, revision: revision, path: path)
            }
            guard let raw = r.header("X-Linked-Etag") ?? r.header("ETag") else {
                throw HubError.invalidResponse(url: target.absoluteString, reason: "no ETag header (is this a Hugging Face hub?)")
            }
            let size = (r.header("X-Linked-Size") ?? r.header("Content-Length")).flatMap { Int64($0) }
            var location = target
            if (300..<400).contains(r.status), let loc = r.header("Location"),
               let u = URL(string: loc, relativeTo: target)?.absoluteURL { location = u }
            return FileMetadata(commit: r.header("X-Repo-Commit"), etag: Self.normalizeETag(raw), size: size, location: location)
        }
    }

    // MARK: Files

    private func fetchFile(repo: String, commit: String, file: HubFile, index: Int, tracker: ProgressTracker) async throws {
        let pointer = cache.snapshotFile(repo: repo, commit: commit, path: file.path)
        if FileManager.default.fileExists(atPath: pointer.path) {
            let size = (try? FileManager.default.attributesOfItem(atPath: pointer.path)[.size] as? NSNumber)??.int64Value
            tracker.skip(index: index, size: size ?? file.size ?? 0)
            return
        }
        let meta = try await fileMetadata(repo: repo, revision: commit, path: file.path)
        let blob = cache.blobFile(repo: repo, etag: meta.etag)
        try makeDirectory(blob.deletingLastPathComponent())
        try makeDirectory(pointer.deletingLastPathComponent())
        let lockDir = cache.root.appendingPathComponent(".locks", isDirectory: true)
            .appendingPathComponent(HubCache.folderName(repo: repo), isDirectory: true)
        try makeDirectory(lockDir)
        let lock = try await FileLock.acquire(lockDir.appendingPathComponent(meta.etag + ".lock"))
        defer { lock.release() }
        if !FileManager.default.fileExists(atPath: blob.path) {
            let expectedHash = Self.isSHA256(meta.etag) ? meta.etag : file.lfsSHA256.map { $0.lowercased() }
            try await fetchBlob(from: meta.location, hubHost: resolveURL(repo: repo, revision: commit, path: file.path),
                                to: blob, expectedSHA256: expectedHash, expectedSize: meta.size ?? file.size,
                                displayPath: file.path, index: index, tracker: tracker)
        } else {
            let size = (try? FileManager.default.attributesOfItem(atPath: blob.path)[.size] as? NSNumber)??.int64Value
            tracker.skip(index: index, size: size ?? meta.size ?? 0)
        }
        try link(pointer: pointer, path: file.path, etag: meta.etag, blob: blob)
    }

    private func link(pointer: URL, path: String, etag: String, blob: URL) throws {
        let depth = path.split(separator: "/").count - 1
        let target = "../../" + String(repeating: "../", count: depth) + "blobs/" + etag
        let fm = FileManager.default
        if (try? fm.destinationOfSymbolicLink(atPath: pointer.path)) != nil || fm.fileExists(atPath: pointer.path) {
            try? fm.removeItem(at: pointer)
        }
        do { try fm.createSymbolicLink(atPath: pointer.path, withDestinationPath: target) } catch {
            do { try fm.copyItem(at: blob, to: pointer) } catch {
                throw HubError.fileSystem(path: pointer.path, reason: "\(error)")
            }
        }
    }

    private func fetchBlob(from url: URL, hubHost: URL, to blob: URL, expectedSHA256: String?, expectedSize: Int64?,
                           displayPath: String, index: Int, tracker: ProgressTracker) async throws {
        let incomplete = URL(fileURLWithPath: blob.path + ".incomplete")
        let writer = try BlobWriter(file: incomplete, hashing: expectedSHA256 != nil) { done in
            tracker.update(index: index, fileCompleted: done, fileTotal: expectedSize)
        }
        defer { writer.close() }
        if let expectedSize, writer.written > expectedSize { try writer.reset() }
        tracker.update(index: index, fileCompleted: writer.written, fileTotal: expectedSize, force: true)
        var failures = 0
        var rangeRefused = false
        while expectedSize == nil || writer.written < expectedSize! {
            try Task.checkCancellation()
            var req = request(url, method: "GET", auth: url.host == hubHost.host && url.port == hubHost.port)
            if writer.written > 0 { req.setValue("bytes=\(writer.written)-", forHTTPHeaderField: "Range") }
            do {
                let r = try await transport.send(req, followRedirects: true, sink: writer)
                if r.status == 416 && !rangeRefused {
                    rangeRefused = true
                    try writer.reset()
                    continue
                }
                guard r.status == 200 || r.status == 206 else {
                    if r.status >= 500 && failures < maxRetries {
                        failures += 1
                        try await backoff(failures)
                        continue
                    }
                    throw mapError(r, repo: "", revision: "", path: displayPath, fallbackURL: url)
                }
                break
            } catch let e as TransportError {
                if Task.isCancelled { throw CancellationError() }
                failures += 1
                guard failures <= maxRetries else { throw HubError.network(url: e.url.absoluteString, reason: e.reason) }
                try await backoff(failures)
            }
        }
        tracker.update(index: index, fileCompleted: writer.written, fileTotal: expectedSize, force: true)
        writer.close()
        let fail: (HubError) throws -> Never = { error in
            try? FileManager.default.removeItem(at: incomplete)
            throw error
        }
        if let expectedSize, writer.written != expectedSize {
            try fail(.sizeMismatch(path: displayPath, expected: expectedSize, actual: writer.written))
        }
        if let expectedSHA256, let actual = writer.digest(), actual != expectedSHA256 {
            try fail(.checksumMismatch(path: displayPath, expected: expectedSHA256, actual: actual))
        }
        if rename(incomplete.path, blob.path) != 0 {
            throw HubError.fileSystem(path: blob.path, reason: String(cString: strerror(errno)))
        }
    }

    // MARK: Helpers

    private var transport: HTTPTransport { HTTPTransport(timeout: timeout) }

    private func request(_ url: URL, method: String, auth: Bool = true) -> URLRequest {
        var r = URLRequest(url: url)
        r.httpMethod = method
        r.setValue("paligemma-swift-hub/1.0", forHTTPHeaderField: "User-Agent")
        if auth, let token { r.setValue("Bearer \(token)", forHTTPHeaderField: "Authorization") }
        return r
    }

    func resolveURL(repo: String, revision: String, path: String) -> URL {
        URL(string: "\(endpoint.absoluteString)/\(repo)/resolve/\(Self.escape(revision, keepSlash: false))/\(Self.escape(path, keepSlash: true))")!
    }

    private func withRetries(url: URL, _ body: () async throws -> HTTPResponse) async throws -> HTTPResponse {
        var failures = 0
        while true {
            do {
                let r = try await body()
                if r.status >= 500 && failures < maxRetries {
                    failures += 1
                    try await backoff(failures)
                    continue
                }
                return r
            } catch let e as TransportError {
                if Task.isCancelled { throw CancellationError() }
                failures += 1
                guard failures <= maxRetries else { throw HubError.network(url: e.url.absoluteString, reason: e.reason) }
                try await backoff(failures)
            }
        }
    }

    private func backoff(_ attempt: Int) async throws {
        let delay = min(10, retryDelay * pow(2, Double(attempt - 1)))
        if delay > 0 { try await Task.sleep(nanoseconds: UInt64(delay * 1e9)) }
    }

    private func mapError(_ r: HTTPResponse, repo: String, revision: String, path: String?, fallbackURL: URL? = nil) -> HubError {
        let code = r.header("X-Error-Code") ?? ""
        var message = r.header("X-Error-Message") ?? ""
        if message.isEmpty, let json = try? JSONSerialization.jsonObject(with: r.body) as? [String: Any], let e = json["error"] as? String {
            message = e
        }
        if message.isEmpty { message = String(decoding: r.body.prefix(200), as: UTF8.self) }
        let hasToken = token != nil
        switch code {
        case "RepoNotFound": return .repositoryNotFound(repo: repo, tokenSent: hasToken)
        case "GatedRepo": return .gatedRepository(repo: repo, endpoint: endpoint.absoluteString, tokenSent: hasToken)
        case "RevisionNotFound": return .revisionNotFound(repo: repo, revision: revision)
        case "EntryNotFound": return .fileNotFound(repo: repo, revision: revision, path: path ?? "")
        default: break
        }
        if !repo.isEmpty {
            if r.status == 401 || r.status == 403 {
                return .gatedRepository(repo: repo, endpoint: endpoint.absoluteString, tokenSent: hasToken)
            }
            if r.status == 404 {
                if let path { return .fileNotFound(repo: repo, revision: revision, path: path) }
                if message.lowercased().contains("revision") { return .revisionNotFound(repo: repo, revision: revision) }
                return .repositoryNotFound(repo: repo, tokenSent: hasToken)
            }
        }
        return .httpStatus(code: r.status, url: (fallbackURL ?? r.url).absoluteString, message: message)
    }

    private func makeDirectory(_ url: URL) throws {
        do { try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true) } catch {
            throw HubError.fileSystem(path: url.path, reason: "\(error)")
        }
    }

    static func normalizeETag(_ raw: String) -> String {
        var s = raw.trimmingCharacters(in: .whitespaces)
        if s.hasPrefix("W/") { s.removeFirst(2) }
        return s.trimmingCharacters(in: CharacterSet(charactersIn: "\""))
    }

    static func isSHA256(_ s: String) -> Bool {
        s.utf8.count == 64 && s.utf8.allSatisfy { ($0 >= 48 && $0 <= 57) || ($0 >= 97 && $0 <= 102) }
    }

    static func escape(_ s: String, keepSlash: Bool) -> String {
        var allowed = CharacterSet.alphanumerics.union(CharacterSet(charactersIn: "-._~"))
        if keepSlash { allowed.insert("/") }
        return s.addingPercentEncoding(withAllowedCharacters: allowed) ?? s
    }

    /// Whether `path` matches one of the glob `patterns` (`fnmatch` rules, `*` also crossing `/`, as in
    /// `huggingface_hub`'s `allow_patterns`).
    public static func matches(_ path: String, patterns: [String]) -> Bool {
        patterns.contains { p in
            let pattern = p.hasSuffix("/") ? p + "*" : p
            return fnmatch(pattern, path, 0) == 0
        }
    }
}

// MARK: - Internals

/// Appends a streamed body to `<blob>.incomplete`, hashing as it goes. Keeps its state across retries so a
/// resumed transfer continues the hash.
final class BlobWriter: BodySink {
    private let file: URL
    private var handle: FileHandle?
    private var hasher: SHA256?
    private let onProgress: (Int64) -> Void
    private(set) var written: Int64 = 0
    private var lastReport = Date.distantPast

    init(file: URL, hashing: Bool, onProgress: @escaping (Int64) -> Void) throws {
        self.file = file
        self.onProgress = onProgress
        let fm = FileManager.default
        if !fm.fileExists(atPath: file.path) { _ = fm.createFile(atPath: file.path, contents: nil) }
        guard let h = FileHandle(forUpdatingAtPath: file.path) else {
            throw HubError.fileSystem(path: file.path, reason: "cannot open for writing")
        }
        handle = h
        if hashing { hasher = SHA256() }
        // Hash what an earlier attempt left behind.
        while let chunk = try h.read(upToCount: 1 << 20), !chunk.isEmpty {
            chunk.withUnsafeBytes { hasher?.update($0) }
            written += Int64(chunk.count)
        }
    }

    func reset() throws {
        guard let handle else { return }
        try handle.truncate(atOffset: 0)
        written = 0
        if hasher != nil { hasher = SHA256() }
    }

    func begin(_ response: HTTPResponse) throws -> Bool {
        switch response.status {
        case 206:
            // Content-Range: bytes START-END/TOTAL
            let range = response.header("Content-Range") ?? ""
            let start = range.split(whereSeparator: { $0 == " " || $0 == "-" }).dropFirst().first.flatMap { Int64($0) }
            if start != written {
                if start == 0 { try reset(); return true }
                throw TransportError(url: response.url, reason: "server resumed at the wrong offset (\(range))")
            }
            return true
        case 200:
            try reset()   // the server ignored Range: start over
            return true
        default:
            return false
        }
    }

    func write(_ data: Data) throws {
        guard let handle else { return }
        do { try handle.write(contentsOf: data) } catch {
            throw HubError.fileSystem(path: file.path, reason: "\(error)")
        }
        data.withUnsafeBytes { hasher?.update($0) }
        written += Int64(data.count)
        let now = Date()
        if now.timeIntervalSince(lastReport) >= 0.1 {
            lastReport = now
            onProgress(written)
        }
    }

    func digest() -> String? {
        guard var h = hasher else { return nil }
        return h.finalize().hexString
    }

    func close() {
        try? handle?.close()
        handle = nil
    }
}

/// Turns per-file byte counts into ``DownloadProgress`` events.
// @unchecked Sendable: `done` and `sizes` are only touched under `lock`; the rest is immutable.
final class ProgressTracker: @unchecked Sendable {
    private let lock = NSLock()
    private let files: [HubFile]
    private var done: [Int64]
    private var sizes: [Int64?]
    private let callback: (@Sendable (DownloadProgress) -> Void)?

    init(files: [HubFile], callback: (@Sendable (DownloadProgress) -> Void)?) {
        self.files = files
        self.callback = callback
        done = Array(repeating: 0, count: files.count)
        sizes = files.map(\.size)
    }

    func skip(index: Int, size: Int64) {
        update(index: index, fileCompleted: size, fileTotal: size, force: true)
    }

    func update(index: Int, fileCompleted: Int64, fileTotal: Int64?, force: Bool = false) {
        guard let callback else { return }
        lock.lock()
        done[index] = fileCompleted
        if let fileTotal { sizes[index] = fileTotal }
        let total: Int64? = sizes.contains(where: { $0 == nil }) ? nil : sizes.reduce(0) { $0 + $1! }
        let p = DownloadProgress(file: files[index].path, fileIndex: index, fileCount: files.count,
                                 fileCompleted: fileCompleted, fileTotal: sizes[index],
                                 completed: done.reduce(0, +), total: total)
        lock.unlock()
        callback(p)
    }
}

/// An exclusive `flock` on `.locks/models--org--name/<etag>.lock`, as `huggingface_hub` takes, so two processes
/// do not write the same blob.
struct FileLock {
    let fd: Int32

    static func acquire(_ url: URL) async throws -> FileLock {
        let fd = open(url.path, O_CREAT | O_RDWR, 0o644)
        guard fd >= 0 else { throw HubError.fileSystem(path: url.path, reason: String(cString: strerror(errno))) }
        while flock(fd, LOCK_EX | LOCK_NB) != 0 {
            if errno != EWOULDBLOCK && errno != EINTR {
                let reason = String(cString: strerror(errno))
                sysClose(fd)
                throw HubError.fileSystem(path: url.path, reason: reason)
            }
            do { try await Task.sleep(nanoseconds: 100_000_000) } catch {
                sysClose(fd)
                throw error
            }
        }
        return FileLock(fd: fd)
    }

    func release() {
        _ = flock(fd, LOCK_UN)
        sysClose(fd)
    }
}

private func sysClose(_ fd: Int32) {
    #if canImport(Glibc)
    _ = Glibc.close(fd)
    #elseif canImport(Musl)
    _ = Musl.close(fd)
    #else
    _ = Darwin.close(fd)
    #endif
}
