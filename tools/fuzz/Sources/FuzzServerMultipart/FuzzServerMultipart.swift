// POST /v1/generate as multipart/form-data. The input's first line is the Content-Type header
// value (so the boundary parameter is fuzzed too); the rest is the body.
import Foundation
import FuzzSupport
import PaliGemmaServer

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let input = UnsafeBufferPointer(start: data, count: size)
    let newline = input.firstIndex(of: 0x0A) ?? size
    let contentType = String(decoding: input[..<newline], as: UTF8.self)
    let body = newline < size ? Data(input[(newline + 1)...]) : Data()
    _ = try? RequestParsing.fuzz(body: body, contentType: contentType)
    return 0
}
