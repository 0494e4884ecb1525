import XCTest
@testable import PaliGemma
final class PaliGemmaPlaceholderTests: XCTestCase { func testBuilds() { XCTAssertTrue(true) } }
