import CKernels

/// Ceiling probes of the active kernel level, for benchmarks that report the fraction of the
/// machine's compute and memory bandwidth a run reached. Each compute probe runs `iterations`
/// rounds of independent operations on the level's widest vectors, with the instructions its
/// products use, and returns the operations performed (a multiply-add counts 2), or 0 where the
/// level has no such products. Time them per thread.
public enum KernelProbes {
    /// Float32 fused multiply-adds.
    public static func fma(iterations: Int) -> Double {
        var sink: Float = 0
        return ck_fma_probe(Int64(iterations), &sink)
    }

    /// Bf16 dot products (0 where the level has none).
    public static func bf16(iterations: Int) -> Double {
        var sink: Float = 0
        return ck_bf16_probe(Int64(iterations), &sink)
    }

    /// Int8 dot products as 8-bit weights' products use them (0 where the level has none).
    public static func int8(iterations: Int) -> Double {
        var sink: Float = 0
        return ck_int8_probe(Int64(iterations), &sink)
    }

    /// Int8 products as 4-bit weights' products use them: the same as `int8` on levels with a
    /// dot-product instruction; on avx2 `vpmaddubsw` with sums kept in 16 bits, twice the
    /// multiply-adds per instruction (0 where the level has no int8 products).
    public static func int8FourBit(iterations: Int) -> Double {
        var sink: Float = 0
        return ck_int8_probe_q4(Int64(iterations), &sink)
    }

    /// Sums `count` floats at `values` with the level's widest loads: a memory-read bandwidth
    /// probe. The sum is returned so that the reads cannot be dropped.
    public static func readAll(_ values: UnsafePointer<Float>, count: Int) -> Float {
        ck_read_all(values, Int64(count))
    }
}
