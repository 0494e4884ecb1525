// A big_vision .npz tree as `--model tree.npz` reads it: the memory-mapped ZIP/ZIP64 reader, every
// array's header, and the model loaded from the tree (settings read off the shapes, arrays
// renamed and transposed) when the arrays fit together.
import FuzzSupport
import PaliGemma
import SafeTensors

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let url = Scratch.write(data, size, name: "tree.npz")
    guard let archive = try? MappedNpzArchive(path: url.path) else { return 0 }
    var sum: UInt8 = 0
    for key in archive.keys {
        guard let t = archive.arrays[key] else { continue }
        // Every byte the reader says is the array's is inside the file.
        let bytes = UnsafeRawBufferPointer(start: t.data, count: t.byteCount)
        for b in bytes.prefix(4096) { sum &+= b }
    }
    _ = sum
    _ = try? PaliGemmaModel(directory: url)
    return 0
}
