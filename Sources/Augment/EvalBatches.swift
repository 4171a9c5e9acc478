import Datasets
import Foundation

/// One feature-extraction batch: up to B samples through `EvalTransform`, (B, 3, S, S).
public struct EvalBatch: Sendable {
    /// B·3·S·S floats.
    public var x: [Float]
    /// The class of each sample, −1 when the dataset is unlabeled.
    public var labels: [Int32]
    /// The dataset index of each row.
    public var indices: [Int]
    public var batchIndex: Int
}

/// Every sample of a dataset in index order, for the kNN monitor and the linear probe
/// (`main_lincls.py` val loader: no shuffle, the final partial batch kept). A sample that cannot
/// be read is left out of its batch (a feature of another image would corrupt the evaluation),
/// counted in `skippedSamples` and described in `errorDescriptions`.
public final class EvalBatches: @unchecked Sendable {
    public let batchSize: Int
    public let batchCount: Int
    private let producer: BatchProducer<EvalBatch>
    private let skips = SkipLog()

    public init(dataset: any ImageDataset, transform: EvalTransform, batchSize: Int, workers: Int, prefetch: Int = 2) {
        precondition(batchSize > 0, "batchSize must be positive")
        precondition(workers > 0, "workers must be positive")
        let count = dataset.count
        self.batchSize = batchSize
        batchCount = (count + batchSize - 1) / batchSize
        let skips = self.skips
        producer = BatchProducer(range: 0..<batchCount, prefetch: prefetch) { b in
            let first = b * batchSize
            let size = min(batchSize, count - first)
            let viewCount = transform.outputCount
            var x = [Float](repeating: 0, count: size * viewCount)
            var loaded = [Bool](repeating: false, count: size)
            var errors = [String?](repeating: nil, count: size)
            x.withUnsafeMutableBufferPointer { x in
                loaded.withUnsafeMutableBufferPointer { loaded in
                    errors.withUnsafeMutableBufferPointer { errors in
                        forEachSlot(size, workers: workers) { slot in
                            do {
                                let image = try dataset.image(at: first + slot)
                                let range = (slot * viewCount)..<((slot + 1) * viewCount)
                                transform(image, into: UnsafeMutableBufferPointer(rebasing: x[range]))
                                loaded[slot] = true
                            } catch {
                                errors[slot] = "sample \(first + slot): \(error)"
                            }
                        }
                    }
                }
            }
            var indices: [Int] = []
            var rows: [Float] = []
            rows.reserveCapacity(x.count)
            for slot in 0..<size where loaded[slot] {
                indices.append(first + slot)
                rows.append(contentsOf: x[(slot * viewCount)..<((slot + 1) * viewCount)])
            }
            for slot in 0..<size { if let message = errors[slot] { skips.record(replaced: 1, errors: [(first + slot, message)]) } }
            let labels = indices.map { Int32(dataset.label(at: $0) ?? -1) }
            return EvalBatch(x: indices.count == size ? x : rows, labels: labels, indices: indices, batchIndex: b)
        }
    }

    deinit { producer.cancel() }

    /// The next batch in index order, nil after the last.
    public func next() throws -> EvalBatch? { try producer.next() }

    /// Stops the background work; waits at most for the batch being made.
    public func cancel() { producer.cancel() }

    /// Samples left out so far because they could not be read.
    public var skippedSamples: Int { skips.skippedSamples }

    /// Why, one description per sample.
    public var errorDescriptions: [String] { skips.errorDescriptions }
}
