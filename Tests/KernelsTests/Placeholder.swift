import XCTest
@testable import Kernels
final class KernelsPlaceholderTests: XCTestCase { func testBuilds() { XCTAssertTrue(true) } }
