import Foundation

/// Why a hub lookup or download failed. Every case reads as a sentence with a hint on what to do.
public enum HubError: Error, CustomStringConvertible, Sendable, Equatable {
    /// The repository is gated or private and the request had no token, or a token without access
    /// (HTTP 401/403). `tokenSent` tells whether a token was sent.
    case gatedRepository(repo: String, endpoint: String, tokenSent: Bool)
    /// The repository does not exist (or is private and no token was sent).
    case repositoryNotFound(repo: String, tokenSent: Bool)
    /// The repository exists but the branch, tag or commit does not.
    case revisionNotFound(repo: String, revision: String)
    /// A file listed by the hub could not be fetched (HTTP 404 on `resolve`).
    case fileNotFound(repo: String, revision: String, path: String)
    /// The server answered with an unexpected HTTP status.
    case httpStatus(code: Int, url: String, message: String)
    /// The server's answer could not be understood (bad JSON, missing headers).
    case invalidResponse(url: String, reason: String)
    /// The network failed (no connection, timeout, dropped transfer) and retries ran out.
    case network(url: String, reason: String)
    /// A downloaded file's SHA-256 does not match the hub's checksum; the bad data was deleted.
    case checksumMismatch(path: String, expected: String, actual: String)
    /// A downloaded file has the wrong size; the bad data was deleted.
    case sizeMismatch(path: String, expected: Int64, actual: Int64)
    /// `HF_HUB_OFFLINE` is set (or the network is unreachable) and the model is not in the cache.
    case offline(repo: String, revision: String, cache: String)
    /// Writing into the cache failed.
    case fileSystem(path: String, reason: String)
    /// The repository id is malformed.
    case invalidRepoID(String)

    /// A sentence describing the failure, followed by a hint.
    public var description: String {
        switch self {
        case let .gatedRepository(repo, endpoint, tokenSent):
            let page = "\(endpoint.hasSuffix("/") ? String(endpoint.dropLast()) : endpoint)/\(repo)"
            let licence = repo.lowercased().contains("gemma") ? " (for PaliGemma: the Gemma licence)" : ""
            if tokenSent {
                return "Access to \(repo) was refused with your Hugging Face token: the repository is gated or private. "
                    + "Open \(page) while logged in, accept the licence\(licence), and make sure HF_TOKEN (or the token file) "
                    + "holds a token of that account with read access (https://huggingface.co/settings/tokens)."
            }
            return "\(repo) is a gated repository and needs a Hugging Face token. Open \(page), accept the licence\(licence), "
                + "create a read token at https://huggingface.co/settings/tokens and set HF_TOKEN "
                + "(or save the token in ~/.cache/huggingface/token)."
        case let .repositoryNotFound(repo, tokenSent):
            return "Repository \(repo) was not found on the hub. Check the id (organisation/name)"
                + (tokenSent ? "." : "; if it is private, set HF_TOKEN.")
        case let .revisionNotFound(repo, revision):
            return "Revision '\(revision)' was not found in \(repo). Use a branch name, tag or full commit hash (default: main)."
        case let .fileNotFound(repo, revision, path):
            return "File '\(path)' was not found in \(repo) at revision '\(revision)'."
        case let .httpStatus(code, url, message):
            return "The hub answered HTTP \(code) for \(url)" + (message.isEmpty ? "." : ": \(message)")
                + " Try again later; set HF_ENDPOINT if you use a mirror."
        case let .invalidResponse(url, reason):
            return "Unexpected answer from \(url): \(reason). Is HF_ENDPOINT pointing at a Hugging Face hub?"
        case let .network(url, reason):
            return "Network error fetching \(url): \(reason). Check the connection and run the command again; "
                + "partial downloads resume where they stopped."
        case let .checksumMismatch(path, expected, actual):
            return "Checksum mismatch for \(path): expected SHA-256 \(expected), got \(actual). "
                + "The corrupted data was deleted; run the download again."
        case let .sizeMismatch(path, expected, actual):
            return "Size mismatch for \(path): expected \(expected) bytes, got \(actual). "
                + "The bad data was deleted; run the download again."
        case let .offline(repo, revision, cache):
            return "\(repo) (revision \(revision)) is not in the Hugging Face cache at \(cache) and the hub cannot be reached "
                + "(or HF_HUB_OFFLINE is set). Download it once while online."
        case let .fileSystem(path, reason):
            return "Cannot write \(path): \(reason). Check free space and permissions, or set HF_HUB_CACHE."
        case let .invalidRepoID(id):
            return "'\(id)' is not a valid repository id; expected organisation/name, e.g. google/paligemma2-3b-mix-448."
        }
    }
}
