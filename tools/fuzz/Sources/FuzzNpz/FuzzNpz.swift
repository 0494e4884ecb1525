// A .npz archive (zip of .npy files) as the mask decoder reads vae-oid.npz.
import FuzzSupport
import MaskDecoder

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let url = Scratch.write(data, size, name: "vae.npz")
    guard let archive = try? NpzArchive(url: url) else { return 0 }
    for key in archive.keys.prefix(64) {
        if let a = try? archive.array(key), a.count <= 1 << 16 { _ = a.floats() }
    }
    // The decoder checks every shape against the others before it computes anything.
    if let decoder = try? VQVAEMaskDecoder(npz: url), decoder.codebookSize > 0,
       decoder.codebookSize * decoder.embeddingWidth <= 1 << 16,
       decoder.channelWidths.allSatisfy({ $0 <= 32 }) {
        _ = try? decoder.decode(codes: [Int](repeating: 0, count: VQVAEMaskDecoder.codesPerMask))
    }
    return 0
}
