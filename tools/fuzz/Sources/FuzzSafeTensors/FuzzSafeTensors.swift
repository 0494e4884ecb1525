// A whole .safetensors file: the 8-byte header length, the JSON header, the data section.
import FuzzSupport
import SafeTensors

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let url = Scratch.write(data, size, name: "model.safetensors")
    guard let file = try? SafeTensorsFile(path: url.path) else { return 0 }
    // A header that validates must describe bytes that really are in the file.
    for tensor in file.tensors.values where tensor.byteCount <= 1 << 16 {
        _ = try? tensor.floats()
        _ = try? tensor.integers()
    }
    _ = file.metadata.count
    return 0
}
