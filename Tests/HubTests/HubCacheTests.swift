import XCTest
@testable import Hub

final class HubCacheTests: XCTestCase {
    var tmp: URL!

    override func setUpWithError() throws {
        tmp = FileManager.default.temporaryDirectory.appendingPathComponent("hubcache-\(UUID().uuidString)", isDirectory: true)
        try FileManager.default.createDirectory(at: tmp, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws { try? FileManager.default.removeItem(at: tmp) }

    func testCacheRootFromEnvironment() {
        XCTAssertEqual(HubEnvironment(["HOME": "/home/u"]).hubCache.path, "/home/u/.cache/huggingface/hub")
        XCTAssertEqual(HubEnvironment(["HOME": "/home/u", "HF_HOME": "/data/hf"]).hubCache.path, "/data/hf/hub")
        XCTAssertEqual(HubEnvironment(["HOME": "/home/u", "HF_HOME": "~/hf"]).hubCache.path, "/home/u/hf/hub")
        XCTAssertEqual(HubEnvironment(["HOME": "/home/u", "HF_HOME": "/data/hf", "HF_HUB_CACHE": "/fast/hub"]).hubCache.path, "/fast/hub")
        XCTAssertEqual(HubEnvironment(["HOME": "/home/u", "XDG_CACHE_HOME": "/xdg"]).hubCache.path, "/xdg/huggingface/hub")
        XCTAssertEqual(HubCache(environment: HubEnvironment(["HF_HUB_CACHE": "/fast/hub"])).root.path, "/fast/hub")
        XCTAssertEqual(HubCache(root: URL(fileURLWithPath: "/x")).root.path, "/x")
    }

    func testEndpointAndOfflineFromEnvironment() {
        XCTAssertEqual(HubEnvironment([:]).endpoint.absoluteString, "https://huggingface.co")
        XCTAssertEqual(HubEnvironment(["HF_ENDPOINT": "https://hf-mirror.com/"]).endpoint.absoluteString, "https://hf-mirror.com")
        XCTAssertFalse(HubEnvironment([:]).offline)
        XCTAssertTrue(HubEnvironment(["HF_HUB_OFFLINE": "1"]).offline)
        let client = HubClient(cache: HubCache(root: tmp), environment: HubEnvironment(["HF_ENDPOINT": "http://127.0.0.1:9/", "HF_TOKEN": "hf_x"]))
        XCTAssertEqual(client.endpoint.absoluteString, "http://127.0.0.1:9")
        XCTAssertEqual(client.token, "hf_x")
        XCTAssertEqual(client.resolveURL(repo: "google/paligemma2-3b-mix-448", revision: "refs/pr/1", path: "sub dir/a.json").absoluteString,
                       "http://127.0.0.1:9/google/paligemma2-3b-mix-448/resolve/refs%2Fpr%2F1/sub%20dir/a.json")
    }

    func testTokenFromEnvironmentThenTokenFile() throws {
        let home = tmp.appendingPathComponent("hfhome")
        try FileManager.default.createDirectory(at: home, withIntermediateDirectories: true)
        XCTAssertNil(HubEnvironment(["HF_HOME": home.path]).token)
        try "hf_fromfile\n".write(to: home.appendingPathComponent("token"), atomically: true, encoding: .utf8)
        XCTAssertEqual(HubEnvironment(["HF_HOME": home.path]).token, "hf_fromfile")
        XCTAssertEqual(HubEnvironment(["HF_HOME": home.path, "HF_TOKEN": "hf_env"]).token, "hf_env")
        // Default location under HOME.
        let userHome = tmp.appendingPathComponent("user")
        let dir = userHome.appendingPathComponent(".cache/huggingface")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        try " hf_default \n".write(to: dir.appendingPathComponent("token"), atomically: true, encoding: .utf8)
        XCTAssertEqual(HubEnvironment(["HOME": userHome.path]).token, "hf_default")
        XCTAssertEqual(HubClient(cache: HubCache(root: tmp), environment: HubEnvironment(["HOME": userHome.path])).token, "hf_default")
    }

    func testRepoIDs() {
        XCTAssertEqual(HubCache.folderName(repo: "google/paligemma2-3b-mix-448"), "models--google--paligemma2-3b-mix-448")
        XCTAssertTrue(isHubRepoID("google/paligemma2-3b-mix-448"))
        XCTAssertTrue(isHubRepoID("gpt2"))
        XCTAssertTrue(isHubRepoID("google/paligemma2-3b-mix-448@main"))
        XCTAssertFalse(isHubRepoID("./models/pg"))
        XCTAssertFalse(isHubRepoID("/abs/path"))
        XCTAssertFalse(isHubRepoID("a/b/c"))
        XCTAssertFalse(isHubRepoID("a--b/c"))
        XCTAssertEqual(parseRepoID("a/b@v1").revision, "v1")
        XCTAssertEqual(parseRepoID("a/b").revision, "main")
    }

    /// Builds the tree huggingface_hub leaves behind and resolves ids against it, with no network.
    func testResolvesPythonStyleCacheWithoutNetwork() throws {
        let commit = "0123456789abcdef0123456789abcdef01234567"
        let older = "89abcdef0123456789abcdef0123456789abcdef"
        let repoDir = tmp.appendingPathComponent("models--google--paligemma2-3b-mix-448")
        let fm = FileManager.default
        for c in [commit, older] {
            try fm.createDirectory(at: repoDir.appendingPathComponent("snapshots/\(c)"), withIntermediateDirectories: true)
        }
        try fm.createDirectory(at: repoDir.appendingPathComponent("blobs"), withIntermediateDirectories: true)
        try fm.createDirectory(at: repoDir.appendingPathComponent("refs"), withIntermediateDirectories: true)
        try Data("{\"model_type\":\"paligemma\"}".utf8).write(to: repoDir.appendingPathComponent("blobs/abc123"))
        try fm.createSymbolicLink(atPath: repoDir.appendingPathComponent("snapshots/\(commit)/config.json").path,
                                  withDestinationPath: "../../blobs/abc123")
        try Data(commit.utf8).write(to: repoDir.appendingPathComponent("refs/main"))   // no newline, as Python writes it

        let cache = HubCache(root: tmp)
        XCTAssertEqual(cache.commit(repo: "google/paligemma2-3b-mix-448"), commit)
        let snap = try XCTUnwrap(resolveModel("google/paligemma2-3b-mix-448", cache: cache))
        XCTAssertEqual(snap.lastPathComponent, commit)
        XCTAssertEqual(try String(contentsOf: snap.appendingPathComponent("config.json"), encoding: .utf8), "{\"model_type\":\"paligemma\"}")
        XCTAssertEqual(resolveModel("google/paligemma2-3b-mix-448@\(older)", cache: cache)?.lastPathComponent, older)
        XCTAssertNil(resolveModel("google/paligemma2-3b-mix-448@v2", cache: cache))          // unknown ref
        XCTAssertNil(resolveModel("google/paligemma2-10b-mix-448", cache: cache))            // not downloaded
        XCTAssertNil(cache.snapshotDirectory(repo: "google/paligemma2-3b-mix-448", revision: String(repeating: "f", count: 40)))
        // A local directory wins and is returned as is.
        XCTAssertEqual(resolveModel(repoDir.path, cache: cache)?.path, repoDir.standardizedFileURL.path)
        XCTAssertNil(resolveModel(tmp.appendingPathComponent("missing").path, cache: cache))
        // Through the environment, as the CLI calls it.
        XCTAssertEqual(resolveModel("google/paligemma2-3b-mix-448", cache: HubCache(environment: HubEnvironment(["HF_HUB_CACHE": tmp.path])))?
            .lastPathComponent, commit)
    }

    func testGlobMatching() {
        XCTAssertTrue(HubClient.matches("model.safetensors", patterns: ["*.safetensors"]))
        XCTAssertTrue(HubClient.matches("sub/model.safetensors", patterns: ["*.safetensors"]))
        XCTAssertTrue(HubClient.matches("sub/x.txt", patterns: ["sub/"]))
        XCTAssertFalse(HubClient.matches("config.json", patterns: ["*.safetensors", "tokenizer*"]))
    }
}
