// One .npy array (magic, versioned header dict, payload), parsed in memory.
import FuzzSupport
import MaskDecoder

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    guard let array = try? NpyArray(npy: bytes(data, size)) else { return 0 }
    _ = array.floats()
    _ = array.doubles()
    _ = array.int64s()
    return 0
}
