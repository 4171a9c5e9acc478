// bench-augment: how fast the MoCo v3 data pipeline (SPEC A.7: both views of every sample) makes
// batches, next to what a training step consumes. The step must never wait on the data, so the
// pipeline's images/s on the workers the trainer gives it should be well above the step's.
//
//   swift run -c release bench-augment [--batches 20] [--workers 2]
//
// Prints one CSV line per case: images/s of the loader (both views, normalised, batch 256) with
// one worker and with --workers, on synthetic images of the sizes users have.
import Augment
import BenchSupport
import Datasets
import Dispatch
import Foundation
import Tensors

/// Seeded random images of one size, in memory (no decoding: that is the cache's job).
struct SyntheticImages: ImageDataset {
    let images: [Image]
    var count: Int { images.count }
    let classNames = ["x"]
    func label(at index: Int) -> Int? { 0 }
    func image(at index: Int) throws -> Image { images[index] }
    var summary: String { "\(count) synthetic images" }

    init(count: Int, width: Int, height: Int, channels: Int) {
        var generator = SplitMix64(seed: 3)
        images = (0..<count).map { _ in
            Image(width: width, height: height, channels: channels,
                  pixels: (0..<(width * height * channels)).map { _ in UInt8(truncatingIfNeeded: generator.next()) })
        }
    }
}

let batches = Int(Bench.option("--batches") ?? "") ?? 20
let workers = Int(Bench.option("--workers") ?? "") ?? ProcessInfo.processInfo.activeProcessorCount
let batchSize = 256
let cases: [(name: String, width: Int, height: Int, channels: Int, size: Int, cropMin: Double)] = [
    ("fashion-mnist 28x28 grey -> 28", 28, 28, 1, 28, 0.2),
    ("cifar 32x32 rgb -> 32", 32, 32, 3, 32, 0.08),
    ("folder 96x96 rgb -> 64", 96, 96, 3, 64, 0.08),
    ("imagenet-like 256x256 rgb -> 224", 256, 256, 3, 224, 0.08),
]
print("case,workers,batch,images_per_second,ms_per_batch")
for c in cases {
    let count = c.size >= 224 ? batchSize * 2 : batchSize * batches
    let dataset = SyntheticImages(count: count, width: c.width, height: c.height, channels: c.channels)
    let augmentation = MoCoAugmentation(imageSize: c.size, cropMin: c.cropMin)
    for threads in Array(Set([1, workers])).sorted() {
        let loader = TrainingBatches(dataset: dataset, augmentation: augmentation, batchSize: batchSize, seed: 0,
                                     epoch: 0, workers: threads)
        _ = try loader.next()                                       // warm-up: thread start, first batch
        let start = DispatchTime.now().uptimeNanoseconds
        var made = 0
        while try loader.next() != nil { made += 1 }
        let seconds = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
        guard made > 0 else { continue }
        print(String(format: "%@,%d,%d,%.1f,%.1f", c.name, threads, batchSize, Double(made * batchSize) / seconds,
                     1000 * seconds / Double(made)))
    }
}
