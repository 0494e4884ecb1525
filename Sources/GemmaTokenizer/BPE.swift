/// One candidate merge of two adjacent symbols.
struct MergeCandidate {
    /// rank << 32 | left position: the smallest key merges first (leftmost on equal rank).
    var key: UInt64
    var right: Int32
    var merged: Int32
    var leftID: Int32
    var rightID: Int32
}

/// A binary min-heap of merge candidates.
struct CandidateHeap {
    var items: [MergeCandidate] = []

    mutating func push(_ c: MergeCandidate) {
        items.append(c)
        var i = items.count - 1
        while i > 0 {
            let parent = (i - 1) / 2
            if items[parent].key <= items[i].key { break }
            items.swapAt(parent, i)
            i = parent
        }
    }

    mutating func pop() -> MergeCandidate? {
        guard let top = items.first else { return nil }
        let last = items.removeLast()
        if !items.isEmpty {
            items[0] = last
            var i = 0
            let n = items.count
            while true {
                let l = 2 * i + 1, r = l + 1
                var m = i
                if l < n && items[l].key < items[m].key { m = l }
                if r < n && items[r].key < items[m].key { m = r }
                if m == i { break }
                items.swapAt(m, i)
                i = m
            }
        }
        return top
    }
}

/// Reusable buffers for one BPE run.
struct BPEWorkspace {
    var ids: [Int32] = []
    var scalars: [UInt32] = []
    var prev: [Int32] = []
    var next: [Int32] = []
    var heap = CandidateHeap()
    var bytes: [UInt8] = []
}

extension GemmaTokenizer {
    @inline(__always)
    func initialID(_ scalar: UInt32) -> Int32 {
        if scalar < 0x10000 { return bmpIDs[Int(scalar)] }
        return model.scalarIDs[scalar] ?? -1
    }

    /// Runs BPE separately on the chunks between scalar boundaries no merge can ever cross (exact, and
    /// keeps the merge queue small for long inputs).
    func bpeInChunks(_ word: ArraySlice<UInt32>, into out: inout [Int32], workspace w: inout BPEWorkspace) {
        if model.ignoreMerges || word.count < 2 {
            bpe(word, into: &out, workspace: &w)
            return
        }
        var start = word.startIndex
        var previous = word[start]
        for i in (word.startIndex + 1)..<word.endIndex {
            let current = word[i]
            if joinableScalars.value(left: Int32(bitPattern: previous), right: Int32(bitPattern: current)) == nil {
                bpe(word[start..<i], into: &out, workspace: &w)
                start = i
            }
            previous = current
        }
        bpe(word[start..<word.endIndex], into: &out, workspace: &w)
    }

    /// Encodes one pre-tokenised word (normalised scalars) with BPE merges and byte fallback.
    func bpe(_ word: ArraySlice<UInt32>, into out: inout [Int32], workspace w: inout BPEWorkspace) {
        let n = word.count
        if n == 0 { return }
        if n == 1 {
            let v = word[word.startIndex]
            let id = initialID(v)
            if id >= 0 { out.append(id) } else { appendUnknown(v, into: &out, bytes: &w.bytes) }
            return
        }
        if model.ignoreMerges, n > 1 {
            var s = String.UnicodeScalarView()
            for v in word { if let u = Unicode.Scalar(v) { s.append(u) } }
            if let id = model.vocabLookup[String(s)] { out.append(id); return }
        }
        if n <= 48 {
            smallBPE(word, into: &out, workspace: &w)
            return
        }
        w.ids.removeAll(keepingCapacity: true)
        w.scalars.removeAll(keepingCapacity: true)
        w.prev.removeAll(keepingCapacity: true)
        w.next.removeAll(keepingCapacity: true)
        w.heap.items.removeAll(keepingCapacity: true)
        var i: Int32 = 0
        for v in word {
            w.ids.append(initialID(v))
            w.scalars.append(v)
            w.prev.append(i - 1)
            w.next.append(i + 1 < Int32(n) ? i + 1 : -1)
            i += 1
        }
        let merges = mergeTable
        @inline(__always) func consider(_ left: Int32, _ right: Int32, _ w: inout BPEWorkspace) {
            let l = w.ids[Int(left)], r = w.ids[Int(right)]
            guard l >= 0, r >= 0, let value = merges.value(left: l, right: r) else { return }
            w.heap.push(MergeCandidate(
                key: (value >> 32) << 32 | UInt64(UInt32(bitPattern: left)), right: right,
                merged: Int32(truncatingIfNeeded: value & 0xFFFF_FFFF), leftID: l, rightID: r))
        }
        if n > 1 && !merges.isEmpty {
            for j in 0..<(Int32(n) - 1) { consider(j, j + 1, &w) }
            while let c = w.heap.pop() {
                let left = Int(c.key & 0xFFFF_FFFF), right = Int(c.right)
                guard w.ids[left] == c.leftID, w.next[left] == c.right, w.ids[right] == c.rightID else { continue }
                w.ids[left] = c.merged
                w.ids[right] = -2
                let after = w.next[right]
                w.next[left] = after
                if after >= 0 { w.prev[Int(after)] = Int32(left) }
                let before = w.prev[left]
                if before >= 0 { consider(before, Int32(left), &w) }
                if after >= 0 { consider(Int32(left), after, &w) }
            }
        }
        var k: Int32 = 0
        while k >= 0 {
            let id = w.ids[Int(k)]
            if id >= 0 {
                out.append(id)
            } else {
                appendUnknown(w.scalars[Int(k)], into: &out, bytes: &w.bytes)
            }
            k = w.next[Int(k)]
        }
    }

    /// The same merge order for short words by rescanning a compact array (faster than a heap there):
    /// the lowest rank merges first, the leftmost on ties.
    func smallBPE(_ word: ArraySlice<UInt32>, into out: inout [Int32], workspace w: inout BPEWorkspace) {
        var n = word.count
        w.ids.removeAll(keepingCapacity: true)
        w.scalars.removeAll(keepingCapacity: true)
        for v in word {
            w.ids.append(initialID(v))
            w.scalars.append(v)
        }
        let merges = mergeTable
        w.ids.withUnsafeMutableBufferPointer { ids in
            w.scalars.withUnsafeMutableBufferPointer { scalars in
                @inline(__always) func pairValue(_ i: Int) -> UInt64 {
                    let l = ids[i], r = ids[i + 1]
                    guard l >= 0, r >= 0, let v = merges.value(left: l, right: r) else { return .max }
                    return v
                }
                withUnsafeTemporaryAllocation(of: UInt64.self, capacity: n) { ranks in
                for i in 0..<(n - 1) { ranks[i] = pairValue(i) }
                ranks[n - 1] = .max
                while n > 1 {
                    var best = 0
                    var bestRank = ranks[0] >> 32
                    for i in 1..<(n - 1) where ranks[i] >> 32 < bestRank {
                        best = i
                        bestRank = ranks[i] >> 32
                    }
                    if ranks[best] == .max { break }
                    ids[best] = Int32(truncatingIfNeeded: ranks[best] & 0xFFFF_FFFF)
                    for j in (best + 1)..<(n - 1) {
                        ids[j] = ids[j + 1]
                        scalars[j] = scalars[j + 1]
                        ranks[j] = ranks[j + 1]
                    }
                    n -= 1
                    ranks[n - 1] = .max
                    if best + 1 < n { ranks[best] = pairValue(best) } else { ranks[best] = .max }
                    if best > 0 { ranks[best - 1] = pairValue(best - 1) }
                }
                }
            }
        }
        for k in 0..<n {
            let id = w.ids[k]
            if id >= 0 { out.append(id) } else { appendUnknown(w.scalars[k], into: &out, bytes: &w.bytes) }
        }
    }

    @inline(__always)
    func appendUnknown(_ scalar: UInt32, into out: inout [Int32], bytes: inout [UInt8]) {
        if model.byteFallback {
            bytes.removeAll(keepingCapacity: true)
            appendUTF8(scalar, to: &bytes)
            if bytes.allSatisfy({ byteIDTable[Int($0)] >= 0 }) {
                for b in bytes { out.append(byteIDTable[Int(b)]) }
                return
            }
        }
        if let unk = model.unkID {
            // Without byte fallback consecutive unknowns fuse into one <unk> (fuse_unk).
            if !model.byteFallback, out.last == unk { return }
            out.append(unk)
        }
    }
}
