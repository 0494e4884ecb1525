import Foundation
import Imaging

/// One answer on a video's timeline: the prompt's result on the frame at `time`, or on several
/// frames given together in one prompt.
///
/// Encoded as the `TaskResult` object (`text`, `objects`, …; `width`/`height` are the frame's)
/// with `time` added, in seconds, and `times` when several frames went into the prompt.
public struct TimelineEntry: Codable, Sendable {
    /// The (first) frame's time.
    public var time: MediaTime
    /// Every frame's time, when the prompt held more than one; boxes refer to the first.
    public var times: [MediaTime]?
    public var result: TaskResult

    public init(time: MediaTime, times: [MediaTime]?, result: TaskResult) {
        self.time = time
        self.times = times
        self.result = result
    }

    enum CodingKeys: String, CodingKey { case time, times }

    public func encode(to encoder: Encoder) throws {
        try result.encode(to: encoder)
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(time, forKey: .time)
        try c.encodeIfPresent(times, forKey: .times)
    }

    public init(from decoder: Decoder) throws {
        result = try TaskResult(from: decoder)
        let c = try decoder.container(keyedBy: CodingKeys.self)
        time = try c.decode(MediaTime.self, forKey: .time)
        times = try c.decodeIfPresent([MediaTime].self, forKey: .times)
    }

    /// The answer in a few words: the labels found for detect and segment prompts, else the text.
    public var summary: String {
        guard let objects = result.objects else { return result.text }
        return objects.isEmpty ? "(nothing found)" : objects.map(\.label).joined(separator: ", ")
    }
}

/// A prompt's answers along a video, in time order: what `PaliGemmaPipeline.timeline(of:…)`
/// returns and `paligemma video --json` prints.
public struct VideoTimeline: Codable, Sendable {
    /// The video's path as given.
    public var video: String
    public var info: VideoInfo
    public var prompt: String
    /// Time between sampled frames.
    public var every: MediaTime
    /// Frames per prompt (1 unless frames were given together).
    public var together: Int
    public var entries: [TimelineEntry]

    enum CodingKeys: String, CodingKey { case video, info, prompt, every, together, entries = "frames" }
}

extension PaliGemmaPipeline {
    /// Runs `prompt` on frames sampled from `video`, in time order.
    ///
    /// With `together` above 1, that many consecutive frames go into one prompt (a multi-image
    /// prompt, as `encode(images:)` builds it) and each entry answers for the group. `onEntry`
    /// gets each entry as it is made, with its frames (for drawing, or to report progress), and
    /// the number of entries planned; the frames are not kept.
    ///
    /// ```swift
    /// let timeline = try pipeline.timeline(of: URL(fileURLWithPath: "clip.mp4"), prompt: "caption en",
    ///                                      sampling: VideoSampling(every: MediaTime(seconds: 2)))
    /// for entry in timeline.entries { print(entry.time, entry.result.text) }
    /// ```
    public func timeline(of video: URL, prompt: String, sampling: VideoSampling = VideoSampling(), together: Int = 1,
                         options: GenerationOptions = GenerationOptions(), segmenter: Segmenter? = nil,
                         onEntry: ((_ entry: TimelineEntry, _ frames: [RGBImage], _ planned: Int) throws -> Void)? = nil) throws -> VideoTimeline {
        try sampling.validate()
        guard (1...16).contains(together) else {
            throw InputError.option("frames per prompt must be in 1…16, got \(together)")
        }
        let reader = try VideoFrameReader(url: video, imageLoader: imageLoader)
        let times = sampling.times(duration: reader.info.duration)
        let planned = (times.count + together - 1) / together
        var timeline = VideoTimeline(video: video.relativePath, info: reader.info, prompt: prompt, every: sampling.every,
                                     together: together, entries: [])
        var index = 0
        sampling: while index < times.count {
            var frames: [RGBImage] = [], frameTimes: [MediaTime] = []
            for t in times[index..<min(times.count, index + together)] {
                // A container may state a longer duration than its frames last: the first
                // sample past the last frame ends the timeline.
                guard let frame = try reader.frame(at: t) else { break }
                frames.append(frame)
                frameTimes.append(t)
            }
            index += together
            guard !frames.isEmpty else { break sampling }
            let encoded = frames.count == 1 ? try encode(image: frames[0]) : try encode(images: frames)
            let result = try perform(prompt, on: encoded, options: options, segmenter: segmenter,
                                     name: "\(video.relativePath) at \(frameTimes[0])")
            let entry = TimelineEntry(time: frameTimes[0], times: together > 1 ? frameTimes : nil, result: result)
            timeline.entries.append(entry)
            try onEntry?(entry, frames, planned)
            if frames.count < together { break }
        }
        guard !timeline.entries.isEmpty else {
            throw MediaError.noFrames(file: video.relativePath, detail: times.isEmpty
                ? "the sampling range is empty (video length \(reader.info.duration.map(\.description) ?? "unknown"))"
                : "nothing at \(times[0])")
        }
        return timeline
    }
}
