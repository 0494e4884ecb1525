import Foundation

/// The `/v1/generate` body parser, reachable from outside the module for the fuzzers in
/// tools/fuzz (not an API for applications: the server calls the parser itself).
public enum RequestParsing {
    /// Parses `body` as the server does for a request with this Content-Type, then checks the
    /// generation options; returns the prompt, or throws the error the client would get.
    @discardableResult
    public static func fuzz(body: Data, contentType: String?) throws -> String {
        let request = try GenerateRequest.parse(body: body, contentType: contentType)
        try request.options.validate()
        return request.prompt
    }
}
