import ArgumentParser
import Foundation

/// One of N deterministic parts of a batch: a request belongs to shard `index` when the FNV-1a
/// hash of its id, modulo `count`, is `index`, so every machine splits a manifest the same way.
struct Shard: Equatable, CustomStringConvertible {
    let index: Int
    let count: Int

    var description: String { "\(index)/\(count)" }

    /// "I/N" with 0 ≤ I < N ≤ 100000.
    init(parsing text: String) throws {
        let parts = text.split(separator: "/")
        guard parts.count == 2, let i = Int(parts[0]), let n = Int(parts[1]), (1...100_000).contains(n), (0..<n).contains(i) else {
            throw ValidationError("--shard must be I/N with 0 ≤ I < N (e.g. 0/4 … 3/4), got '\(text)'")
        }
        (index, count) = (i, n)
    }

    init(index: Int, count: Int) { (self.index, self.count) = (index, count) }

    /// The shard a scheduler assigned this process: a Kubernetes Indexed Job
    /// (JOB_COMPLETION_INDEX of JOB_COMPLETIONS) or a Slurm job array (SLURM_ARRAY_TASK_ID minus
    /// SLURM_ARRAY_TASK_MIN, of SLURM_ARRAY_TASK_COUNT), with where it came from.
    static func fromEnvironment(_ env: [String: String] = ProcessInfo.processInfo.environment) -> (Shard, String)? {
        if let i = env["JOB_COMPLETION_INDEX"].flatMap(Int.init), let n = env["JOB_COMPLETIONS"].flatMap(Int.init),
           n > 0, (0..<n).contains(i) {
            return (Shard(index: i, count: n), "JOB_COMPLETION_INDEX/JOB_COMPLETIONS")
        }
        if let id = env["SLURM_ARRAY_TASK_ID"].flatMap(Int.init), let n = env["SLURM_ARRAY_TASK_COUNT"].flatMap(Int.init), n > 0 {
            let i = id - (env["SLURM_ARRAY_TASK_MIN"].flatMap(Int.init) ?? 0)
            if (0..<n).contains(i) { return (Shard(index: i, count: n), "SLURM_ARRAY_TASK_ID/SLURM_ARRAY_TASK_COUNT") }
        }
        return nil
    }

    /// FNV-1a (64-bit) of the id's UTF-8 bytes: the same on every machine and in every run.
    static func hash(_ id: String) -> UInt64 {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in id.utf8 { h = (h ^ UInt64(byte)) &* 0x0000_0100_0000_01b3 }
        return h
    }

    func contains(id: String) -> Bool { Int(Self.hash(id) % UInt64(count)) == index }
}

struct Results: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Work with batch results files.",
        subcommands: [Merge.self])

    struct Merge: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Merge the results files of a sharded batch into one, one answer per request.",
            discussion: """
            Reads every results file (lines cut off by a crash are skipped), keeps one answer per id (an answer over an error line), and writes them in the manifest's order to --output or standard output. Ids of the manifest with no answer are listed as missing, ids with only an error as failed; the exit code is 1 when any are missing or failed, so the shards that hold them can be rerun (their files resume) and merged again.

            Example: paligemma results merge out-*.jsonl --input manifest.jsonl --output answers.jsonl
            """)

        @Argument(help: "Results files (the shards' --results).") var files: [String]
        @Option(help: "The manifest the shards ran (its ids and order).") var input: String
        @Option(name: .shortAndLong, help: "Write the merged answers here (default: standard output).") var output: String?

        func run() throws {
            guard !files.isEmpty else { throw ValidationError("give the results files to merge") }
            let manifest = try manifestIDs(input)
            var answers: [String: Data] = [:], failures: [String: Data] = [:]
            for file in files {
                let data: Data
                do { data = try Data(contentsOf: URL(fileURLWithPath: file)) } catch {
                    throw ValidationError("cannot read \(file): \(error.localizedDescription)")
                }
                for line in splitLines(data).lines {
                    guard let object = (try? JSONSerialization.jsonObject(with: line)) as? [String: Any],
                          let id = object["id"] as? String else { continue }
                    if object["error"] != nil {
                        if failures[id] == nil { failures[id] = line }
                    } else if answers[id] == nil {
                        answers[id] = line
                    }
                }
            }
            var merged = Data(), missing: [String] = [], failed: [String] = []
            for id in manifest {
                if let line = answers[id] ?? failures[id] { merged += line + Data("\n".utf8) }
                if answers[id] == nil { if failures[id] != nil { failed.append(id) } else { missing.append(id) } }
            }
            if let output {
                try merged.write(to: URL(fileURLWithPath: output), options: .atomic)
            } else {
                FileHandle.standardOutput.write(merged)
            }
            status("merged \(manifest.count - missing.count - failed.count) of \(manifest.count) answers from \(files.count) file\(files.count == 1 ? "" : "s")")
            func list(_ ids: [String]) -> String { ids.prefix(20).joined(separator: ", ") + (ids.count > 20 ? ", …" : "") }
            if !missing.isEmpty { status("missing \(missing.count): \(list(missing))") }
            if !failed.isEmpty { status("failed \(failed.count): \(list(failed))") }
            if !missing.isEmpty || !failed.isEmpty { throw ExitCode(1) }
        }

        /// The manifest's ids in order, as batch mode names them (`id`, else `lineN`).
        func manifestIDs(_ path: String) throws -> [String] {
            let data: Data
            do { data = try Data(contentsOf: URL(fileURLWithPath: path)) } catch {
                throw ValidationError("cannot read --input \(path): \(error.localizedDescription)")
            }
            var ids: [String] = [], seen = Set<String>()
            for (n, raw) in splitLines(data).lines.enumerated() {
                guard let text = String(validating: raw, as: UTF8.self), !text.trimmingCharacters(in: .whitespaces).isEmpty else {
                    if !raw.isEmpty { ids.append("line\(n + 1)") }
                    continue
                }
                let object = (try? JSONSerialization.jsonObject(with: Data(text.utf8))) as? [String: Any]
                let id = object?["id"] as? String ?? "line\(n + 1)"
                if seen.insert(id).inserted { ids.append(id) }
            }
            return ids
        }
    }
}
