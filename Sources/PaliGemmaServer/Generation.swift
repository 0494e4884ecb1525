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
func runGeneration(pipeline: PaliGemmaPipeline, images: DecodedImages, prompt: String, options: GenerationOptions,
                   segmenter: Segmenter?, cache: EncodedImageCache? = nil, cancel: CancellationFlag?,
                   onToken: ((TokenEvent) -> Void)?) throws -> TaskResult {
    let encoded = try images.encode { image in try cache?.encoded(image, by: pipeline) ?? pipeline.encode(image: image) }
    return try pipeline.perform(prompt, on: encoded, options: options, segmenter: segmenter) { token in
        onToken?(TokenEvent(id: token.id, text: token.text, logProb: token.logProb))
        return !(cancel?.isCancelled ?? false)
    }
}

/// A request's decoded images and the decode slot they hold: once encoded they are dropped and
/// the slot given back, so the bound on decoded images in memory holds while generations run.
// @unchecked Sendable: `images` is only touched under `lock`.
final class DecodedImages: @unchecked Sendable {
    private let lock = NSLock()
    private var images: [RGBImage]
    private let lease: DecodeSlots.Lease

    init(_ images: [RGBImage], lease: DecodeSlots.Lease) {
        self.images = images
        self.lease = lease
    }

    /// Encodes every image (in order, into one prompt's rows), then drops them and the slot.
    func encode(_ one: (RGBImage) throws -> EncodedImage) throws -> EncodedImage {
        lock.lock()
        let taken = images
        images = []
        lock.unlock()
        defer { lease.release() }
        return EncodedImage(concatenating: try taken.map(one))
    }

    /// Gives the slot back (also when the request ends before encoding).
    func release() {
        lock.lock()
        images = []
        lock.unlock()
        lease.release()
    }
}

/// The last few encoded images, keyed by their size and a hash of their pixels (Swift's
/// per-process seeded hash, so a collision cannot be crafted from outside).
final class EncodedImageCache: @unchecked Sendable {
    // `entries` is only touched under `lock`.
    private let lock = NSLock()
    /// Held while an image is encoded, so that a second request for it waits and reuses it.
    private let encoding = NSLock()
    private var entries: [(key: Key, value: EncodedImage)] = []
    let capacity: Int

    struct Key: Equatable { let width: Int, height: Int, hash: Int }

    init(capacity: Int) { self.capacity = max(0, capacity) }

    /// The image's encoding, from the cache (its `seconds` then 0) or computed and kept. Requests
    /// for the same picture arriving together encode it once: the others wait for that encoding
    /// (encodings take the model in turn anyway) and share it, and with it their prefill.
    func encoded(_ image: RGBImage, by pipeline: PaliGemmaPipeline) throws -> EncodedImage {
        guard capacity > 0 else { return try pipeline.encode(image: image) }
        var hasher = Hasher()
        image.pixels.withUnsafeBytes { hasher.combine(bytes: $0) }
        let key = Key(width: image.width, height: image.height, hash: hasher.finalize())
        if let hit = lookup(key) { return hit.reused }
        encoding.lock()
        defer { encoding.unlock() }
        if let hit = lookup(key) { return hit.reused }
        let value = try pipeline.encode(image: image)
        lock.lock()
        entries.append((key, value))
        if entries.count > capacity { entries.removeFirst(entries.count - capacity) }
        lock.unlock()
        return value
    }

    /// The cached encoding for `key`, made the most recent.
    private func lookup(_ key: Key) -> EncodedImage? {
        lock.lock()
        defer { lock.unlock() }
        guard let i = entries.firstIndex(where: { $0.key == key }) else { return nil }
        let hit = entries.remove(at: i)
        entries.append(hit)
        return hit.value
    }
}
