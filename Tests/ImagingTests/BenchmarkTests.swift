import Foundation
import XCTest
import Imaging

/// Timing of decode + preprocess; runs only when IMAGING_BENCH_FILE names a picture, e.g.
/// `IMAGING_BENCH_FILE=big.jpg swift test -c release -Xswiftc -enable-testing --filter BenchmarkTests`.
final class BenchmarkTests: XCTestCase {
    func testDecodeAndPreprocessTiming() throws {
        guard let path = ProcessInfo.processInfo.environment["IMAGING_BENCH_FILE"] else {
            throw XCTSkip("set IMAGING_BENCH_FILE to time decode + preprocess")
        }
        let url = URL(fileURLWithPath: path)
        for size in [224, 448, 896] {
            var best = Double.infinity, bestDecode = Double.infinity
            for _ in 0..<3 {
                let t0 = Date()
                let img = try ImageLoader().load(contentsOf: url)
                let t1 = Date()
                let pv = ImagePreprocessor(size: size).pixelValues(img)
                let t2 = Date()
                XCTAssertEqual(pv.count, 3 * size * size)
                best = min(best, t2.timeIntervalSince(t0))
                bestDecode = min(bestDecode, t1.timeIntervalSince(t0))
            }
            print(String(format: "bench %@ → %d: decode %.1f ms, decode+preprocess %.1f ms",
                         url.lastPathComponent, size, bestDecode * 1000, best * 1000))
        }
    }
}
