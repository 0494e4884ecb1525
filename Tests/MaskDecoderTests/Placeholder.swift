import XCTest
@testable import MaskDecoder
final class MaskDecoderPlaceholderTests: XCTestCase { func testBuilds() { XCTAssertTrue(true) } }
