// config.json as `PaliGemmaConfig.load` reads it: decode, then validate.
import Foundation
import FuzzSupport
import PaliGemma

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let url = Scratch.write(data, size, name: "config.json")
    guard let config = try? PaliGemmaConfig.load(from: url) else { return 0 }
    // What the model derives from a config that validated.
    _ = config.numImageTokens
    _ = config.vision.headDim
    _ = config.vision.numPatches
    _ = try? JSONEncoder().encode(config)
    return 0
}
