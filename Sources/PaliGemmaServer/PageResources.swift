import Foundation
import Hummingbird
import Imaging
import NIOCore

/// Example images for the web page and the prompts that fit the loaded model, read once at start
/// from the `examples/` folder beside the model's weights, so each model directory can carry its
/// own (Models/demo ships a few of its scenes).
///
/// The folder holds `examples.json`:
///
/// ```json
/// {"defaults": {"question": "…", "objects": "a ; b", "object": "a", "languages": ["en"], "tasks": ["caption", "detect"]},
///  "examples": [{"file": "scene.png", "description": "…", "question": "…", "objects": "…", "object": "…"}]}
/// ```
///
/// Every field but `file` is optional. Without `examples.json` the folder's images are listed
/// with no prompts; without the folder the page keeps its generic defaults.
///
/// Only the files named are served, from memory: a request can name nothing else on the disk.
struct PageExamples: Sendable {
    struct Defaults: Codable, Sendable {
        var question: String?
        var objects: String?
        var object: String?
        /// Languages the model answers in (the page offers these).
        var languages: [String]?
        /// Tasks the model was trained for (the page hides the others).
        var tasks: [String]?
    }

    struct Example: Codable, Sendable {
        var file: String
        /// Alt text: what the picture shows.
        var description: String?
        var question: String?
        var objects: String?
        var object: String?
    }

    struct Manifest: Decodable {
        var defaults: Defaults?
        var examples: [Example]?
    }

    /// What `GET /examples` answers.
    struct Listing: Encodable, Sendable {
        struct Entry: Encodable, Sendable {
            let name: String
            let url: String
            let description: String?
            let question: String?
            let objects: String?
            let object: String?
        }
        let defaults: Defaults?
        let examples: [Entry]
    }

    struct Image: Sendable {
        let bytes: Data
        let contentType: String
    }

    /// Bounds on what a folder may make the server hold in memory.
    static let maxExamples = 16
    static let maxImageBytes = 1 << 20
    static let manifestName = "examples.json"

    let listing: Listing
    let images: [String: Image]
    /// Why an entry was left out (a bad name, a missing or oversized file), for the log.
    let problems: [String]

    static let empty = PageExamples(listing: Listing(defaults: nil, examples: []), images: [:], problems: [])

    /// A name the page can put in a URL as it is, with no directory part.
    static func isPlainName(_ name: String) -> Bool {
        guard (1...64).contains(name.utf8.count), let first = name.unicodeScalars.first,
              CharacterSet.alphanumerics.contains(first) else { return false }
        return name.unicodeScalars.allSatisfy { $0.isASCII && (CharacterSet.alphanumerics.contains($0) || "._-".unicodeScalars.contains($0)) }
    }

    static func load(from folder: URL) -> PageExamples {
        let fm = FileManager.default
        var isDirectory: ObjCBool = false
        guard fm.fileExists(atPath: folder.path, isDirectory: &isDirectory), isDirectory.boolValue else { return .empty }
        var problems: [String] = []
        var manifest = Manifest(defaults: nil, examples: nil)
        let manifestURL = folder.appendingPathComponent(manifestName)
        if fm.fileExists(atPath: manifestURL.path) {
            do {
                manifest = try JSONDecoder().decode(Manifest.self, from: Data(contentsOf: manifestURL))
            } catch {
                problems.append("\(manifestURL.path): \(error)")
            }
        }
        let listed = manifest.examples ?? ((try? fm.contentsOfDirectory(atPath: folder.path)) ?? []).sorted()
            .filter { ["png", "jpg", "jpeg", "webp"].contains(($0 as NSString).pathExtension.lowercased()) }
            .map { Example(file: $0) }
        let root = folder.resolvingSymlinksInPath().standardizedFileURL.path + "/"
        var entries: [Listing.Entry] = []
        var images: [String: Image] = [:]
        for example in listed {
            guard entries.count < maxExamples else {
                problems.append("more than \(maxExamples) examples; the rest are left out")
                break
            }
            let name = example.file
            guard isPlainName(name), images[name] == nil else {
                problems.append("\(name): not a plain file name, or listed twice")
                continue
            }
            let url = folder.appendingPathComponent(name).resolvingSymlinksInPath().standardizedFileURL
            guard url.path.hasPrefix(root),
                  let size = (try? fm.attributesOfItem(atPath: url.path))?[.size] as? Int, size <= maxImageBytes,
                  let bytes = try? Data(contentsOf: url), bytes.count <= maxImageBytes else {
                problems.append("\(name): missing, outside the folder, or larger than \(maxImageBytes) bytes")
                continue
            }
            guard let format = ImageFormat.detect(bytes) else {
                problems.append("\(name): not a JPEG, PNG or WebP file")
                continue
            }
            let type: String
            switch format {
            case .jpeg: type = "image/jpeg"
            case .png: type = "image/png"
            case .webp: type = "image/webp"
            }
            images[name] = Image(bytes: bytes, contentType: type)
            entries.append(.init(name: name, url: "/examples/\(name)", description: example.description,
                                 question: example.question, objects: example.objects, object: example.object))
        }
        return PageExamples(listing: Listing(defaults: manifest.defaults, examples: entries), images: images, problems: problems)
    }
}

extension PaliGemmaService {
    /// The web page's own resources: `GET /examples` (example images and the prompts and defaults
    /// that fit the model, JSON) and `GET /examples/NAME` (one of those images). Outside `/v1/`,
    /// so they need no API key: they hold nothing but what the model directory ships.
    func addPageRoutes(to router: Router<ServerRequestContext>) {
        let examples = PageExamples.load(from: pipeline.model.directory.appendingPathComponent("examples"))
        for problem in examples.problems {
            FileHandle.standardError.write(Data("warning: example images: \(problem)\n".utf8))
        }
        let listing = examples.listing
        router.get("/examples") { _, _ in
            var response = try jsonResponse(listing)
            response.headers[.cacheControl] = "no-cache"
            return response
        }
        router.get("/examples/:name") { _, context in
            guard let name = context.parameters.get("name"), let image = examples.images[name] else {
                throw APIError(.notFound, code: "not_found", message: "no example image of that name; GET /examples lists them")
            }
            return Response(status: .ok, headers: [.contentType: image.contentType, .cacheControl: "max-age=3600"],
                            body: .init(byteBuffer: ByteBuffer(bytes: image.bytes)))
        }
    }
}
