import Datasets
import Foundation
import Tensors
@testable import Train

/// A labeled in-memory dataset of seeded random 8×8 images in 4 classes (class c brightens
/// quadrant c, so features can separate them); `failing` indices throw like a corrupt file.
struct TinyDataset: ImageDataset {
    let images: [Image]
    let labels: [Int]
    let failing: Set<Int>
    let classNames = ["a", "b", "c", "d"]

    init(count: Int, seed: UInt64, failing: Set<Int> = []) {
        var generator = SplitMix64(seed: seed)
        var images: [Image] = [], labels: [Int] = []
        for index in 0..<count {
            let label = index % 4
            var pixels = (0..<64).map { _ in UInt8.random(in: 0...120, using: &generator) }
            let (top, left) = (4 * (label / 2), 4 * (label % 2))
            for y in 0..<4 {
                for x in 0..<4 {
                    let pixel = (y + top) * 8 + x + left
                    pixels[pixel] = pixels[pixel] &+ 120
                }
            }
            images.append(Image(width: 8, height: 8, channels: 1, pixels: pixels))
            labels.append(label)
        }
        self.images = images
        self.labels = labels
        self.failing = failing
    }

    var count: Int { images.count }
    func label(at index: Int) -> Int? { labels[index] }
    func image(at index: Int) throws -> Image {
        if failing.contains(index) { throw DatasetError("/tiny/\(index).png: not a PNG file (corrupt test sample)") }
        return images[index]
    }
    var summary: String { "tiny: \(count) images" }
}

enum TinyRun {
    /// A 1-block ViT on 8×8 images, batch 8, 2 epochs of 4 iterations.
    static var configuration: PretrainConfiguration {
        var c = PretrainConfiguration()
        c.imageSize = 8
        c.patchSize = 4
        c.embedDim = 16
        c.depth = 1
        c.heads = 2
        c.mocoDim = 8
        c.mocoMLPDim = 16
        c.batchSize = 8
        c.epochs = 2
        c.warmupEpochs = 1
        c.lr = 0.05
        c.mocoMCos = true
        c.cropMin = 0.3
        c.knnBank = 16
        c.knnK = 5
        c.seed = 7
        return c
    }

    static func data(failing: Set<Int> = []) -> DatasetSplits {
        DatasetSplits(train: TinyDataset(count: 32, seed: 1, failing: failing), test: TinyDataset(count: 12, seed: 2),
                      name: "tiny")
    }

    static func folder(_ name: String) throws -> URL {
        let url = FileManager.default.temporaryDirectory
            .appendingPathComponent("mocov3-train-tests-\(getpid())-\(name)-\(UInt32.random(in: 0 ... .max))")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        return url
    }
}

/// Collects the trainer's events for inspection.
final class EventLog: @unchecked Sendable {
    private let lock = NSLock()
    private var events: [TrainingEvent] = []

    func append(_ event: TrainingEvent) {
        lock.lock()
        events.append(event)
        lock.unlock()
    }

    var messages: [String] {
        lock.lock()
        defer { lock.unlock() }
        return events.compactMap { if case .message(let text) = $0 { return text } else { return nil } }
    }

    /// Messages about this rank's own work.
    var rankMessages: [String] {
        lock.lock()
        defer { lock.unlock() }
        return events.compactMap { if case .rankMessage(let text) = $0 { return text } else { return nil } }
    }

    var iterations: [IterationMetrics] {
        lock.lock()
        defer { lock.unlock() }
        return events.compactMap { if case .iteration(let m) = $0 { return m } else { return nil } }
    }
}
