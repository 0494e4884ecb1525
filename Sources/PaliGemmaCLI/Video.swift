import ArgumentParser
import Foundation
import Imaging
import PaliGemma

struct Video: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run a task on frames sampled from a video: a timeline as text or JSON, and a contact sheet.",
        discussion: """
        Frames are taken every --every from --start to --end (or the video's end), at most --max-frames, and each gets the task's prompt; --together K gives K consecutive frames to one prompt instead. Frames are decoded by the ffmpeg and ffprobe programs (Debian: apt-get install ffmpeg; macOS: brew install ffmpeg), which only this verb needs; without them it stops with exit code 6.

        Times read as 2s, 500ms, 0.5 (seconds), 1m, 1:30 or 0:01:30.5.

        Examples:
          paligemma video clip.mp4 --every 2s --task caption
          paligemma video clip.mp4 --task "detect person ; car" --sheet sheet.png
          paligemma video clip.mp4 --task "ask what happens?" --together 4 --json
        """)

    @Argument(help: "A video file (MP4, MKV, MOV, WebM, … whatever ffmpeg reads).") var video: String
    @Option(help: ArgumentHelp("The task: \(PaliGemmaTask.specForms).", valueName: "task")) var task: String?
    @Option(name: .shortAndLong, help: "A raw prompt instead of --task, sent as is.") var prompt: String?
    @Option(help: "Language of caption, describe, answer and question tasks.") var lang = "en"
    @Option(help: "Time between sampled frames (at least 10ms).") var every = "1s"
    @Option(help: "Time of the first frame.") var start = "0"
    @Option(help: "Stop sampling at this time (default: the end of the video).") var end: String?
    @Option(name: .customLong("max-frames"), parsing: .unconditional, help: "Most frames to sample (1…\(VideoSampling.frameLimit)).")
    var maxFrames = 100
    @Option(parsing: .unconditional, help: "Frames per prompt (1…16): K consecutive frames in one multi-image prompt; boxes refer to the first.")
    var together = 1
    @Option(help: "Write a contact sheet (frames in a grid with their times, answers and boxes) to this PNG file.") var sheet: String?
    @Flag(help: "Print the whole timeline as one JSON object (the video, its size and length, and per entry the answer object with `time`).")
    var json = false
    @Option(name: .customLong("vae-oid"), help: "For segment tasks: big_vision's vae-oid.npz (default: the one in the model directory).")
    var vaeOID: String?
    @OptionGroup var model: ModelOptions
    @OptionGroup var generation: GenerationFlags

    func run() throws {
        try wrap {
            guard (task == nil) != (prompt == nil) else { throw ValidationError("give --task or --prompt (one of them)") }
            let text: String
            do { text = try prompt ?? PaliGemmaTask(spec: task ?? "", language: lang).prompt } catch let e as InputError {
                throw ValidationError("--task: \(e.description)")
            }
            func time(_ value: String, _ option: String) throws -> MediaTime {
                guard let t = MediaTime(parsing: value) else {
                    throw ValidationError("\(option) \(value): write a time as 2s, 500ms, 0.5, 1m or 1:30")
                }
                return t
            }
            let sampling = VideoSampling(every: try time(every, "--every"), start: try time(start, "--start"),
                                         end: try end.map { try time($0, "--end") }, maxFrames: maxFrames)
            do { try sampling.validate() } catch let e as InputError { throw ValidationError(e.description) }
            guard (1...16).contains(together) else { throw ValidationError("--together must be in 1…16, got \(together)") }

            // The video and the programs are checked before the model is loaded, so that a
            // missing ffmpeg or a wrong path is reported at once.
            _ = try VideoFrameReader(url: URL(fileURLWithPath: video), imageLoader: try model.imageLoader())
            let verbose = isatty(2) != 0
            if verbose { status("loading model…") }
            let pipeline = try model.pipeline()
            let segmenter = TaskKind(prompt: text) == .segment
                ? try Segmenter.locate(explicit: vaeOID.map { URL(fileURLWithPath: $0) }, modelDirectory: try model.resolveDirectory())
                : nil
            var contactSheet: ContactSheet?
            var done = 0
            let timeline = try pipeline.timeline(of: URL(fileURLWithPath: video), prompt: text, sampling: sampling, together: together,
                                                 options: generation.options, segmenter: segmenter) { entry, frames, planned in
                if sheet != nil {
                    if contactSheet == nil {
                        contactSheet = try ContactSheet(frameWidth: frames[0].width, frameHeight: frames[0].height,
                                                        framesPerEntry: together, entries: planned, name: video)
                    }
                    contactSheet?.add(entry, frames: frames)
                }
                done += 1
                if verbose { status("\(video): \(done) of \(planned) at \(entry.time)") }
                if !json { printEntry(entry) }
            }
            if json { print(String(decoding: try TaskResult.jsonEncoder().encode(timeline), as: UTF8.self)) }
            if let sheet, let contactSheet {
                try PNGEncoder.write(contactSheet.render(), to: URL(fileURLWithPath: sheet))
                status("wrote \(sheet)")
            }
        }
    }

    /// One line per entry (`0:02.000  a red circle`), or per box for detect and segment prompts.
    func printEntry(_ entry: TimelineEntry) {
        var when = entry.time.description
        if let times = entry.times, times.count > 1, let last = times.last { when += "-\(last)" }
        if let objects = entry.result.objects {
            if objects.isEmpty { print("\(when)  (nothing found) \(entry.result.text)") }
            for o in objects {
                print(String(format: "%@  %@  x0=%.0f y0=%.0f x1=%.0f y1=%.0f", when as NSString, o.label as NSString, o.x0, o.y0, o.x1, o.y1))
            }
        } else {
            print("\(when)  \(entry.result.text)")
        }
        flushStandardOutput()
    }
}
