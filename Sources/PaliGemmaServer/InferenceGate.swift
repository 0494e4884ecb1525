import Dispatch
import Foundation

/// Lets up to `slots` generations run at once (they share decode steps: ``BatchedDecoding``);
/// others wait in arrival order. When `maxWaiting` requests are already waiting, a new one is
/// refused with `APIError.busy` (503) instead of queueing without bound.
///
/// Each generation runs on a thread of its own, not on Swift's cooperative thread pool: its loop
/// blocks while the step it joined runs, and the HTTP side stays responsive meanwhile.
actor InferenceGate {
    let maxWaiting: Int
    let slots: Int
    /// Bytes of KV cache the running generations may reserve together (Int.max: no bound).
    let kvBudget: Int
    /// Generations holding a slot.
    private(set) var active = 0
    /// KV cache bytes the running generations reserved.
    private(set) var reserved = 0
    private var waiters: [Waiter] = []
    /// How many model jobs ran at once, at most, and how many ran (for tests).
    nonisolated let activity = ActivityCounter()

    private struct Waiter {
        let cost: Int
        let resume: CheckedContinuation<Void, Never>
        /// Told the requests ahead of it whenever that changes.
        let onPosition: (@Sendable (Int) -> Void)?
    }

    init(maxWaiting: Int, slots: Int = 1, kvBudget: Int = .max) {
        self.maxWaiting = max(0, maxWaiting)
        self.slots = max(1, slots)
        self.kvBudget = max(0, kvBudget)
    }

    /// Whether a generation reserving `cost` bytes of KV cache may start now: a free slot and
    /// room in the budget (a generation alone always may; requests larger than the budget are
    /// refused before they get here).
    private func fits(_ cost: Int) -> Bool {
        active < slots && (active == 0 || reserved + cost <= kvBudget)
    }

    /// Whether a generation is running.
    var running: Bool { active > 0 }

    /// Requests waiting for a slot.
    var waiting: Int { waiters.count }

    /// Whether a new request would be refused now.
    var isFull: Bool { active >= slots && waiters.count >= maxWaiting }

    /// Waits for a slot; throws `busy` when the queue is full. `onPosition` hears how many
    /// requests are ahead while it waits (not called when a slot is free at once).
    func acquire(cost: Int = 0, onPosition: (@Sendable (Int) -> Void)? = nil) async throws {
        if waiters.isEmpty && fits(cost) {
            active += 1
            reserved += cost
            return
        }
        guard waiters.count < maxWaiting else { throw APIError.busy(waiting: waiters.count) }
        onPosition?(waiters.count)
        await withCheckedContinuation { waiters.append(Waiter(cost: cost, resume: $0, onPosition: onPosition)) }
        // `release` admitted it: `active` and `reserved` count it already.
    }

    /// Waits for a slot as `acquire`; a request whose client left while it waited gives its
    /// slot straight to the next one and throws `clientGone`.
    func acquire(unless clientGone: CancellationFlag, cost: Int = 0, onPosition: (@Sendable (Int) -> Void)? = nil) async throws {
        try await acquire(cost: cost, onPosition: onPosition)
        if clientGone.isCancelled {
            release(cost: cost)
            throw APIError.clientGone
        }
    }

    /// Frees a slot and its KV reservation, then starts waiters in arrival order while they fit
    /// (telling the rest their new place).
    func release(cost: Int = 0) {
        active -= 1
        reserved -= cost
        var moved = false
        while let first = waiters.first, fits(first.cost) {
            waiters.removeFirst()
            active += 1
            reserved += first.cost
            first.resume.resume()
            moved = true
        }
        if moved { for (i, w) in waiters.enumerated() { w.onPosition?(i) } }
    }

    /// Runs blocking model work on a thread of its own. The caller must hold a slot.
    nonisolated func execute<T>(_ work: @escaping @Sendable () throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<T, Error>) in
            let thread = Thread { [activity] in
                activity.enter()
                let result = Result { try work() }
                activity.leave()
                continuation.resume(with: result)
            }
            thread.stackSize = 8 << 20
            thread.start()
        }
    }

    /// Runs `work` on a thread of its own, then releases the slot (held by the caller) whatever
    /// the outcome, which it returns.
    nonisolated func executeThenRelease<T>(cost: Int = 0, _ work: @escaping @Sendable () throws -> T) async -> Result<T, Error> {
        let result: Result<T, Error>
        do { result = .success(try await execute(work)) } catch { result = .failure(error) }
        await release(cost: cost)
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
