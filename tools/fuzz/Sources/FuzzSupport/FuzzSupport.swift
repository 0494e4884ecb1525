import CFuzzDriver
import Foundation

/// A scratch file per process and name, rewritten for each input (for APIs that take a path).
public enum Scratch {
    private static let directory: URL = {
        let dir = FileManager.default.temporaryDirectory
            .appendingPathComponent("paligemma-fuzz-\(ProcessInfo.processInfo.processIdentifier)")
        try? FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        return dir
    }()

    /// Writes the input to `<tmp>/paligemma-fuzz-<pid>/<name>` and returns its URL.
    public static func write(_ data: UnsafePointer<UInt8>, _ size: Int, name: String) -> URL {
        let url = directory.appendingPathComponent(name)
        let fd = open(url.path, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
        precondition(fd >= 0, "cannot write the scratch file \(url.path)")
        var done = 0
        while done < size {
            let n = Foundation.write(fd, data + done, size - done)
            precondition(n > 0, "cannot write the scratch file \(url.path)")
            done += n
        }
        close(fd)
        return url
    }

    /// The scratch directory itself (for APIs that take a directory).
    public static var root: URL { directory }
}

/// The input as `Data` (copied) and as text (invalid UTF-8 replaced).
public func bytes(_ data: UnsafePointer<UInt8>, _ size: Int) -> Data { Data(bytes: data, count: size) }
public func text(_ data: UnsafePointer<UInt8>, _ size: Int) -> String {
    String(decoding: UnsafeBufferPointer(start: data, count: size), as: UTF8.self)
}

/// The repository's test fixtures (for harnesses that need a real tokenizer beside the input).
public let fixtures: URL = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
    .appendingPathComponent("../../../../Tests/Fixtures").standardized

/// One byte to point at when libFuzzer hands over an empty input without a pointer.
public let emptyInput: UnsafePointer<UInt8> = UnsafePointer(UnsafeMutablePointer<UInt8>.allocate(capacity: 1))

/// Runs libFuzzer's driver on the process's arguments and exits with its status.
public func runFuzzer(_ callback: @convention(c) (UnsafePointer<UInt8>?, Int) -> Int32) -> Never {
    var argc = CommandLine.argc
    var argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>? = CommandLine.unsafeArgv
    exit(LLVMFuzzerRunDriver(&argc, &argv, callback))
}
