import Foundation
import Hummingbird
import PaliGemma

/// A parsed `POST /v1/generate` body: the image bytes (one, or several for one prompt, in order),
/// the prompt and the generation options.
struct GenerateRequest: Sendable {
    var images: [Data]
    var prompt: String
    var options: GenerationOptions

    /// Most images one request may carry (each is encoded, and held decoded until it is).
    static let maxImages = 4

    /// The JSON body, field by field; missing fields take `GenerationOptions`' defaults.
    private struct JSONBody: Decodable {
        var image: String?
        var images: [String]?
        var prompt: String?
        var max_new_tokens: Int?
        var temperature: Float?
        var top_k: Int?
        var top_p: Float?
        var seed: UInt64?
    }

    /// Parses a JSON (`application/json`, also the default) or `multipart/form-data` body.
    static func parse(body: Data, contentType: String?) throws -> GenerateRequest {
        let type = (contentType ?? "").lowercased()
        if type.hasPrefix("multipart/form-data") {
            return try parseMultipart(body: body, contentType: contentType ?? "")
        }
        guard type.isEmpty || type.hasPrefix("application/json") || type.hasPrefix("text/plain") else {
            throw APIError(.unsupportedMediaType, code: "unsupported_media_type",
                           message: "send the request as application/json or multipart/form-data, not \(contentType ?? "")")
        }
        guard !body.isEmpty else { throw APIError.badRequest("invalid_json", "the request body is empty; send a JSON object with \"image\" and \"prompt\"") }
        let json: JSONBody
        do {
            json = try JSONDecoder().decode(JSONBody.self, from: body)
        } catch let error as DecodingError {
            // Foundation's messages on Linux say "not valid JSON" for a number out of range;
            // find the field at fault instead.
            try explain(body)
            throw error
        }
        if let fields = (try? JSONSerialization.jsonObject(with: body)) as? [String: Any] {
            try refuseUnknown(Array(fields.keys))
        }
        let encoded: [String]
        switch (json.image, json.images) {
        case let (image?, nil): encoded = [image]
        case let (nil, images?): encoded = images
        case (nil, nil):
            throw APIError.badRequest("missing_field", "the request has no \"image\" field (the base64 of a JPEG, PNG or WebP file)")
        case (_?, _?):
            throw APIError.badRequest("invalid_json", "give \"image\" (one) or \"images\" (several, in order), not both")
        }
        try checkImageCount(encoded.count)
        guard let prompt = json.prompt else {
            throw APIError.badRequest("missing_field", "the request has no \"prompt\" field (e.g. \"caption en\")")
        }
        var options = GenerationOptions()
        if let v = json.max_new_tokens { options.maxNewTokens = v }
        if let v = json.temperature { options.temperature = v }
        if let v = json.top_k { options.topK = v }
        if let v = json.top_p { options.topP = v }
        // Without a seed, sampled answers differ from request to request.
        options.seed = json.seed ?? UInt64.random(in: 0...UInt64.max)
        return GenerateRequest(images: try encoded.map { try decodeBase64($0) }, prompt: prompt, options: options)
    }

    static func checkImageCount(_ n: Int) throws {
        guard n >= 1 else { throw APIError.badRequest("missing_image", "\"images\" is empty; give at least one image") }
        guard n <= maxImages else {
            throw APIError.badRequest("too_many_images", "the request has \(n) images; at most \(maxImages) go into one prompt")
        }
    }

    static let fields: Set<String> = ["image", "images", "prompt", "max_new_tokens", "temperature", "top_k", "top_p", "seed"]
    /// Other APIs' names for the same settings, for a hint.
    static let aliases = ["max_tokens": "max_new_tokens", "max_completion_tokens": "max_new_tokens", "topk": "top_k", "topp": "top_p"]

    /// A field this API does not know is refused rather than ignored, so that a misspelt setting
    /// is not silently dropped.
    static func refuseUnknown(_ names: [String]) throws {
        guard let unknown = names.filter({ !fields.contains($0) }).sorted().first else { return }
        let hint = aliases[unknown].map { "; did you mean \"\($0)\"?" } ?? "; known fields: \(fields.sorted().joined(separator: ", "))"
        throw APIError(.badRequest, code: "unknown_field", message: "unknown field \"\(unknown)\"\(hint)", param: unknown)
    }

    /// Throws an error naming the field whose value has the wrong type or range, if one does.
    private static func explain(_ body: Data) throws {
        guard let object = try? JSONSerialization.jsonObject(with: body, options: [.fragmentsAllowed]) else {
            throw APIError.badRequest("invalid_json", "the request body is not valid JSON")
        }
        guard let fields = object as? [String: Any] else {
            throw APIError.badRequest("invalid_json", "the request body must be a JSON object")
        }
        struct One<T: Decodable>: Decodable { let v: T }
        func check<T: Decodable>(_ key: String, _: T.Type, code: String, _ expected: String) throws {
            guard let value = fields[key], !(value is NSNull),
                  let data = try? JSONSerialization.data(withJSONObject: ["v": value]) else { return }
            if (try? JSONDecoder().decode(One<T>.self, from: data)) == nil {
                throw APIError.badRequest(code, "\"\(key)\" must be \(expected)")
            }
        }
        try check("image", String.self, code: "invalid_json", "a string (the base64 of the image file)")
        try check("images", [String].self, code: "invalid_json", "a list of strings (the base64 of each image file, in order)")
        try check("prompt", String.self, code: "invalid_json", "a string")
        try check("max_new_tokens", Int.self, code: "invalid_option", "an integer")
        try check("temperature", Float.self, code: "invalid_option", "a number")
        try check("top_k", Int.self, code: "invalid_option", "an integer")
        try check("top_p", Float.self, code: "invalid_option", "a number")
        try check("seed", UInt64.self, code: "invalid_option", "an integer in 0…\(UInt64.max)")
    }

    /// Base64 (standard or URL-safe alphabet, padding optional, whitespace ignored), also as a
    /// `data:image/…;base64,` URL.
    static func decodeBase64(_ text: String) throws -> Data {
        var s = Substring(text)
        if s.hasPrefix("data:"), let comma = s.firstIndex(of: ",") {
            guard s[..<comma].hasSuffix(";base64") else {
                throw APIError.badRequest("invalid_base64", "\"image\" is a data URL without ;base64 encoding")
            }
            s = s[s.index(after: comma)...]
        }
        var cleaned = String(s.filter { !$0.isWhitespace })
        cleaned = cleaned.replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/")
        if cleaned.count % 4 != 0 { cleaned += String(repeating: "=", count: 4 - cleaned.count % 4) }
        guard !cleaned.isEmpty else { throw APIError.badRequest("missing_image", "\"image\" is empty") }
        guard let data = Data(base64Encoded: cleaned) else {
            throw APIError.badRequest("invalid_base64", "\"image\" is not valid base64; send the image file's bytes base64-encoded")
        }
        return data
    }

    // MARK: multipart/form-data

    /// Fields as parts (`image` a file part, repeated for several images in order; `prompt`,
    /// `max_new_tokens`, … text parts).
    static func parseMultipart(body: Data, contentType: String) throws -> GenerateRequest {
        guard let boundary = parameter("boundary", in: contentType), !boundary.isEmpty else {
            throw APIError.badRequest("invalid_multipart", "multipart/form-data without a boundary parameter")
        }
        guard boundary.utf8.count <= 70 else {
            throw APIError.badRequest("invalid_multipart", "the multipart boundary is longer than the 70 characters RFC 2046 allows")
        }
        let all = try multipartParts(body: body, boundary: boundary)
        try refuseUnknown(Array(Set(all.map(\.name))))
        let images = all.filter { $0.name == "image" }.map(\.data)
        guard !images.isEmpty, images.allSatisfy({ !$0.isEmpty }) else {
            throw APIError.badRequest("missing_field", "the form has no \"image\" file part")
        }
        try checkImageCount(images.count)
        var parts: [String: Data] = [:]
        for part in all where parts[part.name] == nil { parts[part.name] = part.data }
        func text(_ name: String) -> String? {
            parts[name].map { String(decoding: $0, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines) }
        }
        guard let prompt = text("prompt") else { throw APIError.badRequest("missing_field", "the form has no \"prompt\" part (e.g. \"caption en\")") }
        func number<T: LosslessStringConvertible>(_ name: String, _ kind: String) throws -> T? {
            guard let t = text(name), !t.isEmpty else { return nil }
            guard let v = T(t) else { throw APIError.badRequest("invalid_option", "\(name) must be \(kind), got \"\(t)\"") }
            return v
        }
        var options = GenerationOptions()
        if let v: Int = try number("max_new_tokens", "an integer") { options.maxNewTokens = v }
        if let v: Float = try number("temperature", "a number") { options.temperature = v }
        if let v: Int = try number("top_k", "an integer") { options.topK = v }
        if let v: Float = try number("top_p", "a number") { options.topP = v }
        options.seed = try number("seed", "a non-negative integer") ?? UInt64.random(in: 0...UInt64.max)
        return GenerateRequest(images: images, prompt: prompt, options: options)
    }

    /// `name=value` or `name="value"` from a header value such as a Content-Type.
    static func parameter(_ name: String, in header: String) -> String? {
        for piece in header.split(separator: ";").dropFirst() {
            let kv = piece.split(separator: "=", maxSplits: 1)
            guard kv.count == 2, kv[0].trimmingCharacters(in: .whitespaces).lowercased() == name else { continue }
            var v = kv[1].trimmingCharacters(in: .whitespaces)
            if v.hasPrefix("\""), v.hasSuffix("\""), v.count >= 2 { v = String(v.dropFirst().dropLast()) }
            return v
        }
        return nil
    }

    /// Most parts a form may have: the API's fields, with room for a client's extras.
    static let maxParts = 32

    /// The parts of a multipart body with their Content-Disposition names, in order. One pass
    /// over the bytes (each search starts where the last ended), and at most `maxParts` parts.
    static func multipartParts(body: Data, boundary: String) throws -> [(name: String, data: Data)] {
        let invalid = APIError.badRequest("invalid_multipart", "the multipart/form-data body is malformed")
        // Prepending CRLF makes the first delimiter look like every other one.
        let bytes = [UInt8]("\r\n".utf8) + [UInt8](body)
        let delimiter = [UInt8]("\r\n--\(boundary)".utf8)
        let headerEnd = [UInt8]("\r\n\r\n".utf8)
        var parts: [(name: String, data: Data)] = []
        var count = 0
        guard var cursor = find(delimiter, in: bytes, from: 0).map({ $0 + delimiter.count }) else { throw invalid }
        while true {
            // After a delimiter: "--" ends the body, else CRLF then the part's headers.
            if cursor + 1 < bytes.count, bytes[cursor] == UInt8(ascii: "-"), bytes[cursor + 1] == UInt8(ascii: "-") { break }
            count += 1
            guard count <= maxParts else {
                throw APIError.badRequest("invalid_multipart", "the form has more than \(maxParts) parts; send image, prompt and the options only")
            }
            guard let headersEnd = find(headerEnd, in: bytes, from: cursor),
                  let next = find(delimiter, in: bytes, from: headersEnd + headerEnd.count) else { throw invalid }
            let headers = String(decoding: bytes[cursor..<headersEnd], as: UTF8.self)
            var name: String?
            for line in headers.split(whereSeparator: \.isNewline)
            where line.lowercased().hasPrefix("content-disposition:") {
                name = parameter("name", in: String(line))
            }
            if let name { parts.append((name, Data(bytes[(headersEnd + headerEnd.count)..<next]))) }
            cursor = next + delimiter.count
        }
        return parts
    }

    /// The first index at or after `start` where `needle` begins in `haystack`.
    static func find(_ needle: [UInt8], in haystack: [UInt8], from start: Int) -> Int? {
        guard let first = needle.first, needle.count <= haystack.count else { return nil }
        var i = start
        let last = haystack.count - needle.count
        while i <= last {
            if haystack[i] == first {
                var j = 1
                while j < needle.count, haystack[i + j] == needle[j] { j += 1 }
                if j == needle.count { return i }
            }
            i += 1
        }
        return nil
    }
}
