import Dispatch
import Foundation

/// Lets one generation use the model at a time (the compute backend has shared scratch buffers);
/// others wait in arrival order. When `maxWaiting` requests are already waiting, a new one is refused
/// with `APIError.busy` (503) instead of queueing without bound.
///
/// The model work itself runs on a dedicated serial queue, not on Swift's cooperative thread pool,
/// so the HTTP side stays responsive while a generation computes.
actor InferenceGate {
    let maxWaiting: Int
    private(set) var running = false
    private var waiters: [CheckedContinuation<Void, Never>] = []
    private static let queue = DispatchQueue(label: "paligemma.server.inference", qos: .userInitiated)
    /// How many model jobs ran at once, at most (1 unless serialisation is broken; for tests).
    nonisolated let activity = ActivityCounter()

    init(maxWaiting: Int) {
        self.maxWaiting = max(0, maxWaiting)
    }

    /// Requests waiting for their turn (not counting the one running).
    var waiting: Int { waiters.count }

    /// Whether a new request would be refused now.
    var isFull: Bool { running && waiters.count >= maxWaiting }

    /// Waits for the model; throws `busy` when the queue is full.
    func acquire() async throws {
        if !running {
            running = true
            return
        }
        guard waiters.count < maxWaiting else { throw APIError.busy(waiting: waiters.count) }
        await withCheckedContinuation { waiters.append($0) }
        // `release` handed the model over: `running` stayed true.
    }

    /// Waits for the model as `acquire`; a request whose client left while it waited gives its
    /// turn straight to the next one and throws `clientGone`.
    func acquire(unless clientGone: CancellationFlag) async throws {
        try await acquire()
        if clientGone.isCancelled {
            release()
            throw APIError.clientGone
        }
    }

    /// Hands the model to the next waiter, or marks it free.
    func release() {
        if waiters.isEmpty {
            running = false
        } else {
            waiters.removeFirst().resume()
        }
    }

    /// Runs blocking model work on the inference queue. The caller must hold the gate.
    nonisolated func execute<T>(_ work: @escaping @Sendable () throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<T, Error>) in
            Self.queue.async { [activity] in
                activity.enter()
                let result = Result { try work() }
                activity.leave()
                continuation.resume(with: result)
            }
        }
    }

    /// Runs `work` on the inference queue, then releases the gate (held by the caller) whatever
    /// the outcome, which it returns.
    nonisolated func executeThenRelease<T>(_ work: @escaping @Sendable () throws -> T) async -> Result<T, Error> {
        let result: Result<T, Error>
        do { result = .success(try await execute(work)) } catch { result = .failure(error) }
        await release()
        return result
    }

}

/// Set from the HTTP side (client gone), read by the generation loop between tokens.
// @unchecked Sendable: `value` is only touched under `lock` (the loop reads it synchronously, so
// not an actor).
final class CancellationFlag: @unchecked Sendable {
    private let lock = NSLock()
    private var value = false
    var isCancelled: Bool { lock.lock(); defer { lock.unlock() }; return value }
    func cancel() { lock.lock(); value = true; lock.unlock() }
}

/// Counts jobs in progress and remembers the most seen at once.
// @unchecked Sendable: the counts are only touched under `lock`.
final class ActivityCounter: @unchecked Sendable {
    private let lock = NSLock()
    private var current = 0
    private var peak = 0
    private var total = 0
    func enter() { lock.lock(); current += 1; total += 1; peak = max(peak, current); lock.unlock() }
    func leave() { lock.lock(); current -= 1; lock.unlock() }
    var maxConcurrent: Int { lock.lock(); defer { lock.unlock() }; return peak }
    var completed: Int { lock.lock(); defer { lock.unlock() }; return total }
}

/// Bounds how many decoded images exist at once (each up to `maxPixels` × 3 bytes): a request
/// takes a slot before decoding its image and gives it back when its generation ends, so many
/// large images arriving together wait as compressed bodies instead of filling memory.
actor DecodeSlots {
    private var free: Int
    private var waiters: [CheckedContinuation<Void, Never>] = []

    init(count: Int) { free = max(1, count) }

    /// Waits for a slot; the lease gives it back when released or, at the latest, when dropped.
    func take() async -> Lease {
        if free > 0 {
            free -= 1
        } else {
            await withCheckedContinuation { waiters.append($0) }
        }
        return Lease(slots: self)
    }

    fileprivate func giveBack() {
        if waiters.isEmpty { free += 1 } else { waiters.removeFirst().resume() }
    }

    /// One slot held. A response body that is never written (its client gone first) still
    /// returns the slot when it is freed.
    final class Lease: @unchecked Sendable {
        // `released` is only touched under `lock`; `slots` is an actor.
        private let slots: DecodeSlots
        private let lock = NSLock()
        private var released = false

        fileprivate init(slots: DecodeSlots) { self.slots = slots }

        func release() {
            lock.lock()
            let first = !released
            released = true
            lock.unlock()
            if first { Task { [slots] in await slots.giveBack() } }
        }

        deinit { release() }
    }
}

/// Counts the requests admitted and not yet answered (parsing, decoding, queued or generating),
/// so that `--max-waiting` bounds them all: one running plus `maxWaiting` more, the rest 503.
final class Admission: @unchecked Sendable {
    // `admitted` is only touched under `lock`.
    private let lock = NSLock()
    private var admitted = 0
    let limit: Int

    init(maxWaiting: Int) { limit = max(0, maxWaiting) + 1 }

    /// Requests admitted now.
    var count: Int { lock.lock(); defer { lock.unlock() }; return admitted }

    /// A ticket for one more request, or `busy` when the limit is reached.
    func admit() throws -> Ticket {
        lock.lock()
        guard admitted < limit else {
            let waiting = admitted - 1
            lock.unlock()
            throw APIError.busy(waiting: max(0, waiting))
        }
        admitted += 1
        lock.unlock()
        return Ticket(admission: self)
    }

    fileprivate func leave() { lock.lock(); admitted -= 1; lock.unlock() }

    /// One admitted request; released when it is answered or, at the latest, when dropped.
    final class Ticket: @unchecked Sendable {
        // `released` is only touched under `lock`.
        private let admission: Admission
        private let lock = NSLock()
        private var released = false

        fileprivate init(admission: Admission) { self.admission = admission }

        func release() {
            lock.lock()
            let first = !released
            released = true
            lock.unlock()
            if first { admission.leave() }
        }

        deinit { release() }
    }
}
