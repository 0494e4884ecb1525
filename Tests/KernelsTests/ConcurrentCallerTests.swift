import CKernels
import Dispatch
import Kernels
import XCTest

/// One FastBackend used by several threads at once (two generations on one model): every call
/// must give exactly what it gives alone. Calls of different sizes interleave, so scratch memory
/// that one call grows while another uses it would show up as wrong values or a crash.
final class ConcurrentCallerTests: XCTestCase {
    private struct Case {
        let weight: WeightMatrix
        let input: Matrix
        let expected: [Float]
    }

    func testConcurrentProductsAndAttentionMatchSequentialResults() throws {
        let backend = FastBackend(threads: 2)
        var owned: [UnsafeMutableRawPointer] = []
        defer { owned.forEach { $0.deallocate() } }
        var g = SystemRandomNumberGenerator()

        func weights(_ rows: Int, _ cols: Int, _ format: WeightFormat) -> WeightMatrix {
            let values = (0..<(rows * cols)).map { _ in Float.random(in: -1...1, using: &g) }
            let rowBytes = format.rowBytes(columns: cols)
            let data = UnsafeMutableRawPointer.allocate(byteCount: rows * rowBytes, alignment: 64)
            owned.append(data)
            if format == .bf16 {
                for i in 0..<(rows * cols) {
                    data.storeBytes(of: UInt16(values[i].bitPattern >> 16), toByteOffset: 2 * i, as: UInt16.self)
                }
                return WeightMatrix(format: format, rows: rows, columns: cols, data: UnsafeRawPointer(data))
            }
            let groups = WeightFormat.groups(columns: cols)
            let scales = UnsafeMutableRawPointer.allocate(byteCount: rows * groups * 2, alignment: 64)
            owned.append(scales)
            let s = scales.assumingMemoryBound(to: UInt16.self)
            values.withUnsafeBufferPointer { src in
                for r in 0..<rows {
                    ck_quantize_row(src.baseAddress! + r * cols, Int64(cols), format.rawValue, data + r * rowBytes, s + r * groups)
                }
            }
            return WeightMatrix(format: format, rows: rows, columns: cols, data: UnsafeRawPointer(data),
                                scales: UnsafePointer(s))
        }

        // Decode (one row) and prefill (many rows), every weight format, small and large rows.
        var cases: [Case] = []
        for format in [WeightFormat.bf16, .q8, .q4] {
            for (rows, k) in [(1, 256), (1, 2048), (24, 256), (24, 1024)] {
                let w = weights(96, k, format)
                let x = Matrix(rows: rows, columns: k, values: (0..<(rows * k)).map { _ in Float.random(in: -1...1, using: &g) })
                let y = Matrix(rows: rows, columns: 96)
                backend.linear(x, w, bias: nil, into: y)
                cases.append(Case(weight: w, input: x, expected: Array(UnsafeBufferPointer(start: y.storage, count: rows * 96))))
            }
        }
        // Attention over 40 keys, 4 query heads sharing 2 key/value heads, decode and prefill.
        // nonisolated(unsafe) here and below: the callers share the input matrices and the cases
        // but only read them, and each caller writes only its own slot of `mismatches`.
        let d = 64
        nonisolated(unsafe) let keys = Matrix(rows: 40, columns: 2 * d, values: (0..<(80 * d)).map { _ in Float.random(in: -1...1, using: &g) })
        nonisolated(unsafe) let values = Matrix(rows: 40, columns: 2 * d, values: (0..<(80 * d)).map { _ in Float.random(in: -1...1, using: &g) })
        let queryRows = [1, 40]
        nonisolated(unsafe) let queries = queryRows.map { r in
            Matrix(rows: r, columns: 4 * d, values: (0..<(r * 4 * d)).map { _ in Float.random(in: -1...1, using: &g) })
        }
        @Sendable func attend(_ q: Matrix, into out: Matrix) {
            let shape = AttentionShape(heads: 4, kvHeads: 2, headDim: d, scale: 0.125, softcap: 50,
                                       queryStart: 40 - q.rows, keyCount: 40)
            backend.attention(queries: q, keys: keys, values: values, shape: shape,
                              mask: .prefixLM(prefixLength: 10, window: 16), into: out)
        }
        let attentionExpected: [[Float]] = queries.map { q in
            let out = Matrix(rows: q.rows, columns: 4 * d)
            attend(q, into: out)
            return Array(UnsafeBufferPointer(start: out.storage, count: q.rows * 4 * d))
        }

        let callers = 6, rounds = 15
        nonisolated(unsafe) let shared = cases
        nonisolated(unsafe) let mismatches = UnsafeMutablePointer<Int>.allocate(capacity: callers)
        mismatches.initialize(repeating: 0, count: callers)
        defer { mismatches.deallocate() }
        DispatchQueue.concurrentPerform(iterations: callers) { caller in
            for round in 0..<rounds {
                // Each caller walks the cases in its own order, so sizes interleave.
                for i in 0..<shared.count {
                    let c = shared[(i * (caller + 1) + round) % shared.count]
                    let y = Matrix(rows: c.input.rows, columns: c.weight.rows)
                    backend.linear(c.input, c.weight, bias: nil, into: y)
                    if Array(UnsafeBufferPointer(start: y.storage, count: c.expected.count)) != c.expected {
                        mismatches[caller] += 1
                    }
                }
                let j = (caller + round) % queries.count
                let out = Matrix(rows: queries[j].rows, columns: 4 * d)
                attend(queries[j], into: out)
                if Array(UnsafeBufferPointer(start: out.storage, count: attentionExpected[j].count)) != attentionExpected[j] {
                    mismatches[caller] += 1
                }
            }
        }
        for caller in 0..<callers {
            XCTAssertEqual(mismatches[caller], 0, "caller \(caller): results differ from the same call made alone")
        }
    }
}
