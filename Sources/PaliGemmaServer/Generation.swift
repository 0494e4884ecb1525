import Dispatch
import Foundation
import Imaging
import PaliGemma

/// One generated token as streamed: its id (nil for a final piece that only closes an open UTF-8
/// byte sequence) and the text it completed (may be empty).
struct TokenEvent: Encodable {
    let id: Int?
    let text: String
    /// Not sent on /v1/generate's stream (its `done` event carries them all).
    var logProb: Float? = nil

    enum CodingKeys: String, CodingKey { case id, text }

    func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(id, forKey: .id)  // null, not absent, for the closing piece
        try c.encode(text, forKey: .text)
    }
}

func monotonicSeconds() -> Double { Double(DispatchTime.now().uptimeNanoseconds) / 1e9 }

/// Encodes the images (several go into one prompt, in order), generates and parses the answer by
/// task, calling `onToken` per token. Blocking: call it on the inference queue while holding the
/// gate. Stops when `cancel` is set. An image seen again (a follow-up question, a second task on
/// one picture) reuses its encoding.
func runGeneration(pipeline: PaliGemmaPipeline, images: [RGBImage], prompt: String, options: GenerationOptions,
                   segmenter: Segmenter?, cache: EncodedImageCache? = nil, cancel: CancellationFlag?,
                   onToken: ((TokenEvent) -> Void)?) throws -> TaskResult {
    let parts = try images.map { try cache?.encoded($0, by: pipeline) ?? pipeline.encode(image: $0) }
    let encoded = EncodedImage(concatenating: parts)
    return try pipeline.perform(prompt, on: encoded, options: options, segmenter: segmenter) { token in
        onToken?(TokenEvent(id: token.id, text: token.text, logProb: token.logProb))
        return !(cancel?.isCancelled ?? false)
    }
}

/// The last few encoded images, keyed by their size and a hash of their pixels (Swift's
/// per-process seeded hash, so a collision cannot be crafted from outside).
final class EncodedImageCache: @unchecked Sendable {
    // `entries` is only touched under `lock`.
    private let lock = NSLock()
    private var entries: [(key: Key, value: EncodedImage)] = []
    let capacity: Int

    struct Key: Equatable { let width: Int, height: Int, hash: Int }

    init(capacity: Int) { self.capacity = max(0, capacity) }

    /// The image's encoding, from the cache (its `seconds` then 0) or computed and kept.
    func encoded(_ image: RGBImage, by pipeline: PaliGemmaPipeline) throws -> EncodedImage {
        guard capacity > 0 else { return try pipeline.encode(image: image) }
        var hasher = Hasher()
        image.pixels.withUnsafeBytes { hasher.combine(bytes: $0) }
        let key = Key(width: image.width, height: image.height, hash: hasher.finalize())
        lock.lock()
        if let i = entries.firstIndex(where: { $0.key == key }) {
            let hit = entries.remove(at: i)
            entries.append(hit)
            lock.unlock()
            return hit.value.reused
        }
        lock.unlock()
        let value = try pipeline.encode(image: image)
        lock.lock()
        entries.append((key, value))
        if entries.count > capacity { entries.removeFirst(entries.count - capacity) }
        lock.unlock()
        return value
    }
}
