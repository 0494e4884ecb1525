import Foundation
import Hummingbird
import Logging
import PaliGemma
@testable import PaliGemmaServer
import ServiceLifecycle
import XCTest

/// The web page's example images: what a model directory's `examples/` folder may make the server
/// read and serve, and the routes over loopback.
final class PageResourcesTests: XCTestCase {
    static let demo = BrowserTests.demo
    static let png = Data(base64Encoded: "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAIAAACQd1PeAAAADElEQVR4nGP4z8AAAAMBAQDJ/pLvAAAAAElFTkSuQmCC")!

    var folder: URL!

    override func setUpWithError() throws {
        folder = FileManager.default.temporaryDirectory.appendingPathComponent("paligemma-examples-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: folder.appendingPathComponent("examples/sub"), withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws {
        try? FileManager.default.removeItem(at: folder)
    }

    func testTheDemoModelsExamples() throws {
        let examples = PageExamples.load(from: Self.demo.appendingPathComponent("examples"))
        XCTAssertEqual(examples.problems, [])
        XCTAssertEqual(examples.listing.examples.map(\.name), ["exit.png", "wind.png", "fire.png", "shapes.png"])
        XCTAssertEqual(examples.listing.defaults?.objects, "circle ; square")
        XCTAssertEqual(examples.listing.defaults?.languages, ["en", "de", "fr"])
        for entry in examples.listing.examples {
            XCTAssertEqual(entry.url, "/examples/\(entry.name)")
            XCTAssertNotNil(entry.question)
            let bytes = try Data(contentsOf: Self.demo.appendingPathComponent("examples/\(entry.name)"))
            XCTAssertEqual(examples.images[entry.name]?.bytes, bytes)
            XCTAssertEqual(examples.images[entry.name]?.contentType, "image/png")
            XCTAssertLessThan(bytes.count, 8 << 10, "an example is a few KB")
        }
    }

    func testOnlyPlainNamesOfImagesInsideTheFolderAreServed() throws {
        let examples = folder.appendingPathComponent("examples")
        try Self.png.write(to: examples.appendingPathComponent("ok.png"))
        try Self.png.write(to: folder.appendingPathComponent("secret.png"))
        try Self.png.write(to: examples.appendingPathComponent("sub/inner.png"))
        try Self.png.write(to: examples.appendingPathComponent(".hidden.png"))
        try FileManager.default.createSymbolicLink(at: examples.appendingPathComponent("link.png"),
                                                   withDestinationURL: folder.appendingPathComponent("secret.png"))
        try Data(count: PageExamples.maxImageBytes + 1).write(to: examples.appendingPathComponent("big.png"))
        try Data("not a picture".utf8).write(to: examples.appendingPathComponent("text.png"))
        let files = ["../secret.png", "sub/inner.png", ".hidden.png", "link.png", "big.png", "text.png", "missing.png", "ok.png", "ok.png"]
        let manifest = ["examples": files.map { ["file": $0] }]
        try JSONSerialization.data(withJSONObject: manifest).write(to: examples.appendingPathComponent("examples.json"))

        let loaded = PageExamples.load(from: examples)
        XCTAssertEqual(loaded.listing.examples.map(\.name), ["ok.png"])
        XCTAssertEqual(Array(loaded.images.keys), ["ok.png"])
        XCTAssertEqual(loaded.problems.count, files.count - 1, loaded.problems.joined(separator: "\n"))
    }

    func testAFolderWithoutManifestListsItsImages() throws {
        let examples = folder.appendingPathComponent("examples")
        for name in ["b.png", "a.PNG", "notes.txt"] { try Self.png.write(to: examples.appendingPathComponent(name)) }
        let loaded = PageExamples.load(from: examples)
        XCTAssertEqual(loaded.listing.examples.map(\.name), ["a.PNG", "b.png"])
        XCTAssertNil(loaded.listing.defaults)
        XCTAssertEqual(PageExamples.load(from: folder.appendingPathComponent("nothing-here")).listing.examples.count, 0)
    }

    func testTheRoutes() async throws {
        let service = PaliGemmaService(pipeline: try PaliGemmaPipeline(directory: Self.demo), segmenter: nil)
        let router = Router(context: ServerRequestContext.self)
        router.add(middleware: JSONErrorMiddleware())
        service.addPageRoutes(to: router)
        let (ports, portSink) = AsyncStream.makeStream(of: Int.self)
        let app = Application(router: router, configuration: .init(address: .hostname("127.0.0.1", port: 0)),
                              onServerRunning: { channel in portSink.yield(channel.localAddress?.port ?? 0) })
        var logger = Logger(label: "PageResourcesTests")
        logger.logLevel = .warning
        let group = ServiceGroup(configuration: .init(services: [app], logger: logger))
        let server = Task { try await group.run() }
        defer { server.cancel() }
        var iterator = ports.makeAsyncIterator()
        guard let port = await iterator.next() else { return XCTFail("the server did not start") }

        let listing = try await HTTPClient.request(port: port, method: "GET", path: "/examples")
        XCTAssertEqual(listing.status, 200)
        let entries = try XCTUnwrap(listing.json["examples"] as? [[String: Any]])
        XCTAssertEqual(entries.first?["url"] as? String, "/examples/exit.png")
        XCTAssertEqual((listing.json["defaults"] as? [String: Any])?["object"] as? String, "circle")

        let image = try await HTTPClient.request(port: port, method: "GET", path: "/examples/exit.png")
        XCTAssertEqual(image.status, 200)
        XCTAssertEqual(image.headers["content-type"], "image/png")
        XCTAssertEqual(image.body, try Data(contentsOf: Self.demo.appendingPathComponent("examples/exit.png")))
        for path in ["/examples/examples.json", "/examples/..%2Fconfig.json", "/examples/../config.json", "/examples/model.safetensors",
                     "/examples/%2E%2E%2Fvae-oid.npz"] {
            let refused = try await HTTPClient.request(port: port, method: "GET", path: path)
            XCTAssertEqual(refused.status, 404, path)
            XCTAssertNotEqual(refused.body.prefix(4), Data("PK\u{3}\u{4}".utf8), path)
        }
        await group.triggerGracefulShutdown()
        _ = await server.result
    }
}
