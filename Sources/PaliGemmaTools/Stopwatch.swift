import Dispatch
import Foundation

/// Wall-clock laps.
public struct Stopwatch: Sendable {
    private var start = DispatchTime.now().uptimeNanoseconds

    public init() {}

    public mutating func reset() { start = DispatchTime.now().uptimeNanoseconds }

    /// Seconds since the last lap (or reset, or creation).
    public mutating func lap() -> Double {
        let now = DispatchTime.now().uptimeNanoseconds
        defer { start = now }
        return Double(now - start) / 1e9
    }
}

/// Peak resident set size of this process (VmHWM), in bytes; 0 where unknown.
public func peakResidentBytes() -> Int {
    guard let text = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8) else { return 0 }
    for line in text.split(separator: "\n") where line.hasPrefix("VmHWM:") {
        let digits = line.filter(\.isNumber)
        return (Int(digits) ?? 0) * 1024
    }
    return 0
}
