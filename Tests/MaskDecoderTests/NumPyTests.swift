import Foundation
import XCTest
@testable import MaskDecoder

final class NumPyTests: XCTestCase {
    func testDTypes() throws {
        let f4 = try NpyArray(npy: npyFile(header: "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }",
                                           payload: bytes([Float](arrayLiteral: 1, -2, 3.5, 0, 1e-3, 7))))
        XCTAssertEqual(f4.shape, [2, 3])
        XCTAssertEqual(f4.floats(), [1, -2, 3.5, 0, 1e-3, 7])
        XCTAssertNil(f4.int64s())

        let f8 = try NpyArray(npy: npyFile(header: "{'descr': '<f8', 'fortran_order': False, 'shape': (3,), }",
                                           payload: bytes([Double](arrayLiteral: 0.1, -1e300, 2))))
        XCTAssertEqual(f8.doubles(), [0.1, -1e300, 2])
        XCTAssertEqual(f8.floats()[0], Float(0.1))

        // float16: 1, −2, 0.5, 65504, smallest subnormal, +inf
        let f2 = try NpyArray(npy: npyFile(header: "{'descr': '<f2', 'fortran_order': False, 'shape': (6,), }",
                                           payload: bytes([UInt16](arrayLiteral: 0x3C00, 0xC000, 0x3800, 0x7BFF, 0x0001, 0x7C00))))
        XCTAssertEqual(f2.floats(), [1, -2, 0.5, 65504, Float(bitPattern: 0x3380_0000), .infinity])

        let i8 = try NpyArray(npy: npyFile(header: "{'descr': '<i8', 'fortran_order': False, 'shape': (2, 2), }",
                                           payload: bytes([Int64](arrayLiteral: -1, 5, Int64.max, 0))), key: "codes")
        XCTAssertEqual(i8.int64s(), [-1, 5, Int64.max, 0])
        let i4 = try NpyArray(npy: npyFile(header: "{'descr': '<i4', 'fortran_order': False, 'shape': (2,), }",
                                           payload: bytes([Int32](arrayLiteral: -7, 127))))
        XCTAssertEqual(i4.int64s(), [-7, 127])
        XCTAssertEqual(i4.floats(), [-7, 127])
        let u1 = try NpyArray(npy: npyFile(header: "{'descr': '|u1', 'fortran_order': False, 'shape': (3,), }", payload: [0, 200, 255]))
        XCTAssertEqual(u1.int64s(), [0, 200, 255])

        // Version 2 header, 0-d array, double quotes.
        let v2 = try NpyArray(npy: npyFile(header: "{\"descr\": \"<f4\", \"fortran_order\": False, \"shape\": (), }",
                                           payload: bytes([Float](arrayLiteral: 42)), version: 2))
        XCTAssertEqual(v2.shape, [])
        XCTAssertEqual(v2.floats(), [42])
        // Empty array.
        let empty = try NpyArray(npy: npyFile(header: "{'descr': '<f4', 'fortran_order': False, 'shape': (0, 16), }", payload: []))
        XCTAssertEqual(empty.count, 0)
    }

    func testBadHeaders() {
        func parse(_ header: String, _ payload: [UInt8] = [0, 0, 0, 0]) throws -> NpyArray {
            try NpyArray(npy: npyFile(header: header, payload: payload), key: "x")
        }
        func isBadHeader(_ e: Error) -> Bool { if case .badHeader? = e as? NumPyError { return true } else { return false } }
        assertThrows(try NpyArray(npy: Data([1, 2, 3]), key: "x"), isBadHeader)
        assertThrows(try NpyArray(npy: Data("NUMPY and more bytes".utf8), key: "x"), isBadHeader)
        var wrongVersion = npyFile(header: "{'descr': '<f4', 'fortran_order': False, 'shape': (1,), }", payload: [0, 0, 0, 0])
        wrongVersion[6] = 9
        assertThrows(try NpyArray(npy: wrongVersion, key: "x"), isBadHeader)
        let cut = npyFile(header: "{'descr': '<f4', 'fortran_order': False, 'shape': (1,), }", payload: []).prefix(30)
        assertThrows(try NpyArray(npy: Data(cut), key: "x"), isBadHeader)
        assertThrows(try parse("{'descr': '<f4', 'shape': (1,), }"), isBadHeader)
        assertThrows(try parse("{'descr': '<f4', 'fortran_order': False, 'shape': [1], }"), isBadHeader)
        assertThrows(try parse("{'descr': '<f4', 'fortran_order': False, 'shape': (1, -2), }"), isBadHeader)
        assertThrows(try parse("{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999999999999999,), }"), isBadHeader)
        assertThrows(try parse("{'descr': '<f4', 'fortran_order': False, 'shape': (4294967296, 4294967296, 4), }"), isBadHeader)
        assertThrows(try parse("{'descr': '<f4', 'fortran_order': maybe, 'shape': (1,), }"), isBadHeader)
        assertThrows(try parse("{'descr': '<f4', 'fortran_order': True, 'shape': (1,), }")) { $0 as? NumPyError == .fortranOrder(key: "x") }
        assertThrows(try parse("{'descr': '>f4', 'fortran_order': False, 'shape': (1,), }")) { $0 as? NumPyError == .unsupportedDType(key: "x", descr: ">f4") }
        assertThrows(try parse("{'descr': '<c8', 'fortran_order': False, 'shape': (1,), }")) { $0 as? NumPyError == .unsupportedDType(key: "x", descr: "<c8") }
        assertThrows(try parse("{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (1,), }")) {
            if case .unsupportedDType? = $0 as? NumPyError { return true } else { return false }
        }
        assertThrows(try parse("{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }")) {
            $0 as? NumPyError == .truncatedData(key: "x", expectedBytes: 8, actualBytes: 4)
        }
    }

    func testNpzKeysAndMissingKey() throws {
        let npz = try NpzArchive(url: fixture("vae_small.npz"))
        XCTAssertTrue(npz.contains("decoder.12.weight"))
        XCTAssertEqual(Set(npz.keys).count, 1 + 2 + 2 * 3 * 2 + 4 * 2 + 2)
        XCTAssertEqual(try npz.array("decoder.12.weight").shape, [1, 1, 1, 1])
        assertThrows(try npz.array("nope")) {
            if case .missingKey("nope", let available)? = $0 as? NumPyError { return available.contains("decoder.0.bias") }
            return false
        }
    }

    /// Found by tools/fuzz (target npz): a 790-byte archive one of whose entries claims 3 GB
    /// (from 1.8 GB of data) made `array` reserve 3 GB before reading a byte. The claim is now
    /// checked against the file and refused with an error naming the sizes.
    func testEntryClaimingMoreThanTheFileHoldsIsRefused() throws {
        let npz = try NpzArchive(url: fixture("fuzz_claimed_size.npz"))
        XCTAssertEqual(npz.keys.count, 2)
        var reasons: [String] = []
        for key in npz.keys {
            assertThrows(try npz.array(key)) {
                guard case .unreadableEntry(key, let reason)? = $0 as? NumPyError else { return false }
                reasons.append(reason)
                return true
            }
        }
        XCTAssertTrue(reasons.contains { $0.contains("claims 3009637473 bytes") }, "\(reasons)")
        XCTAssertThrowsError(try VQVAEMaskDecoder(npz: fixture("fuzz_claimed_size.npz")))
    }
}
