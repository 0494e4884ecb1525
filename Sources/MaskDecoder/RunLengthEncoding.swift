import Foundation

/// Run-length encodings of binary masks for JSON output.
///
/// - COCO (`cocoCounts`): pycocotools' uncompressed RLE — the mask is read column by column
///   (Fortran order: down the first column, then the next), runs alternate 0, 1, 0, … and the first
///   run counts zeros (it is 0 when the top-left pixel is set). `{"size": [height, width], "counts": …}`
///   is a valid COCO segmentation; `cocoString` gives pycocotools' compressed string form.
/// - Row-major (`rowMajorCounts`): the same alternating runs, reading row by row.
public enum RunLengthEncoding {
    /// Column-major (COCO) run lengths of a row-major `width × height` mask (nonzero = inside).
    public static func cocoCounts(_ mask: [UInt8], width: Int, height: Int) throws -> [Int] {
        try check(mask.count, width, height)
        var counts: [Int] = []
        var current: UInt8 = 0, run = 0
        for x in 0..<width {
            for y in 0..<height {
                let v: UInt8 = mask[y * width + x] != 0 ? 1 : 0
                if v != current { counts.append(run); run = 0; current = v }
                run += 1
            }
        }
        counts.append(run)
        return counts
    }

    /// Row-major run lengths (first run counts zeros).
    public static func rowMajorCounts(_ mask: [UInt8], width: Int, height: Int) throws -> [Int] {
        try check(mask.count, width, height)
        var counts: [Int] = []
        var current: UInt8 = 0, run = 0
        for v in mask {
            let b: UInt8 = v != 0 ? 1 : 0
            if b != current { counts.append(run); run = 0; current = b }
            run += 1
        }
        counts.append(run)
        return counts
    }

    /// Decodes COCO (column-major) counts into a row-major 0/1 mask.
    public static func decodeCOCO(_ counts: [Int], width: Int, height: Int) throws -> [UInt8] {
        let flat = try expand(counts, width: width, height: height)
        var out = [UInt8](repeating: 0, count: flat.count)
        for x in 0..<width { for y in 0..<height { out[y * width + x] = flat[x * height + y] } }
        return out
    }

    /// Decodes row-major counts into a row-major 0/1 mask.
    public static func decodeRowMajor(_ counts: [Int], width: Int, height: Int) throws -> [UInt8] {
        try expand(counts, width: width, height: height)
    }

    /// pycocotools' compressed `counts` string (`rleToString`): each count, minus the count two
    /// before it from the fourth on, in 5-bit groups with a continuation bit, offset by 48.
    public static func cocoString(_ counts: [Int]) -> String {
        var bytes: [UInt8] = []
        for (i, c) in counts.enumerated() {
            var x = Int64(c)
            if i > 2 { x -= Int64(counts[i - 2]) }
            var more = true
            while more {
                var ch = UInt8(truncatingIfNeeded: x & 0x1F)
                x >>= 5
                more = (ch & 0x10) != 0 ? x != -1 : x != 0
                if more { ch |= 0x20 }
                bytes.append(ch + 48)
            }
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    /// Inverse of `cocoString`.
    public static func cocoCounts(fromString s: String) throws -> [Int] {
        var counts: [Int] = []
        let bytes = Array(s.utf8)
        var p = 0
        while p < bytes.count {
            var x: Int64 = 0, k: Int64 = 0, more = true
            while more {
                guard p < bytes.count, bytes[p] >= 48, k < 60 else {
                    throw MaskDecoderError.invalidRunLengths(reason: "malformed COCO RLE string")
                }
                let c = Int64(bytes[p] - 48)
                x |= (c & 0x1F) << (5 * k)
                more = (c & 0x20) != 0
                p += 1
                k += 1
                if !more && (c & 0x10) != 0 { x |= -1 << (5 * k) }
            }
            if counts.count > 2 { x += Int64(counts[counts.count - 2]) }
            guard let v = Int(exactly: x) else { throw MaskDecoderError.invalidRunLengths(reason: "count overflow") }
            counts.append(v)
        }
        return counts
    }

    private static func check(_ count: Int, _ width: Int, _ height: Int) throws {
        guard width >= 0, height >= 0 else { throw MaskDecoderError.invalidImageSize(width: width, height: height) }
        let (n, overflow) = width.multipliedReportingOverflow(by: height)
        guard !overflow, n == count else { throw MaskDecoderError.wrongMaskSize(expected: overflow ? -1 : n, actual: count) }
    }

    private static func expand(_ counts: [Int], width: Int, height: Int) throws -> [UInt8] {
        guard width >= 0, height >= 0, !width.multipliedReportingOverflow(by: height).overflow else {
            throw MaskDecoderError.invalidImageSize(width: width, height: height)
        }
        let n = width * height
        var out = [UInt8](repeating: 0, count: n)
        var p = 0
        for (i, c) in counts.enumerated() {
            guard c >= 0, c <= n - p else {
                throw MaskDecoderError.invalidRunLengths(reason: "runs exceed \(n) pixels or are negative")
            }
            if i % 2 == 1 { for j in p..<(p + c) { out[j] = 1 } }
            p += c
        }
        guard p == n else { throw MaskDecoderError.invalidRunLengths(reason: "runs cover \(p) of \(n) pixels") }
        return out
    }
}
