import Foundation
import Imaging

/// What ffprobe says about a video's first video stream.
public struct VideoInfo: Codable, Sendable, Equatable {
    /// Frame size as stored (before any rotation the container asks for).
    public var width: Int
    public var height: Int
    /// Length, when the container states one.
    public var duration: MediaTime?
    /// Frames per second (the stream's average), when known.
    public var frameRate: Double?
    /// The codec's short name (`h264`, `ffv1`, …).
    public var codec: String?

    enum CodingKeys: String, CodingKey { case width, height, duration, frameRate = "frame_rate", codec }
}

/// Which frames to take from a video: one every `every`, from `start` to `end` (or the end of
/// the video), at most `maxFrames` of them.
public struct VideoSampling: Sendable, Equatable {
    /// Time between samples; at least `minimumInterval`.
    public var every: MediaTime
    public var start: MediaTime
    /// Where sampling stops (exclusive); nil: the end of the video.
    public var end: MediaTime?
    /// Most frames taken, 1…`frameLimit`.
    public var maxFrames: Int

    /// Shorter intervals than this would sample the same frame over and over.
    public static let minimumInterval = MediaTime(milliseconds: 10)
    /// The most frames one run may ask for.
    public static let frameLimit = 10_000

    public init(every: MediaTime = MediaTime(milliseconds: 1000), start: MediaTime = MediaTime(milliseconds: 0),
                end: MediaTime? = nil, maxFrames: Int = 100) {
        self.every = every
        self.start = start
        self.end = end
        self.maxFrames = maxFrames
    }

    /// `InputError.option` naming the first value out of bounds.
    public func validate() throws {
        guard every >= Self.minimumInterval else {
            throw InputError.option("the sampling interval must be at least \(Self.minimumInterval.milliseconds) ms, got \(every.milliseconds) ms")
        }
        guard (1...Self.frameLimit).contains(maxFrames) else {
            throw InputError.option("the most frames must be in 1…\(Self.frameLimit), got \(maxFrames)")
        }
        if let end, end <= start {
            throw InputError.option("the end (\(end)) must come after the start (\(start))")
        }
    }

    /// The sample times for a video of `duration` (nil: unknown, then up to `maxFrames`).
    public func times(duration: MediaTime?) -> [MediaTime] {
        let stop = [end, duration].compactMap { $0 }.min()
        var out: [MediaTime] = []
        var t = start
        while out.count < maxFrames, stop.map({ t < $0 }) ?? true {
            out.append(t)
            t.milliseconds += every.milliseconds
        }
        return out
    }
}

/// Frames of one video file, decoded by the `ffmpeg` program (Debian package `ffmpeg`) and read
/// back as PNG through a pipe: nothing is written to disk and no libav library is linked, so the
/// rest of the package builds and runs without ffmpeg.
public struct VideoFrameReader: Sendable {
    public let url: URL
    public let info: VideoInfo
    /// Decodes the frames ffmpeg sends; its `maxPixels` bounds a frame.
    public let imageLoader: ImageLoader

    /// Probes `url` with ffprobe. Throws `MediaError` for a missing program, a missing file, a
    /// file without a video stream, or a frame size over `imageLoader.maxPixels`.
    public init(url: URL, imageLoader: ImageLoader = ImageLoader()) throws {
        try requireReadableFile(url)
        let ffprobe = ExternalProgram.ffprobe
        _ = try ExternalProgram.ffmpeg.locate()
        let run = try ffprobe.run(["-v", "error", "-select_streams", "V", "-show_entries",
                                   "stream=codec_name,width,height,duration,avg_frame_rate:format=duration",
                                   "-of", "json", url.path], file: url.relativePath, stdoutLimit: 1 << 20)
        guard run.status == 0 else { throw MediaError.notAVideo(file: url.relativePath, detail: run.lastErrorLine) }
        self.url = url
        self.imageLoader = imageLoader
        info = try Self.parseProbe(run.stdout, file: url.relativePath)
        guard info.width * info.height <= imageLoader.maxPixels else {
            throw MediaError.tooLarge(file: url.relativePath, what: "frame", width: info.width, height: info.height, limit: imageLoader.maxPixels)
        }
    }

    /// The first video stream of ffprobe's JSON (`-select_streams V` leaves out cover pictures).
    static func parseProbe(_ data: Data, file: String) throws -> VideoInfo {
        struct Probe: Decodable {
            struct Stream: Decodable {
                var codec_name: String?, width: Int?, height: Int?, duration: String?, avg_frame_rate: String?
            }
            struct Format: Decodable { var duration: String? }
            var streams: [Stream]?
            var format: Format?
        }
        guard let probe = try? JSONDecoder().decode(Probe.self, from: data) else {
            throw MediaError.programFailed(program: "ffprobe", file: file, detail: "its report is not the JSON expected")
        }
        guard let stream = probe.streams?.first else {
            throw MediaError.notAVideo(file: file, detail: "it has no video stream")
        }
        guard let width = stream.width, let height = stream.height, width > 0, height > 0 else {
            throw MediaError.notAVideo(file: file, detail: "its video stream has no frame size")
        }
        let seconds = [stream.duration, probe.format?.duration].compactMap { $0.flatMap(Double.init) }
            .first { $0.isFinite && $0 > 0 }
        var rate: Double?
        if let parts = stream.avg_frame_rate?.split(separator: "/"), parts.count == 2,
           let n = Double(parts[0]), let d = Double(parts[1]), d > 0, n > 0 {
            rate = n / d
        }
        return VideoInfo(width: width, height: height, duration: seconds.map { MediaTime(seconds: $0) },
                         frameRate: rate, codec: stream.codec_name)
    }

    /// The frame shown at `time` (the first one at or after it), or nil past the last frame.
    public func frame(at time: MediaTime) throws -> RGBImage? {
        // -ss before -i seeks and then decodes up to the exact time; the frame comes out as an
        // RGB PNG, whose header the image loader checks against its pixel limit before decoding.
        let run = try ExternalProgram.ffmpeg.run(
            ["-nostdin", "-v", "error", "-ss", time.ffmpegArgument, "-i", url.path, "-map", "0:V:0", "-frames:v", "1",
             "-an", "-sn", "-f", "image2pipe", "-c:v", "png", "-pix_fmt", "rgb24", "-"],
            file: url.relativePath, stdoutLimit: min(ImageLoader.maxStreamBytes, info.width * info.height * 4 + (1 << 20)))
        guard run.status == 0 else {
            throw MediaError.programFailed(program: "ffmpeg", file: url.relativePath, detail: "at \(time): \(run.lastErrorLine)")
        }
        guard !run.stdout.isEmpty else { return nil }
        return try imageLoader.decode(run.stdout, name: "\(url.relativePath) at \(time)")
    }
}
