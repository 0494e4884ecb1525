import XCTest
@testable import SafeTensors
final class SafeTensorsPlaceholderTests: XCTestCase { func testBuilds() { XCTAssertTrue(true) } }
