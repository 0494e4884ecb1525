// POST /v1/generate with a JSON body (image as base64 or a data: URL, prompt, options).
import FuzzSupport
import PaliGemmaServer

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    _ = try? RequestParsing.fuzz(body: bytes(data, size), contentType: "application/json")
    return 0
}
