import XCTest
@testable import Hub
final class HubPlaceholderTests: XCTestCase { func testBuilds() { XCTAssertTrue(true) } }
