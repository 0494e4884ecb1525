import CKernels
import XCTest

/// The C thread pool behind FastBackend's parallel regions: every item runs exactly once, in the
/// documented shares, and a region started while another runs is declined (the caller then uses
/// Dispatch) instead of deadlocking.
final class ThreadPoolTests: XCTestCase {
    private struct Region {
        var hits: UnsafeMutablePointer<Int32>
        var owner: UnsafeMutablePointer<Int64>
        var pool: OpaquePointer
        var nestedResult: Int32 = -1
    }

    private static let task: ck_pool_task = { context, start, end, worker in
        let region = context!.assumingMemoryBound(to: Region.self)
        for i in Int(start)..<Int(end) {
            region.pointee.hits[i] += 1
            region.pointee.owner[i] = worker
        }
        if worker == 0 {
            // Share 0 runs on the caller, inside the region: a nested region must be declined.
            region.pointee.nestedResult = ck_pool_run(region.pointee.pool, 4, 2, ThreadPoolTests.task, context)
        }
    }

    func testEveryItemRunsOnceInContiguousSharesAndNestedRegionsAreDeclined() throws {
        let pool = try XCTUnwrap(ck_pool_create(3))
        defer { ck_pool_destroy(pool) }
        XCTAssertEqual(ck_pool_threads(pool), 3)
        for count in [1, 2, 3, 7, 1000] {
            for workers in 1...3 where workers <= count {
                // Many regions in a row: helpers go from region to region while spinning.
                for _ in 0..<50 {
                    let hits = UnsafeMutablePointer<Int32>.allocate(capacity: count)
                    let owner = UnsafeMutablePointer<Int64>.allocate(capacity: count)
                    hits.initialize(repeating: 0, count: count)
                    owner.initialize(repeating: -1, count: count)
                    defer { hits.deallocate(); owner.deallocate() }
                    var region = Region(hits: hits, owner: owner, pool: pool)
                    let ran = withUnsafeMutablePointer(to: &region) {
                        ck_pool_run(pool, Int64(count), Int64(workers), ThreadPoolTests.task, $0)
                    }
                    XCTAssertEqual(ran, 1)
                    XCTAssertEqual(region.nestedResult, 0, "a region inside a region must be declined")
                    for i in 0..<count {
                        XCTAssertEqual(hits[i], 1, "item \(i) of \(count) with \(workers) workers")
                        // share w covers count·w/workers ..< count·(w+1)/workers
                        let w = Int64((0..<workers).first { i < count * ($0 + 1) / workers }!)
                        XCTAssertEqual(owner[i], w)
                    }
                }
            }
        }
        // More workers than threads: declined, nothing run.
        var region = Region(hits: .allocate(capacity: 8), owner: .allocate(capacity: 8), pool: pool)
        defer { region.hits.deallocate(); region.owner.deallocate() }
        XCTAssertEqual(withUnsafeMutablePointer(to: &region) { ck_pool_run(pool, 8, 4, ThreadPoolTests.task, $0) }, 0)
    }

    func testPoolsComeAndGo() throws {
        // Creating and destroying pools (one per FastBackend) joins their threads cleanly, also
        // right after a region while the helpers still spin.
        for threads in [1, 2, 4] {
            let pool = try XCTUnwrap(ck_pool_create(Int64(threads)))
            XCTAssertEqual(ck_pool_threads(pool), Int64(threads))
            ck_pool_destroy(pool)
        }
    }
}
