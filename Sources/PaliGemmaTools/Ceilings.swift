import Dispatch
import Kernels

/// This machine's memory-read and compute ceilings, measured in the run that reports against
/// them (the machine may be shared, so a figure measured elsewhere may not hold now).
public enum MachineCeilings {
    /// GB/s: 256 MiB read with `threads` workers, each reading its share as many times as makes
    /// about 0.15 s, best of three. One pass of 256 MiB lasts a few milliseconds, about as long
    /// as the workers take to start, so a single pass could time them one after the other.
    public static func readBandwidth(threads: Int) -> Double {
        let count = 1 << 26  // 256 MiB: far beyond the caches
        // nonisolated(unsafe): the workers only read the buffer, and concurrentPerform returns
        // before it is deallocated.
        nonisolated(unsafe) let buffer = UnsafeMutablePointer<Float>.allocate(capacity: count)
        defer { buffer.deallocate() }
        buffer.initialize(repeating: 1, count: count)
        func seconds(passes: Int) -> Double {
            var clock = Stopwatch()
            DispatchQueue.concurrentPerform(iterations: threads) { w in
                let start = count * w / threads, end = count * (w + 1) / threads
                for _ in 0..<passes { _ = KernelProbes.readAll(buffer + start, count: end - start) }
            }
            return clock.lap()
        }
        let passes = max(1, min(64, Int((0.15 / max(seconds(passes: 1), 1e-4)).rounded(.up))))
        var best = Double.infinity
        for _ in 0..<3 { best = min(best, seconds(passes: passes)) }
        return Double(count * 4 * passes) / best / 1e9
    }

    /// GFLOP/s (GOPS for int8) of the active kernel level's product instructions with every
    /// worker busy, best of three: float32 FMA, bf16 dot products, and int8 products as 8-bit and
    /// as 4-bit weights use them (nil where the level has none).
    public static func compute(threads: Int) -> (fma: Double, bf16: Double?, int8: Double?, int8FourBit: Double?) {
        func rate(_ probe: @Sendable (Int) -> Double) -> Double {
            // Long enough (about 0.1 s a worker) that the workers' start-up skew is noise: a
            // short probe on two threads ran them one after the other and halved the ceiling.
            var clock = Stopwatch()
            guard probe(200_000) > 0 else { return 0 }
            let iterations = Int(max(200_000, min(1e9, 200_000 * 0.1 / max(clock.lap(), 1e-6))))
            var best = 0.0
            for _ in 0..<3 {
                var clock = Stopwatch()
                var ops = [Double](repeating: 0, count: threads)
                ops.withUnsafeMutableBufferPointer { out in
                    // nonisolated(unsafe): each worker writes only its own element, and
                    // concurrentPerform returns before `ops` is read.
                    nonisolated(unsafe) let base = out.baseAddress!
                    DispatchQueue.concurrentPerform(iterations: threads) { w in
                        base[w] = probe(iterations)
                    }
                }
                best = max(best, ops.reduce(0, +) / clock.lap() / 1e9)
            }
            return best
        }
        let fma = rate(KernelProbes.fma(iterations:))
        let bf16 = rate(KernelProbes.bf16(iterations:))
        let int8 = rate(KernelProbes.int8(iterations:))
        // The 4-bit probe is the int8 one unless it counts other work per round (avx2's 16-bit sums):
        // then it is timed too, else the int8 rate stands for it (two timings would differ by noise).
        let distinct = KernelProbes.int8FourBit(iterations: 1) != KernelProbes.int8(iterations: 1)
        let int8FourBit = distinct ? rate(KernelProbes.int8FourBit(iterations:)) : int8
        return (fma, bf16 > 0 ? bf16 : nil, int8 > 0 ? int8 : nil, int8FourBit > 0 ? int8FourBit : nil)
    }
}
