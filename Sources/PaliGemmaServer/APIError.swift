import Foundation
import GemmaTokenizer
import Hummingbird
import Imaging
import MaskDecoder
import PaliGemma

/// An error as the API reports it: an HTTP status and
/// `{"error": {"code": …, "message": …, "type": …, "param": …}}`, the shape OpenAI's clients read.
///
/// Every error a request can meet is mapped to one of these in `APIError.from(_:)`, the only place
/// where library errors are given statuses.
public struct APIError: Error, Sendable, Equatable, CustomStringConvertible {
    public var status: HTTPResponse.Status
    /// A short stable identifier, e.g. `invalid_option`, `undecodable_image`.
    public var code: String
    /// A sentence a person can act on.
    public var message: String
    /// The request field at fault, when one is.
    public var param: String?

    public init(_ status: HTTPResponse.Status, code: String, message: String, param: String? = nil) {
        self.status = status
        self.code = code
        self.message = message
        self.param = param
    }

    /// OpenAI's error class for the status.
    var type: String {
        switch status.code {
        case 401: return "authentication_error"
        case 404: return "not_found_error"
        case 429, 503: return "rate_limit_error"
        case 400..<500: return "invalid_request_error"
        default: return "server_error"
        }
    }

    public var description: String { "\(status.code) \(code): \(message)" }

    static func badRequest(_ code: String, _ message: String) -> APIError { APIError(.badRequest, code: code, message: message) }

    static func bodyTooLarge(limit: Int) -> APIError {
        APIError(.contentTooLarge, code: "body_too_large",
                 message: "the request body is larger than \(limit) bytes; send a smaller image (JPEG at a lower size or quality)")
    }

    static func busy(waiting: Int) -> APIError {
        APIError(.serviceUnavailable, code: "busy",
                 message: "the server is busy: \(waiting) requests are already waiting for the model; try again shortly")
    }

    /// The client closed the connection before its answer was ready (nginx's 499, for the log:
    /// nobody reads it).
    static let clientGone = APIError(.init(code: 499, reasonPhrase: "Client Closed Request"), code: "client_gone",
                                     message: "the client closed the connection before the answer was ready")

    /// The status, code and message for any error met while answering a request.
    public static func from(_ error: Error) -> APIError {
        switch error {
        case let e as APIError:
            return e
        case let e as InputError:
            if case .option = e { return APIError(.badRequest, code: "invalid_option", message: e.description) }
            return APIError(.badRequest, code: "invalid_input", message: e.description)
        case let e as ImageError:
            switch e {
            case .unsupportedFormat, .unsupportedVariant:
                return APIError(.unsupportedMediaType, code: "unsupported_image", message: e.description)
            case .tooLarge, .outOfMemory:
                return APIError(.contentTooLarge, code: "image_too_large", message: e.description)
            case .empty, .truncated, .corrupt, .zeroSize:
                return APIError(.unprocessableContent, code: "undecodable_image", message: e.description)
            case .unreadable, .encodingFailed:
                return APIError(.internalServerError, code: "internal", message: e.description)
            }
        case let e as DecodingError:
            return APIError(.badRequest, code: "invalid_json", message: describe(e))
        case let e as HTTPError:
            let code: String
            switch e.status {
            case .notFound: code = "not_found"
            case .methodNotAllowed: code = "method_not_allowed"
            case .contentTooLarge: code = "body_too_large"
            case .badRequest: code = "bad_request"
            default: code = e.status.code >= 500 ? "internal" : "http_\(e.status.code)"
            }
            return APIError(e.status, code: code, message: e.body ?? e.status.reasonPhrase)
        case is CheckpointError, is TokenizerError, is MaskDecoderError, is NumPyError:
            return APIError(.internalServerError, code: "model_error", message: "\(error)")
        default:
            return APIError(.internalServerError, code: "internal", message: "internal error: \(error)")
        }
    }

    /// A JSON decoding failure in words, naming the field.
    static func describe(_ error: DecodingError) -> String {
        func path(_ keys: [CodingKey]) -> String {
            keys.isEmpty ? "the body" : "field '" + keys.map { $0.intValue.map { "[\($0)]" } ?? $0.stringValue }.joined(separator: ".") + "'"
        }
        switch error {
        case let .typeMismatch(type, context):
            if context.codingPath.isEmpty { return "the request body must be a JSON object" }
            return "\(path(context.codingPath)) must be \(typeName(type))"
        case let .valueNotFound(type, context):
            return "\(path(context.codingPath)) must be \(typeName(type)), not null"
        case let .keyNotFound(key, _):
            return "the request has no '\(key.stringValue)' field"
        case let .dataCorrupted(context):
            if context.codingPath.isEmpty { return "the request body is not valid JSON" }
            return "\(path(context.codingPath)): \(context.debugDescription)"
        @unknown default:
            return "the request body could not be read as JSON"
        }
    }

    private static func typeName(_ type: Any.Type) -> String {
        switch type {
        case is String.Type: return "a string"
        case is Int.Type, is UInt64.Type: return "an integer"
        case is Float.Type, is Double.Type: return "a number"
        case is Bool.Type: return "true or false"
        default: return "\(type)"
        }
    }

    /// `{"error": {"code": …, "message": …, "type": …, "param": …}}`.
    var json: String {
        struct Body: Encodable {
            struct Inner: Encodable {
                let code: String, message: String, type: String, param: String?
                enum CodingKeys: String, CodingKey { case code, message, type, param }
                func encode(to encoder: Encoder) throws {
                    var c = encoder.container(keyedBy: CodingKeys.self)
                    try c.encode(code, forKey: .code)
                    try c.encode(message, forKey: .message)
                    try c.encode(type, forKey: .type)
                    try c.encode(param, forKey: .param)  // null, not absent, as OpenAI sends it
                }
            }
            let error: Inner
        }
        let data = (try? encoder().encode(Body(error: .init(code: code, message: message, type: type, param: param)))) ?? Data()
        return String(decoding: data, as: UTF8.self)
    }

    /// The error as a JSON response.
    func response() -> Response {
        var headers: HTTPFields = [.contentType: "application/json; charset=utf-8"]
        if status == .serviceUnavailable { headers[.retryAfter] = "1" }
        return Response(status: status, headers: headers, body: .init(byteBuffer: ByteBuffer(string: json)))
    }
}

/// Turns every error thrown below it (routes, the router's own 404) into the JSON error shape.
struct JSONErrorMiddleware<Context: RequestContext>: RouterMiddleware {
    func handle(_ request: Request, context: Context,
                next: (Request, Context) async throws -> Response) async throws -> Response {
        do {
            return try await next(request, context)
        } catch {
            let e = APIError.from(error)
            if e.status.code >= 500 && e.status != .serviceUnavailable { context.logger.error("\(request.method) \(request.uri.path): \(e)") }
            return e.response()
        }
    }
}
