import Datasets
import Foundation
import Tensors

/// One training batch: every view of B samples, (B, 3, S, S) each (MoCo v3's two views, or the
/// linear probe's and fine-tuning's one).
public struct TrainingBatch: Sendable {
    /// One array of B·3·S·S floats per view of the augmentation.
    public var views: [[Float]]
    /// View 1 (pipeline 1).
    public var x1: [Float] { views[0] }
    /// View 2 (pipeline 2); MoCo v3 batches only.
    public var x2: [Float] { views[1] }
    /// The class of each sample, −1 when the dataset is unlabeled.
    public var labels: [Int32]
    /// The dataset index each slot was read from (a replacement's index when a read failed).
    public var indices: [Int]
    /// Position of the batch in the epoch, 0..<batchesPerEpoch.
    public var batchIndex: Int
}

/// The training loader: one epoch of batches in a seeded random order, made on a background
/// thread up to `prefetch` batches ahead, each batch's samples spread over `workers` threads.
///
/// Order: a Fisher–Yates permutation drawn from (seed, epoch); batch b holds permutation
/// positions b·B ..< (b + 1)·B. With `dropLast` (pre-training, `drop_last=True`) the last
/// `count mod B` samples are dropped; without it (the linear probe's loader) they form a last,
/// shorter batch.
/// Every augmentation draw comes from (seed, epoch, index, view), so the batches are
/// bit-identical for any `workers`, and starting at `startBatch` k gives the same batches as
/// iterating to k.
///
/// A sample whose `image(at:)` throws is replaced by the next permutation position that loads
/// (wrapping around), augmented with the failing slot's seed so it does not repeat the
/// replacement's own views; the batch stays full. `skippedSamples` and `errorDescriptions`
/// (each failing sample once) say what happened, for the trainer's log.
public final class TrainingBatches: @unchecked Sendable {
    public let batchSize: Int
    public let batchesPerEpoch: Int
    public let epoch: Int
    /// The epoch's order of dataset indices.
    public let permutation: [Int]
    private let producer: BatchProducer<TrainingBatch>
    private let skips = SkipLog()

    /// - Parameters:
    ///   - rows: the slice of every batch to make (a data-parallel rank's share of the global
    ///     batch); the whole batch when nil. The samples and their augmentations are those of the
    ///     same rows of the whole batch.
    public init(dataset: any ImageDataset, augmentation: any SampleAugmentation, batchSize: Int, seed: UInt64,
                epoch: Int, startBatch: Int = 0, rows: Range<Int>? = nil, dropLast: Bool = true, workers: Int,
                prefetch: Int = 2) {
        precondition(batchSize > 0, "batchSize must be positive")
        precondition(workers > 0, "workers must be positive")
        let count = dataset.count
        var shuffle = AugmentationSeed.shuffleGenerator(seed: seed, epoch: epoch)
        let permutation = shuffle.permutation(count)
        let batchesPerEpoch = dropLast ? count / batchSize : (count + batchSize - 1) / batchSize
        precondition(startBatch >= 0, "startBatch must not be negative")
        self.batchSize = batchSize
        self.batchesPerEpoch = batchesPerEpoch
        self.epoch = epoch
        self.permutation = permutation
        let skips = self.skips
        precondition(rows.map { !$0.isEmpty && $0.lowerBound >= 0 && $0.upperBound <= batchSize && dropLast } ?? true,
                     "rows must be a non-empty slice of a full batch")
        producer = BatchProducer(range: min(startBatch, batchesPerEpoch)..<batchesPerEpoch, prefetch: prefetch) { b in
            let full = min(batchSize, count - b * batchSize)
            let slice = rows ?? 0..<full
            return try Self.makeBatch(b, dataset: dataset, augmentation: augmentation, permutation: permutation,
                                      batchSize: slice.count, firstPosition: b * batchSize + slice.lowerBound,
                                      seed: seed, epoch: epoch, workers: workers, skips: skips)
        }
    }

    deinit { producer.cancel() }

    /// The next batch, nil at the end of the epoch or after `cancel()`. Throws only when no
    /// sample of the dataset can be read at all.
    public func next() throws -> TrainingBatch? { try producer.next() }

    /// Stops the background work; waits at most for the batch being made.
    public func cancel() { producer.cancel() }

    /// Slots filled by a replacement so far (including batches prepared but not yet taken).
    public var skippedSamples: Int { skips.skippedSamples }

    /// Why samples were skipped, one description per failing sample.
    public var errorDescriptions: [String] { skips.errorDescriptions }

    var isProducerStopped: Bool { producer.isStopped }

    private static func makeBatch(_ b: Int, dataset: any ImageDataset, augmentation: any SampleAugmentation,
                                  permutation: [Int], batchSize: Int, firstPosition: Int, seed: UInt64, epoch: Int,
                                  workers: Int, skips: SkipLog) throws -> TrainingBatch {
        let viewCount = augmentation.outputCount
        // One array per view, written in place (no copy at the end); the augmentations have one
        // view (the classifiers) or two (MoCo v3).
        precondition((1...2).contains(augmentation.viewCount), "TrainingBatches supports augmentations of 1 or 2 views")
        var first = [Float](repeating: 0, count: batchSize * viewCount)
        var second = [Float](repeating: 0, count: augmentation.viewCount == 2 ? batchSize * viewCount : 0)
        var labels = [Int32](repeating: -1, count: batchSize)
        var indices = [Int](repeating: -1, count: batchSize)
        var failures = [[(index: Int, message: String)]](repeating: [], count: batchSize)
        var fatal = [(any Error)?](repeating: nil, count: batchSize)
        first.withUnsafeMutableBufferPointer { first in second.withUnsafeMutableBufferPointer { second in
            let outputs = augmentation.viewCount == 2 ? [first, second] : [first]
            labels.withUnsafeMutableBufferPointer { labels in
                indices.withUnsafeMutableBufferPointer { indices in
                    failures.withUnsafeMutableBufferPointer { failures in
                        fatal.withUnsafeMutableBufferPointer { fatal in
                            forEachSlot(batchSize, workers: workers) { slot in
                                let position = firstPosition + slot
                                do {
                                    let (image, index, errors) = try loadReplacing(position: position, dataset: dataset,
                                                                                   permutation: permutation)
                                    failures[slot] = errors
                                    indices[slot] = index
                                    labels[slot] = Int32(dataset.label(at: index) ?? -1)
                                    let range = (slot * viewCount)..<((slot + 1) * viewCount)
                                    augmentation.augment(image, seed: seed, epoch: epoch, index: permutation[position],
                                                         into: outputs.map { UnsafeMutableBufferPointer(rebasing: $0[range]) })
                                } catch {
                                    fatal[slot] = error
                                }
                            }
                        }
                    }
                }
            }
        } }
        if let error = fatal.lazy.compactMap({ $0 }).first { throw error }
        for errors in failures where !errors.isEmpty { skips.record(replaced: 1, errors: errors) }
        return TrainingBatch(views: augmentation.viewCount == 2 ? [first, second] : [first], labels: labels, indices: indices,
                             batchIndex: b)
    }

    /// Reads the sample at `position` of the permutation, or the first one after it that loads.
    private static func loadReplacing(position: Int, dataset: any ImageDataset, permutation: [Int])
        throws -> (Image, Int, [(index: Int, message: String)]) {
        var errors: [(index: Int, message: String)] = []
        for step in 0..<permutation.count {
            let index = permutation[(position + step) % permutation.count]
            do {
                return (try dataset.image(at: index), index, errors)
            } catch {
                errors.append((index, "sample \(index): \(error)"))
            }
        }
        throw DatasetError("no sample of the \(permutation.count) in the dataset could be read; the first error: "
                           + (errors.first?.message ?? "none") + ". Check the dataset path and files.")
    }
}
