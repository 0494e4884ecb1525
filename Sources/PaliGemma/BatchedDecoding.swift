import Foundation
import Kernels

/// Several sequences decoding at once share each decode step: one pass over the weights serves
/// every sequence that is ready for its next token (continuous batching at token boundaries).
///
/// Turned on with ``PaliGemmaModel/enableBatchedDecoding(maxSequences:)``. Each generation still
/// runs its own loop (sampling, stop tokens, streaming text) on its own thread; its
/// ``InferenceSession/step(token:)`` joins the step the other sequences are about to take, and
/// the last sequence to arrive (or the first to wait 5 ms) runs it for all of them. Image encoding
/// and prefill take the model alone, and between their layers they run the steps the decoding
/// sequences wait for, so running streams slow down during a newcomer's prefill instead of
/// stopping.
///
/// Each sequence's logits are bit for bit those of its own unbatched step: the products use
/// ``ComputeBackend/linearEachRow(_:_:into:)`` (one weight read for all rows, each row computed
/// as alone) or, where the backend has no such kernel, one product per sequence; attention runs
/// per sequence on its own cache.
public final class BatchedDecoding: @unchecked Sendable {
    // @unchecked: `pending`, `decoding`, `running`, `exclusiveWork`, the timings and the entries'
    // fields are only touched while `condition` is locked; the model's buffers only while
    // `compute` is held.
    public let maxSequences: Int
    unowned let model: PaliGemmaModel
    private let condition = NSCondition()
    private let compute = NSRecursiveLock()
    private var pending: [Entry] = []
    private var decoding = 0
    private var running = false
    /// Threads in `exclusive` (waiting for the model or holding it): while there are any, steps
    /// run only from their layer boundaries (`interleave`).
    private var exclusiveWork = 0
    /// When the first waiting sequence could have started its step.
    private var windowStart = Date()
    /// When the last step ended and how long it took.
    private var lastStepEnd = Date.distantPast
    private var lastStepDuration: TimeInterval = 0
    private var decodeShare = 0.25
    private let scratch: DecodeBatchScratch
    /// Recent prefills, reused by requests with the same image and prompt.
    let prefills = PrefillCache(capacity: 2)
    /// Steps taken, sequences they served (for `meanBatch`), and steps run between the layers of
    /// an image encoding or prefill.
    private var steps = 0, sequenceSteps = 0, stepsBetweenLayers = 0

    private final class Entry {
        let session: InferenceSession
        var done = false
        var error: Error?
        init(_ session: InferenceSession) { self.session = session }
    }

    init(model: PaliGemmaModel, maxSequences: Int) {
        self.model = model
        self.maxSequences = max(1, maxSequences)
        scratch = DecodeBatchScratch(config: model.config.text, capacity: self.maxSequences)
    }

    /// Sequences per decode step so far, on average (1 when nothing was batched).
    public var meanBatch: Double {
        condition.lock(); defer { condition.unlock() }
        return steps == 0 ? 1 : Double(sequenceSteps) / Double(steps)
    }

    /// The share of time the waiting sequences' steps may take while an image encoding or a
    /// prefill runs (0…1). With 0.25 (the default) a step runs once the time since the last one
    /// ended is three times what that one took; 0.5 gives equal turns; 0 runs none until it is
    /// done (newcomers start sooner, running streams stop meanwhile); 1 runs one between every
    /// two layers.
    public var decodeShareBetweenLayers: Double {
        get { condition.lock(); defer { condition.unlock() }; return decodeShare }
        set { condition.lock(); decodeShare = min(1, max(0, newValue)); condition.unlock() }
    }

    /// Decode steps so far: how many ran, the sequences they served together, and how many ran
    /// between the layers of an image encoding or a prefill.
    public struct Counts: Sendable, Equatable {
        public let steps: Int, sequences: Int, betweenLayers: Int

        /// What was counted after `start` (an earlier reading).
        public func since(_ start: Counts) -> Counts {
            Counts(steps: steps - start.steps, sequences: sequences - start.sequences,
                   betweenLayers: betweenLayers - start.betweenLayers)
        }
    }

    public var counts: Counts {
        condition.lock(); defer { condition.unlock() }
        return Counts(steps: steps, sequences: sequenceSteps, betweenLayers: stepsBetweenLayers)
    }

    /// Runs model work that needs the model alone (image encoding, prefill) between steps: it
    /// waits for a running step to end, and no step starts on its own until it is done.
    func exclusive<T>(_ body: () throws -> T) rethrows -> T {
        condition.lock()
        exclusiveWork += 1
        while running { condition.wait() }
        condition.unlock()
        compute.lock()
        defer {
            compute.unlock()
            condition.lock()
            exclusiveWork -= 1
            condition.broadcast()
            condition.unlock()
        }
        return try body()
    }

    /// Called from `exclusive` work between its layers: runs one step for the sequences waiting
    /// for theirs, taking at most `decodeShareBetweenLayers` of the time.
    func interleave() {
        condition.lock()
        let share = decodeShare
        guard share > 0, !running, decoding > 0 || !pending.isEmpty,
              Date().timeIntervalSince(lastStepEnd) * share >= lastStepDuration * (1 - share) else {
            condition.unlock()
            return
        }
        // Sequences between two steps (sampling, streaming) get the usual moment to join.
        let until = (pending.isEmpty ? Date() : windowStart).addingTimeInterval(0.005)
        while pending.count < min(decoding, maxSequences) && Date() < until {
            _ = condition.wait(until: until)
        }
        guard !pending.isEmpty else {
            condition.unlock()
            return
        }
        let batch = takeBatch()
        condition.unlock()
        execute(batch, betweenLayers: true)
    }

    /// A sequence starts (`enter`) or stops (`leave`) decoding: steps wait for the sequences
    /// that are decoding, at most a moment.
    func enter() {
        condition.lock()
        decoding += 1
        condition.unlock()
    }

    func leave() {
        condition.lock()
        decoding -= 1
        condition.broadcast()
        condition.unlock()
    }

    /// Feeds `session`'s token (already in `session.stepToken`) with the next batch and returns
    /// its logits. The first sequence waiting leads: it runs the step once every decoding sequence
    /// has arrived, or 5 ms after it could have started; the others sleep until it is done.
    func step(_ session: InferenceSession) throws -> Matrix {
        let entry = Entry(session)
        condition.lock()
        if pending.isEmpty && !running { windowStart = Date() }
        pending.append(entry)
        condition.broadcast()
        while !entry.done {
            guard !running, exclusiveWork == 0, pending.first === entry else {
                condition.wait()
                continue
            }
            let until = windowStart.addingTimeInterval(0.005)
            guard pending.count >= min(decoding, maxSequences) || Date() >= until else {
                _ = condition.wait(until: until)
                continue
            }
            let batch = takeBatch()
            condition.unlock()
            execute(batch, betweenLayers: false)
            condition.lock()
        }
        condition.unlock()
        if let error = entry.error { throw error }
        return session.state.lastLogits
    }

    /// The next batch, taken off the queue; `condition` must be locked.
    private func takeBatch() -> [Entry] {
        let batch = Array(pending.prefix(maxSequences))
        pending.removeFirst(batch.count)
        running = true
        return batch
    }

    /// Runs `batch`'s step and wakes its sequences.
    private func execute(_ batch: [Entry], betweenLayers: Bool) {
        let began = Date()
        var failure: Error?
        compute.lock()
        do { try run(batch.map(\.session)) } catch { failure = error }
        compute.unlock()
        condition.lock()
        running = false
        lastStepEnd = Date()
        lastStepDuration = lastStepEnd.timeIntervalSince(began)
        windowStart = lastStepEnd
        steps += 1
        sequenceSteps += batch.count
        if betweenLayers { stepsBetweenLayers += 1 }
        for e in batch {
            e.done = true
            e.error = failure
        }
        condition.broadcast()
        condition.unlock()
    }

    /// One decode step for every session of the batch; each session's logits land in its own
    /// `lastLogits`.
    private func run(_ sessions: [InferenceSession]) throws {
        let s = scratch
        let n = sessions.count
        s.ids.removeAll(keepingCapacity: true)
        for session in sessions { s.ids.append(session.stepToken[0]) }
        s.x.setRows(n)
        model.backend.embed(s.ids, table: model.decoder.embedTokens, scale: model.decoder.embedScale, into: s.x)
        model.decoder.replaceTokenRows(s.ids, in: s.x)
        let states = sessions.map(\.state)
        model.decoder.forwardBatch(states, s, backend: model.backend)
        model.decoder.batchLogits(states, s, backend: model.backend)
        for (i, session) in sessions.enumerated() {
            session.state.lastLogits.copyRows(from: s.logits, sourceRow: i, count: 1, to: 0)
        }
    }
}

/// The batch's activations, for up to `capacity` sequences, allocated once.
final class DecodeBatchScratch {
    let x, normed, attnOut, sublayerOut: Matrix   // [·, H]
    let q, attended: Matrix                       // [·, heads·hd]
    let k, v: Matrix                              // [·, kv·hd]
    let gate, up: Matrix                          // [·, I]
    let logits: Matrix                            // [·, vocab]
    var ids: [Int]

    init(config: TextConfig, capacity: Int) {
        let h = config.hiddenSize, qd = config.numAttentionHeads * config.headDim
        let kvd = config.numKeyValueHeads * config.headDim, i = config.intermediateSize
        func m(_ columns: Int) -> Matrix { Matrix(rows: 0, columns: columns, rowCapacity: capacity) }
        (x, normed, attnOut, sublayerOut) = (m(h), m(h), m(h), m(h))
        (q, attended, k, v) = (m(qd), m(qd), m(kvd), m(kvd))
        (gate, up, logits) = (m(i), m(i), m(config.vocabSize))
        ids = []
        ids.reserveCapacity(capacity)
    }
}

extension Gemma2Decoder {
    /// `forward` for one new token of each of `states`, their embeddings in `s.x` (row i for
    /// state i): the products over all rows at once, attention per sequence on its own cache.
    func forwardBatch(_ states: [Gemma2State], _ s: DecodeBatchScratch, backend: ComputeBackend) {
        let c = config
        let n = states.count
        for state in states { precondition(state.length + 1 <= state.capacity, "sequence exceeds the state's capacity") }
        for (l, layer) in layers.enumerated() {
            backend.rmsNorm(s.x, weight: layer.inputNorm, weightOffset: 1, eps: c.rmsNormEps, into: s.normed)
            eachRow(s.normed, l, .q, layer.q, into: s.q, states, via: (\.normed, \.q), backend)
            eachRow(s.normed, l, .k, layer.k, into: s.k, states, via: (\.normed, \.k), backend)
            eachRow(s.normed, l, .v, layer.v, into: s.v, states, via: (\.normed, \.v), backend)
            for (i, state) in states.enumerated() {
                // The single-sequence step's own attention, on this sequence's one row.
                state.q.setRows(1)
                state.k.setRows(1)
                state.v.setRows(1)
                state.q.copyRows(from: s.q, sourceRow: i, count: 1, to: 0)
                state.k.copyRows(from: s.k, sourceRow: i, count: 1, to: 0)
                state.v.copyRows(from: s.v, sourceRow: i, count: 1, to: 0)
                appendKeysValues(state, layer: l, start: state.length, rows: 1, backend: backend)
                attend(state, layer: l, queryStart: state.length, keyCount: state.length + 1, backend: backend)
                s.attended.setRows(n)
                s.attended.copyRows(from: state.attended, count: 1, to: i)
            }
            eachRow(s.attended, l, .o, layer.o, into: s.attnOut, states, via: (\.attended, \.attnOut), backend)
            addSublayer(s.attnOut, norm: layer.postAttentionNorm, scratch: s.sublayerOut, into: s.x, backend)
            backend.rmsNorm(s.x, weight: layer.preFeedforwardNorm, weightOffset: 1, eps: c.rmsNormEps, into: s.normed)
            eachRow(s.normed, l, .gate, layer.gate, into: s.gate, states, via: (\.normed, \.gate), backend)
            eachRow(s.normed, l, .up, layer.up, into: s.up, states, via: (\.normed, \.up), backend)
            backend.geluTanh(s.gate, times: s.up, into: s.gate)
            eachRow(s.gate, l, .down, layer.down, into: s.attnOut, states, via: (\.gate, \.attnOut), backend)
            addSublayer(s.attnOut, norm: layer.postFeedforwardNorm, scratch: s.sublayerOut, into: s.x, backend)
        }
        for state in states { state.length += 1 }
    }

    /// `logits` for each row of the batch's final hidden states, into `s.logits`.
    func batchLogits(_ states: [Gemma2State], _ s: DecodeBatchScratch, backend: ComputeBackend) {
        backend.rmsNorm(s.x, weight: finalNorm, weightOffset: 1, eps: config.rmsNormEps, into: s.normed)
        eachRow(s.normed, nil, nil, lmHead, into: s.logits, states, via: (\.normed, \.lastLogits), backend)
        patchTokenLogits(normed: s.normed, logits: s.logits)
        if let cap = config.finalLogitSoftcapping { backend.softcap(s.logits, cap: cap) }
    }

    /// `out = x·Wᵀ` with each row computed as it would be alone: by the backend in one pass when
    /// it can, else one product per sequence through that sequence's own one-row buffers; then
    /// the adapter's low-rank term of layer `l`'s `target`, per sequence as `project` adds it.
    private func eachRow(_ x: Matrix, _ l: Int?, _ target: LoRATarget?, _ w: WeightMatrix, into out: Matrix,
                         _ states: [Gemma2State],
                         via buffers: (KeyPath<Gemma2State, Matrix>, KeyPath<Gemma2State, Matrix>),
                         _ backend: ComputeBackend) {
        let own = backend.linearEachRow(x, w, into: out)
        if !own { out.setRows(x.rows) }
        let pair = l.flatMap { l in target.flatMap { adapter?.pairs[l][$0] } }
        guard !own || pair != nil else { return }
        for (i, state) in states.enumerated() {
            let input = state[keyPath: buffers.0], output = state[keyPath: buffers.1]
            input.setRows(1)
            input.copyRows(from: x, sourceRow: i, count: 1, to: 0)
            if !own {
                backend.linear(input, w, bias: nil, into: output)
                out.copyRows(from: output, count: 1, to: i)
            }
            if let pair, let adapter, let target, let low = state.loraLow, let high = state.loraOut[target] {
                let products = Gradients(backend: backend)
                products.product(input, pair.a, into: low)
                products.product(low, pair.b, into: high)
                out.addRow(i, high, scale: adapter.config.scale)
            }
        }
    }
}

/// Prefilled prompts kept for reuse while generations run concurrently: a request with the same
/// image encoding (the same object, as an encoded-image cache hands out) and the same prompt
/// starts from a copy of the stored KV cache and logits instead of running prefill again, which
/// is exact (the computation is deterministic). A few entries, least recently used dropped; used
/// only under the model's compute lock.
final class PrefillCache {
    struct Entry {
        let image: Matrix
        let ids: [Int], types: [Int]
        let prefixLength: Int
        let keys: [Matrix], values: [Matrix]
        let logits: [Float]
    }

    let capacity: Int
    private var entries: [Entry] = []
    /// Prefills restored rather than run.
    private(set) var hits = 0

    init(capacity: Int) { self.capacity = capacity }

    /// Restores a stored prefill into `state`; false when there is none for these inputs.
    func restore(image: Matrix, ids: [Int], types: [Int], into state: Gemma2State) -> Bool {
        guard let i = entries.firstIndex(where: { $0.image === image && $0.ids == ids && $0.types == types }),
              ids.count <= state.capacity else { return false }
        let e = entries.remove(at: i)
        entries.append(e)
        hits += 1
        state.restorePrefix(keys: e.keys, values: e.values, count: ids.count)
        state.prefixLength = e.prefixLength
        state.lastLogits.setRow(0, e.logits)
        return true
    }

    /// Stores `state` right after its prefill.
    func store(image: Matrix, ids: [Int], types: [Int], from state: Gemma2State) {
        guard capacity > 0 else { return }
        let cache = state.cachedPrefix(ids.count)
        entries.append(Entry(image: image, ids: ids, types: types, prefixLength: state.prefixLength,
                             keys: cache.keys, values: cache.values, logits: state.lastLogits.row(0)))
        if entries.count > capacity { entries.removeFirst(entries.count - capacity) }
    }
}
