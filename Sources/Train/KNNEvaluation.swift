import Augment
import Collective
import Datasets
import Foundation
import Model
import Tensors

/// kNN evaluation (InstDisc protocol, k = 200, T = 0.07 by default): class-token features of
/// the whole training split form the bank, every held-out image is classified against it.
public struct KNNEvaluation: Sendable {
    public var k: Int
    public var temperature: Double
    public var workers: Int

    /// One evaluation's top-1 and where its time went.
    public struct Result: Sendable {
        /// Top-1 accuracy in [0, 1].
        public let top1: Double
        /// Making the features of both splits: data, evaluation transform and encoder.
        public let featureSeconds: Double
        /// The classifier on the device: similarities, top-k and vote.
        public let classifierSeconds: Double
    }

    public init(k: Int = 200, temperature: Double = 0.07, workers: Int) {
        self.k = k
        self.temperature = temperature
        self.workers = workers
    }

    /// Top-1 of the features `extractor` computes; the classifier runs on the extractor's backend.
    /// Across a data-parallel group each rank encodes a contiguous shard of both splits and the
    /// features are gathered in rank order, so every rank classifies the same bank and queries as
    /// one process would, in a 1/N of its encoder time.
    public func accuracy(extractor: FeatureExtractor, train: any ImageDataset, test: any ImageDataset,
                         communicator: any Communicator = SingleProcess()) throws -> Result {
        try accuracy(train: train, test: test, width: extractor.config.embedDim, imageSize: extractor.config.imageSize,
                     batchSize: extractor.batchSize, on: extractor.backend, communicator: communicator) {
            try extractor.features(of: $0.x, count: $0.labels.count)
        }
    }

    /// The same classifier on the normalised pixels themselves: the baseline any learned feature
    /// should beat. The classifier runs on `backend`.
    public func rawPixelAccuracy(train: any ImageDataset, test: any ImageDataset, imageSize: Int,
                                 on backend: any Backend) throws -> Result {
        try accuracy(train: train, test: test, width: 3 * imageSize * imageSize, imageSize: imageSize,
                     batchSize: 512, on: backend) { $0.x }
    }

    /// `represent` maps each evaluation batch to its (count, width) vectors; the training split's
    /// form the bank, the held-out split's are classified against it.
    func accuracy(train: any ImageDataset, test: any ImageDataset, width: Int, imageSize: Int, batchSize: Int,
                  on backend: any Backend, communicator: any Communicator = SingleProcess(),
                  represent: (EvalBatch) throws -> [Float]) throws -> Result {
        func collect(_ dataset: any ImageDataset) throws -> ([Float], [Int32]) {
            let shard = communicator.isDistributed ? ShardDataset(dataset, rank: communicator.rank, of: communicator.size) : dataset
            let result = try Embeddings.collect(shard, imageSize: imageSize, width: width, batchSize: batchSize,
                                                workers: workers, represent: represent)
            var (features, labels) = (result.features, result.labels)
            if communicator.isDistributed {
                // Shards differ by a row at most (and by skipped samples): gather padded to the largest.
                let counts = try communicator.allGather([Int32(labels.count)]).map(Int.init)
                let rows = counts.max() ?? 0
                let paddedFeatures = features + [Float](repeating: 0, count: (rows - labels.count) * width)
                let paddedLabels = labels + [Int32](repeating: -1, count: rows - labels.count)
                let allFeatures = try communicator.allGather(paddedFeatures)
                let allLabels = try communicator.allGather(paddedLabels)
                features = counts.enumerated().flatMap { rank, count in allFeatures[(rank * rows * width)..<((rank * rows + count) * width)] }
                labels = counts.enumerated().flatMap { rank, count in allLabels[(rank * rows)..<(rank * rows + count)] }
            }
            return (KNNClassifier.normalized(features, width: width), labels)
        }
        let start = Date()
        let (bank, bankLabels) = try collect(train)
        let (queries, labels) = try collect(test)
        let classifierStart = Date()
        let classifier = KNNClassifier(k: k, temperature: temperature, classes: train.classNames.count)
        let top1 = try classifier.accuracy(queries: queries, labels: labels, bank: bank, bankLabels: bankLabels,
                                           width: width, on: backend)
        return Result(top1: top1, featureSeconds: classifierStart.timeIntervalSince(start),
                      classifierSeconds: Date().timeIntervalSince(classifierStart))
    }
}

/// Rank `rank`'s contiguous share of `base` (N near-equal slices in order), for sharded evaluation.
struct ShardDataset: ImageDataset {
    let base: any ImageDataset
    let range: Range<Int>

    init(_ base: any ImageDataset, rank: Int, of ranks: Int) {
        self.base = base
        range = (rank * base.count / ranks)..<((rank + 1) * base.count / ranks)
    }

    var count: Int { range.count }
    var classNames: [String] { base.classNames }
    func label(at index: Int) -> Int? { base.label(at: range.lowerBound + index) }
    func image(at index: Int) throws -> Image { try base.image(at: range.lowerBound + index) }
    var summary: String { "\(base.summary), images \(range.lowerBound)..<\(range.upperBound)" }
}
