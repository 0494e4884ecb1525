import XCTest
@testable import Hub

final class HubDownloadTests: XCTestCase {
    static let commit = "a1b2c3d4e5f60718293a4b5c6d7e8f9012345678"
    var tmp: URL!
    var server: MockHubServer!

    static func bytes(_ n: Int, seed: UInt32) -> Data {
        var x = seed
        return Data((0..<n).map { _ in x = x &* 1_664_525 &+ 1_013_904_223; return UInt8(truncatingIfNeeded: x >> 24) })
    }

    static let files: [MockHubServer.RepoFile] = [
        .init(path: "config.json", data: Data("{\"model_type\":\"paligemma\"}".utf8), lfs: false),
        .init(path: "tokenizer.json", data: bytes(5_000, seed: 1), lfs: false),
        .init(path: "model.safetensors", data: bytes(300_000, seed: 2), lfs: true),
        .init(path: "sub/dir/extra.bin", data: bytes(70_000, seed: 3), lfs: true),
    ]

    override func setUpWithError() throws {
        tmp = FileManager.default.temporaryDirectory.appendingPathComponent("hubdl-\(UUID().uuidString)", isDirectory: true)
        try FileManager.default.createDirectory(at: tmp, withIntermediateDirectories: true)
        server = MockHubServer(repos: [
            "org/model": .init(commit: Self.commit, files: Self.files),
            "google/paligemma2-3b-mix-448": .init(commit: Self.commit, files: Array(Self.files.prefix(3)), token: "hf_secret"),
        ])
        try server.start(lifetime: 30)
    }

    override func tearDownWithError() throws {
        server.stop()
        try? FileManager.default.removeItem(at: tmp)
    }

    func client(token: String? = nil, env: [String: String] = [:]) -> HubClient {
        var c = HubClient(endpoint: server.base, token: token, cache: HubCache(root: tmp), environment: HubEnvironment(env))
        c.retryDelay = 0
        c.timeout = 5
        return c
    }

    var repoDir: URL { tmp.appendingPathComponent("models--org--model") }

    func assertLayout(repoDir: URL, files: [MockHubServer.RepoFile], file: StaticString = #filePath, line: UInt = #line) throws {
        let fm = FileManager.default
        XCTAssertEqual(try String(contentsOf: repoDir.appendingPathComponent("refs/main"), encoding: .utf8), Self.commit, file: file, line: line)
        let blobs = try fm.contentsOfDirectory(atPath: repoDir.appendingPathComponent("blobs").path).sorted()
        XCTAssertEqual(blobs, files.map { $0.lfs ? $0.sha256 : $0.gitETag }.sorted(), file: file, line: line)
        for f in files {
            let pointer = repoDir.appendingPathComponent("snapshots/\(Self.commit)/\(f.path)")
            let depth = f.path.split(separator: "/").count - 1
            let blob = f.lfs ? f.sha256 : f.gitETag
            XCTAssertEqual(try fm.destinationOfSymbolicLink(atPath: pointer.path),
                           "../../" + String(repeating: "../", count: depth) + "blobs/" + blob, file: file, line: line)
            XCTAssertEqual(try Data(contentsOf: pointer), f.data, f.path, file: file, line: line)
        }
    }

    func testCompleteDownloadProducesCacheLayout() async throws {
        let events = EventLog()
        let snap = try await client().download(repo: "org/model") { events.append($0) }
        XCTAssertEqual(snap.path, repoDir.appendingPathComponent("snapshots/\(Self.commit)").path)
        try assertLayout(repoDir: repoDir, files: Self.files)
        // Found offline afterwards, by id.
        XCTAssertEqual(resolveModel("org/model", cache: HubCache(root: tmp))?.path, snap.path)
        // HEAD metadata read from the first answer: the CDN was only GET, never HEAD.
        let reqs = server.requests
        XCTAssertTrue(reqs.contains { $0.method == "HEAD" && $0.path.hasPrefix("/org/model/resolve/\(Self.commit)/model.safetensors") })
        XCTAssertFalse(reqs.contains { $0.method == "HEAD" && $0.path.hasPrefix("/cdn/") })
        XCTAssertEqual(reqs.filter { $0.method == "GET" && $0.path.hasPrefix("/cdn/") }.count, 2)
        XCTAssertEqual(reqs.first?.path, "/api/models/org/model/revision/main?blobs=true")
        // Progress: ends at the total, per file and overall.
        let total = Int64(Self.files.reduce(0) { $0 + $1.data.count })
        let last = try XCTUnwrap(events.all.last)
        XCTAssertEqual(last.completed, total)
        XCTAssertEqual(last.total, total)
        XCTAssertEqual(last.fractionCompleted, 1)
        for (i, f) in Self.files.enumerated() {
            let fileLast = try XCTUnwrap(events.all.last { $0.fileIndex == i })
            XCTAssertEqual(fileLast.file, f.path)
            XCTAssertEqual(fileLast.fileCompleted, Int64(f.data.count))
            XCTAssertEqual(fileLast.fileTotal, Int64(f.data.count))
        }
        XCTAssertEqual(events.all.map(\.completed), events.all.map(\.completed).sorted())

        // A second download makes no per-file requests: everything is in the snapshot already.
        let before = server.requests.count
        let again = try await client().download(repo: "org/model")
        XCTAssertEqual(again, snap)
        XCTAssertEqual(server.requests.count - before, 1)   // just the revision API call
    }

    func testDroppedConnectionIsResumedWithRange() async throws {
        server.dropFirstCDNTransfer = true
        _ = try await client().download(repo: "org/model")
        try assertLayout(repoDir: repoDir, files: Self.files)
        let model = Self.files[2]
        let cdn = server.requests.filter { $0.method == "GET" && $0.path == "/cdn/\(model.sha256)" }
        XCTAssertEqual(cdn.count, 2)
        XCTAssertNil(cdn[0].headers["range"])
        XCTAssertEqual(cdn[1].headers["range"], "bytes=\(model.data.count / 2)-")
        XCTAssertFalse(FileManager.default.fileExists(atPath: repoDir.appendingPathComponent("blobs/\(model.sha256).incomplete").path))
    }

    func testLeftoverPartialFileIsResumedByALaterRun() async throws {
        // First run gives up after the dropped transfer (no retries), leaving blobs/<sha>.incomplete.
        server.dropFirstCDNTransfer = true
        var c = client()
        c.maxRetries = 0
        do {
            _ = try await c.download(repo: "org/model", matching: ["*.safetensors"])
            XCTFail("expected a network error")
        } catch let e as HubError {
            guard case .network = e else { return XCTFail("\(e)") }
            XCTAssertTrue(e.description.contains("resume"), e.description)
        }
        let model = Self.files[2]
        let partial = repoDir.appendingPathComponent("blobs/\(model.sha256).incomplete")
        XCTAssertEqual(try Data(contentsOf: partial), model.data.prefix(model.data.count / 2))
        XCTAssertNil(HubCache(root: tmp).snapshotDirectory(repo: "org/model"))   // refs/main not written yet

        let events = EventLog()
        _ = try await client().download(repo: "org/model", matching: ["*.safetensors"]) { events.append($0) }
        XCTAssertEqual(try Data(contentsOf: repoDir.appendingPathComponent("snapshots/\(Self.commit)/model.safetensors")), model.data)
        let cdn = server.requests.filter { $0.method == "GET" && $0.path == "/cdn/\(model.sha256)" }
        XCTAssertEqual(cdn.last?.headers["range"], "bytes=\(model.data.count / 2)-")
        XCTAssertEqual(events.all.first { $0.file == "model.safetensors" }?.fileCompleted, Int64(model.data.count / 2))
        XCTAssertFalse(FileManager.default.fileExists(atPath: partial.path))
        // Only the matching files were fetched.
        let snapFiles = try FileManager.default.subpathsOfDirectory(atPath: repoDir.appendingPathComponent("snapshots/\(Self.commit)").path)
        XCTAssertEqual(snapFiles, ["model.safetensors"])
    }

    func testServerIgnoringRangeRestartsFromZero() async throws {
        server.dropFirstCDNTransfer = true
        server.ignoreRange = true
        _ = try await client().download(repo: "org/model")
        try assertLayout(repoDir: repoDir, files: Self.files)
        let model = Self.files[2]
        let cdn = server.requests.filter { $0.method == "GET" && $0.path == "/cdn/\(model.sha256)" }
        XCTAssertEqual(cdn.last?.headers["range"], "bytes=\(model.data.count / 2)-")   // asked, got 200 with everything
    }

    func testCorruptedDownloadIsRejectedAndRemoved() async throws {
        server.corruptCDN = true
        do {
            _ = try await client().download(repo: "org/model", matching: ["model.safetensors"])
            XCTFail("expected a checksum error")
        } catch let e as HubError {
            guard case let .checksumMismatch(path, expected, actual) = e else { return XCTFail("\(e)") }
            XCTAssertEqual(path, "model.safetensors")
            XCTAssertEqual(expected, Self.files[2].sha256)
            XCTAssertNotEqual(actual, expected)
            XCTAssertTrue(e.description.contains("deleted"))
        }
        let blobs = (try? FileManager.default.contentsOfDirectory(atPath: repoDir.appendingPathComponent("blobs").path)) ?? []
        XCTAssertEqual(blobs, [])
        XCTAssertFalse(FileManager.default.fileExists(atPath: repoDir.appendingPathComponent("snapshots/\(Self.commit)/model.safetensors").path))
        XCTAssertNil(HubCache(root: tmp).snapshotDirectory(repo: "org/model"))
    }

    func testGatedRepoNeedsToken() async throws {
        let repo = "google/paligemma2-3b-mix-448"
        do {
            _ = try await client().download(repo: repo)
            XCTFail("expected the gated error")
        } catch let e as HubError {
            XCTAssertEqual(e, .gatedRepository(repo: repo, endpoint: server.base.absoluteString, tokenSent: false))
            let text = e.description
            XCTAssertTrue(text.contains("\(server.base.absoluteString)/\(repo)"), text)
            XCTAssertTrue(text.contains("Gemma licence"), text)
            XCTAssertTrue(text.contains("HF_TOKEN"), text)
        }
        do {
            _ = try await client(token: "hf_wrong").download(repo: repo)
            XCTFail("expected the gated error")
        } catch let e as HubError {
            XCTAssertEqual(e, .gatedRepository(repo: repo, endpoint: server.base.absoluteString, tokenSent: true))
        }
        // The right token from the token file under HF_HOME.
        let home = tmp.appendingPathComponent("hfhome")
        try FileManager.default.createDirectory(at: home, withIntermediateDirectories: true)
        try "hf_secret\n".write(to: home.appendingPathComponent("token"), atomically: true, encoding: .utf8)
        let c = client(env: ["HF_HOME": home.path])
        XCTAssertEqual(c.token, "hf_secret")
        let snap = try await c.download(repo: repo)
        XCTAssertEqual(try Data(contentsOf: snap.appendingPathComponent("model.safetensors")), Self.files[2].data)
        let reqs = server.requests
        // Token sent to the hub, not to the CDN.
        XCTAssertTrue(reqs.contains { $0.path.hasPrefix("/\(repo)/resolve/") && $0.headers["authorization"] == "Bearer hf_secret" })
        XCTAssertTrue(reqs.filter { $0.path.hasPrefix("/cdn/") }.allSatisfy { $0.headers["authorization"] == nil })
    }

    func testUnknownRepoAndRevision() async throws {
        do {
            _ = try await client().download(repo: "org/nope")
            XCTFail("expected not found")
        } catch let e as HubError {
            XCTAssertEqual(e, .repositoryNotFound(repo: "org/nope", tokenSent: false))
            XCTAssertTrue(e.description.contains("not found"))
        }
        do {
            // The real hub answers 401 + X-Error-Code: RepoNotFound for a missing (or private) repo.
            _ = try await client(token: "hf_x").download(repo: "org/private-thing")
            XCTFail("expected not found")
        } catch let e as HubError {
            XCTAssertEqual(e, .repositoryNotFound(repo: "org/private-thing", tokenSent: true))
        }
        do {
            _ = try await client().download(repo: "org/model", revision: "v9")
            XCTFail("expected not found")
        } catch let e as HubError {
            XCTAssertEqual(e, .revisionNotFound(repo: "org/model", revision: "v9"))
        }
        do {
            _ = try await client().download(repo: "../etc")
            XCTFail("expected invalid id")
        } catch let e as HubError {
            XCTAssertEqual(e, .invalidRepoID("../etc"))
        }
    }

    func testEndpointFromEnvironmentAndCommitRevision() async throws {
        var c = HubClient(cache: HubCache(root: tmp), environment: HubEnvironment(["HF_ENDPOINT": server.base.absoluteString + "/"]))
        c.retryDelay = 0
        XCTAssertEqual(c.endpoint, server.base)
        let snap = try await c.download(repo: "org/model", revision: Self.commit, matching: ["*.json"])
        XCTAssertEqual(snap.lastPathComponent, Self.commit)
        XCTAssertEqual(try Data(contentsOf: snap.appendingPathComponent("config.json")), Self.files[0].data)
        // A commit revision writes no ref.
        XCTAssertFalse(FileManager.default.fileExists(atPath: repoDir.appendingPathComponent("refs").path))
        XCTAssertEqual(server.requests.first?.path, "/api/models/org/model/revision/\(Self.commit)?blobs=true")
    }

    func testOfflineUsesCacheOnly() async throws {
        _ = try await client().download(repo: "org/model", matching: ["config.json"])
        server.stop()
        let count = server.requests.count
        // HF_HUB_OFFLINE: cache only.
        let offline = client(env: ["HF_HUB_OFFLINE": "1"])
        let snap = try await offline.download(repo: "org/model")
        XCTAssertEqual(snap.lastPathComponent, Self.commit)
        do {
            _ = try await offline.download(repo: "org/other")
            XCTFail("expected offline error")
        } catch let e as HubError {
            guard case .offline = e else { return XCTFail("\(e)") }
        }
        // Hub unreachable: the cached snapshot is returned.
        var c = client()
        c.maxRetries = 0
        let again = try await c.download(repo: "org/model")
        XCTAssertEqual(again, snap)
        XCTAssertEqual(server.requests.count, count)
    }
}

// @unchecked Sendable: `events` is only touched under `lock`.
final class EventLog: @unchecked Sendable {
    private let lock = NSLock()
    private var events: [DownloadProgress] = []
    func append(_ e: DownloadProgress) { lock.lock(); events.append(e); lock.unlock() }
    var all: [DownloadProgress] { lock.lock(); defer { lock.unlock() }; return events }
}
