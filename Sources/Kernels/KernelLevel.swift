import CKernels

/// The instruction-set level the kernels run at. The levels a CPU supports form a chain from
/// `generic` (portable C, the twin every other level is tested against) to the best one, which is
/// active unless capped by the environment (`PALIGEMMA_ISA=avx2`) or by ``activate(_:)``.
/// Callers never need a level to choose an algorithm: ``FastBackend`` asks the kernels for
/// capabilities ("integer dot products available"); the level is for reports, benchmarks and tests.
public struct KernelLevel: Sendable, Hashable, CustomStringConvertible {
    /// Position in this CPU's chain (0 is generic).
    public let index: Int
    /// The level's name: generic, avx2, avx-vnni, avx512, neon, neon-dotprod or neon-i8mm.
    public let name: String

    public var description: String { name }

    /// The levels this CPU supports, lowest first.
    public static var available: [KernelLevel] {
        (0..<Int(ck_level_count())).map { KernelLevel(index: $0, name: String(cString: ck_level_name(Int32($0)))) }
    }

    /// The level kernels run at now.
    public static var active: KernelLevel {
        let i = Int(ck_level())
        return KernelLevel(index: i, name: String(cString: ck_level_name(Int32(i))))
    }

    /// The best level this CPU supports.
    public static var best: KernelLevel { available.last! }

    /// Every level name this build knows for this architecture (supported here or not).
    public static var knownNames: [String] { String(cString: ck_level_names()).split(separator: " ").map(String.init) }

    /// The supported level called `name` (case-insensitive).
    /// - Throws: ``KernelLevelError`` naming the levels this CPU has when `name` is unknown or unsupported.
    public static func named(_ name: String) throws -> KernelLevel {
        let i = Int(ck_level_index(name))
        guard i >= 0 else {
            throw KernelLevelError(requested: name, known: knownNames.contains(name.lowercased()),
                                   available: available.map(\.name))
        }
        return available[i]
    }

    /// Makes `level` the active one for every kernel call that starts afterwards, and returns the
    /// previous one. Switch while no kernel runs (at start-up, or between tests).
    @discardableResult
    public static func activate(_ level: KernelLevel) -> KernelLevel {
        let previous = Int(ck_set_level(Int32(level.index)))
        return available[previous]
    }

    /// The value of PALIGEMMA_ISA when it named no level this CPU supports (the best level runs instead).
    public static var ignoredRequest: KernelLevelError? {
        guard ck_level_request_failed() != 0, let raw = ck_level_request() else { return nil }
        let name = String(cString: raw)
        return KernelLevelError(requested: name, known: knownNames.contains(name.lowercased()),
                                available: available.map(\.name))
    }
}

/// A kernel level was asked for that this CPU does not support.
public struct KernelLevelError: Error, Sendable, CustomStringConvertible {
    public let requested: String
    /// Whether the name is a level this build knows (the CPU lacks its instructions).
    public let known: Bool
    public let available: [String]

    public var description: String {
        let what = known ? "this CPU lacks the instructions of kernel level '\(requested)'"
                         : "unknown kernel level '\(requested)'"
        return "\(what); levels on this CPU: \(available.joined(separator: ", "))"
    }
}
