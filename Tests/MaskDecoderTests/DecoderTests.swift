import Foundation
import XCTest
@testable import MaskDecoder

final class DecoderTests: XCTestCase {
    /// Largest |swift − reference| / max|reference| over a set of masks.
    private func compare(_ decoder: VQVAEMaskDecoder, expected: URL, file: StaticString = #filePath,
                         line: UInt = #line) throws -> Double {
        let npz = try NpzArchive(url: expected)
        let codesArray = try npz.array("codes"), masksArray = try npz.array("masks")
        let codes = try XCTUnwrap(codesArray.int64s()).map { Int($0) }
        let masks = masksArray.floats()
        let n = codesArray.shape[0]
        XCTAssertEqual(codesArray.shape, [n, 16], file: file, line: line)
        XCTAssertEqual(masksArray.shape, [n, 64, 64], file: file, line: line)
        var worst = 0.0
        for i in 0..<n {
            let got = try decoder.decode(codes: Array(codes[(i * 16)..<(i * 16 + 16)]))
            XCTAssertEqual(got.count, 4096)
            let ref = Array(masks[(i * 4096)..<(i * 4096 + 4096)])
            let scale = Double(ref.map { abs($0) }.max() ?? 1)
            for j in 0..<4096 {
                let err = Double(abs(got[j] - ref[j])) / max(scale, 1e-6)
                worst = max(worst, err)
            }
        }
        return worst
    }

    func testFullWidthDecoderMatchesPyTorch() throws {
        let decoder = try VQVAEMaskDecoder(npz: fixture("vae_d16.npz"))
        XCTAssertEqual(decoder.codebookSize, 128)
        XCTAssertEqual(decoder.embeddingWidth, 16)
        XCTAssertEqual(decoder.channelWidths, [128, 128, 64, 32, 16])
        let worst = try compare(decoder, expected: fixture("expected_d16.npz"))
        print("full-width decoder: worst relative error \(worst)")
        XCTAssertLessThan(worst, 1e-4)
    }

    /// A trained, dense vae-oid.npz with the real widths: the demo model's (Models/demo), whose
    /// PyTorch outputs were recorded in expected_vae_oid.npz.
    func testTrainedVaeOidOfTheDemoModel() throws {
        let path = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("Models/demo/vae-oid.npz")
        let decoder = try VQVAEMaskDecoder(npz: path)
        XCTAssertEqual(decoder.codebookSize, 128)
        XCTAssertEqual(decoder.embeddingWidth, 32)
        XCTAssertEqual(decoder.channelWidths, [128, 128, 64, 32, 16])
        let worst = try compare(decoder, expected: fixture("expected_vae_oid.npz"))
        print("vae-oid decoder: worst relative error \(worst)")
        XCTAssertLessThan(worst, 1e-4)
    }

    func testStoredAndCompressedNpzLoadAndMatch() throws {
        let stored = try VQVAEMaskDecoder(npz: fixture("vae_small.npz"))
        let deflated = try VQVAEMaskDecoder(npz: fixture("vae_small_compressed.npz"))
        for d in [stored, deflated] {
            XCTAssertEqual(d.codebookSize, 128)
            XCTAssertEqual(d.embeddingWidth, 4)  // D comes from the file
            XCTAssertEqual(d.channelWidths, [8, 8, 4, 2, 1])
            let worst = try compare(d, expected: fixture("expected_small.npz"))
            print("small decoder: worst relative error \(worst)")
            XCTAssertLessThan(worst, 1e-4)
        }
        let codes = [5, 17, 127, 0, 64, 3, 99, 100, 1, 2, 3, 4, 120, 121, 122, 7]
        XCTAssertEqual(try stored.decode(codes: codes), try deflated.decode(codes: codes))
    }

    func testInvalidCodes() throws {
        let d = try VQVAEMaskDecoder(npz: fixture("vae_small.npz"))
        var codes = [Int](repeating: 0, count: 16)
        codes[3] = 128
        assertThrows(try d.decode(codes: codes)) { $0 as? MaskDecoderError == .invalidCode(position: 3, code: 128, codebookSize: 128) }
        codes[3] = -1
        assertThrows(try d.decode(codes: codes)) { $0 as? MaskDecoderError == .invalidCode(position: 3, code: -1, codebookSize: 128) }
        assertThrows(try d.decode(codes: Array(repeating: 0, count: 15))) {
            $0 as? MaskDecoderError == .wrongCodeCount(expected: 16, actual: 15)
        }
        codes[3] = Int.max
        assertThrows(try d.decode(codes: codes)) { ($0 as? MaskDecoderError).map { if case .invalidCode = $0 { return true } else { return false } } ?? false }
    }

    func testBadFiles() {
        assertThrows(try VQVAEMaskDecoder(npz: fixture("bad_missing_key.npz"))) {
            if case .missingKey(let k, _)? = $0 as? NumPyError { return k == "decoder.8.weight" }
            return false
        }
        assertThrows(try VQVAEMaskDecoder(npz: fixture("bad_shape.npz"))) {
            $0 as? MaskDecoderError == .wrongShape(key: "decoder.6.weight", expected: [8, -1, 4, 4], actual: [8, 3, 4, 4])
                || { if case .wrongShape(let k, _, _)? = $0 as? MaskDecoderError { return k.hasPrefix("decoder.") } else { return false } }($0)
        }
        assertThrows(try VQVAEMaskDecoder(npz: fixture("bad_fortran.npz"))) {
            $0 as? NumPyError == .fortranOrder(key: "decoder.0.weight")
        }
        assertThrows(try VQVAEMaskDecoder(npz: fixture("bad_truncated.npz"))) {
            if case .notAZipArchive? = $0 as? NumPyError { return true } else { return false }
        }
        assertThrows(try VQVAEMaskDecoder(npz: fixture("no_such_file.npz"))) {
            if case .fileNotFound? = $0 as? NumPyError { return true } else { return false }
        }
        assertThrows(try VQVAEMaskDecoder(npz: segmentationFixtures)) {  // a directory
            if case .fileNotFound? = $0 as? NumPyError { return true } else { return false }
        }
        // Not a zip at all.
        let garbage = FileManager.default.temporaryDirectory.appendingPathComponent("masks-garbage-\(getpid()).npz")
        try? Data((0..<5000).map { UInt8(truncatingIfNeeded: $0 &* 7919) }).write(to: garbage)
        defer { try? FileManager.default.removeItem(at: garbage) }
        assertThrows(try VQVAEMaskDecoder(npz: garbage)) {
            if case .notAZipArchive? = $0 as? NumPyError { return true } else { return false }
        }
        // A valid archive of arrays with the wrong contents: the expected-outputs file has no decoder keys.
        assertThrows(try VQVAEMaskDecoder(npz: fixture("expected_small.npz"))) {
            if case .missingKey(let k, _)? = $0 as? NumPyError { return k == "_vq_vae._embedding" } else { return false }
        }
    }

    func testDecodeTime() throws {
        let d = try VQVAEMaskDecoder(npz: fixture("vae_d16.npz"))
        let codes = (0..<16).map { ($0 * 37) % 128 }
        _ = try d.decode(codes: codes)
        let start = Date()
        let n = 3
        for _ in 0..<n { _ = try d.decode(codes: codes) }
        let ms = Date().timeIntervalSince(start) * 1000 / Double(n)
        print(String(format: "decode: %.1f ms per 64×64 mask (this build's optimisation level)", ms))
    }
}
