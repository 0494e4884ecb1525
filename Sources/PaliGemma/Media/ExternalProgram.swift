import Foundation

/// A command-line program this library drives instead of linking its libraries (ffmpeg and
/// Poppler): found on the PATH when needed, so that nothing else depends on it being installed.
struct ExternalProgram: Sendable {
    /// The program's name (`ffmpeg`), as looked up on the PATH.
    let name: String
    /// The Debian package that provides it, named in the error when it is missing.
    let package: String
    /// What it is needed for, for the same error ("decode video frames").
    let purpose: String

    /// The executable, or `MediaError.programMissing`.
    func locate() throws -> URL {
        let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin"
        for directory in path.split(separator: ":") where !directory.isEmpty {
            let candidate = URL(fileURLWithPath: String(directory)).appendingPathComponent(name)
            if FileManager.default.isExecutableFile(atPath: candidate.path) { return candidate }
        }
        throw MediaError.programMissing(program: name, package: package, purpose: purpose)
    }

    /// What a run produced.
    struct Output {
        var status: Int32
        var stdout: Data
        /// The end of standard error (at most `stderrLimit` bytes), for messages.
        var stderr: String

        /// The last non-empty line of stderr, which is where these programs say what went wrong.
        var lastErrorLine: String {
            stderr.split(whereSeparator: \.isNewline).last.map(String.init)?.trimmingCharacters(in: .whitespaces)
                ?? "exit status \(status)"
        }
    }

    static let stderrLimit = 8192

    /// Runs the program with `arguments` and waits for it. Standard output is collected up to
    /// `stdoutLimit` bytes: past it the program is stopped and the run fails
    /// (`programFailed`), so that a runaway stream is never held in memory.
    func run(_ arguments: [String], file: String, stdoutLimit: Int) throws -> Output {
        let process = Process()
        process.executableURL = try locate()
        process.arguments = arguments
        let out = Pipe(), err = Pipe()
        process.standardOutput = out
        process.standardError = err
        process.standardInput = FileHandle.nullDevice
        do { try process.run() } catch {
            throw MediaError.programFailed(program: name, file: file, detail: "could not start it: \(error.localizedDescription)")
        }
        // Standard error is drained beside standard output, so that neither pipe fills up and
        // blocks the program while the other is read.
        let errorText = StderrCollector()
        let drained = DispatchSemaphore(value: 0)
        DispatchQueue.global().async {
            while let chunk = try? err.fileHandleForReading.read(upToCount: 4096), !chunk.isEmpty { errorText.append(chunk) }
            drained.signal()
        }
        var data = Data()
        var overflow = false
        while let chunk = try? out.fileHandleForReading.read(upToCount: 1 << 20), !chunk.isEmpty {
            data += chunk
            if data.count > stdoutLimit {
                overflow = true
                process.terminate()
                break
            }
        }
        try? out.fileHandleForReading.close()
        process.waitUntilExit()
        drained.wait()
        if overflow {
            throw MediaError.programFailed(program: name, file: file,
                                          detail: "it wrote more than \(stdoutLimit >> 20) MB, more than the limits allow")
        }
        return Output(status: process.terminationStatus, stdout: data, stderr: errorText.text)
    }
}

/// The tail of a program's standard error, filled from another thread.
// @unchecked Sendable: `bytes` is only touched under `lock`.
private final class StderrCollector: @unchecked Sendable {
    private let lock = NSLock()
    private var bytes = Data()

    func append(_ chunk: Data) {
        lock.withLock {
            bytes += chunk
            if bytes.count > ExternalProgram.stderrLimit { bytes = bytes.suffix(ExternalProgram.stderrLimit) }
        }
    }

    var text: String { lock.withLock { String(decoding: bytes, as: UTF8.self) } }
}

extension ExternalProgram {
    static let ffprobe = ExternalProgram(name: "ffprobe", package: "ffmpeg", purpose: "read a video's length and size")
    static let ffmpeg = ExternalProgram(name: "ffmpeg", package: "ffmpeg", purpose: "decode video frames")
    static let pdfinfo = ExternalProgram(name: "pdfinfo", package: "poppler-utils", purpose: "read a PDF's pages")
    static let pdftocairo = ExternalProgram(name: "pdftocairo", package: "poppler-utils", purpose: "render PDF pages")
}

/// Checks that `url` names a readable regular file, for an error that names it before any
/// program is started.
func requireReadableFile(_ url: URL) throws {
    var isDirectory: ObjCBool = false
    guard FileManager.default.fileExists(atPath: url.path, isDirectory: &isDirectory) else {
        throw MediaError.unreadable(file: url.relativePath, reason: "no such file")
    }
    guard !isDirectory.boolValue else { throw MediaError.unreadable(file: url.relativePath, reason: "it is a directory") }
    guard FileManager.default.isReadableFile(atPath: url.path) else {
        throw MediaError.unreadable(file: url.relativePath, reason: "permission denied")
    }
}
