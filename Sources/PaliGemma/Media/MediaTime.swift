import Foundation

/// A point or a length of time in a video, held in whole milliseconds so that sample times
/// add up exactly (0.1 s × 3 is 300 ms, never 0.30000000000000004 s).
public struct MediaTime: Codable, Sendable, Hashable, Comparable, CustomStringConvertible {
    /// Milliseconds.
    public var milliseconds: Int

    public init(milliseconds: Int) { self.milliseconds = milliseconds }

    /// `seconds`, rounded to the millisecond.
    public init(seconds: Double) { milliseconds = Int((seconds * 1000).rounded()) }

    /// Seconds, as a number.
    public var seconds: Double { Double(milliseconds) / 1000 }

    public static func < (a: MediaTime, b: MediaTime) -> Bool { a.milliseconds < b.milliseconds }

    /// Reads `2s`, `500ms`, `0.5` (seconds), `1.5m`, `1h`, `1:30` or `0:01:30.250`; nil for
    /// anything else, negative values and lengths past a day.
    public init?(parsing text: String) {
        let t = text.trimmingCharacters(in: .whitespaces).lowercased()
        var seconds: Double?
        if t.contains(":") {
            let parts = t.split(separator: ":", omittingEmptySubsequences: false)
            guard (2...3).contains(parts.count), parts.allSatisfy({ !$0.isEmpty }) else { return nil }
            var total = 0.0
            for (i, part) in parts.enumerated() {
                // Only the last field may have a fraction; the ones before it are whole numbers.
                guard let value = Double(part), value >= 0,
                      i == parts.count - 1 || part.allSatisfy(\.isNumber) else { return nil }
                total = total * 60 + value
            }
            seconds = total
        } else {
            let units: [(String, Double)] = [("ms", 0.001), ("s", 1), ("m", 60), ("h", 3600)]
            var scale = 1.0
            var number = Substring(t)
            for (suffix, factor) in units where t.hasSuffix(suffix) {
                number = t.dropLast(suffix.count)
                scale = factor
                break
            }
            guard !number.isEmpty, number.allSatisfy({ $0.isNumber || $0 == "." }), let value = Double(number) else { return nil }
            seconds = value * scale
        }
        guard let s = seconds, s.isFinite, s >= 0, s <= 86_400 else { return nil }
        self.init(seconds: s)
    }

    /// `m:ss.mmm` (or `h:mm:ss.mmm` past an hour), as the plain timeline prints it.
    public var description: String {
        let ms = milliseconds % 1000, total = milliseconds / 1000
        let s = total % 60, m = (total / 60) % 60, h = total / 3600
        return h > 0 ? String(format: "%d:%02d:%02d.%03d", h, m, s, ms) : String(format: "%d:%02d.%03d", m, s, ms)
    }

    /// The value as ffmpeg's `-ss` reads it (seconds with three decimals).
    var ffmpegArgument: String { String(format: "%d.%03d", milliseconds / 1000, milliseconds % 1000) }

    /// Encoded as seconds (a JSON number), the unit every other timing uses.
    public func encode(to encoder: Encoder) throws {
        var c = encoder.singleValueContainer()
        try c.encode(seconds)
    }

    public init(from decoder: Decoder) throws {
        self.init(seconds: try decoder.singleValueContainer().decode(Double.self))
    }
}
