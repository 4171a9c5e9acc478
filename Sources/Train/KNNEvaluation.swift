import Augment
import Datasets
import Foundation
import Model

/// kNN evaluation (InstDisc protocol, k = 200, T = 0.07 by default): class-token features of
/// the whole training split form the bank, every held-out image is classified against it.
public struct KNNEvaluation: Sendable {
    public var k: Int
    public var temperature: Double
    public var workers: Int

    public init(k: Int = 200, temperature: Double = 0.07, workers: Int) {
        self.k = k
        self.temperature = temperature
        self.workers = workers
    }

    /// Top-1 accuracy in [0, 1] of the features `extractor` computes.
    public func accuracy(extractor: FeatureExtractor, train: any ImageDataset, test: any ImageDataset) throws -> Double {
        let width = extractor.config.embedDim
        let (bank, bankLabels) = try features(train, extractor: extractor)
        let (queries, labels) = try features(test, extractor: extractor)
        let classifier = KNNClassifier(k: k, temperature: temperature, classes: train.classNames.count)
        return classifier.accuracy(queries: KNNClassifier.normalized(queries, width: width), labels: labels,
                                   bank: KNNClassifier.normalized(bank, width: width), bankLabels: bankLabels, width: width)
    }

    /// The same classifier on the normalised pixels themselves: the baseline any learned feature
    /// should beat.
    public func rawPixelAccuracy(train: any ImageDataset, test: any ImageDataset, imageSize: Int) throws -> Double {
        let width = 3 * imageSize * imageSize
        func pixels(_ dataset: any ImageDataset) throws -> ([Float], [Int32]) {
            var values: [Float] = [], labels: [Int32] = []
            let batches = EvalBatches(dataset: dataset, transform: EvalTransform(imageSize: imageSize), batchSize: 512,
                                      workers: workers)
            while let batch = try batches.next() {
                values += batch.x
                labels += batch.labels
            }
            return (values, labels)
        }
        let (bank, bankLabels) = try pixels(train)
        let (queries, labels) = try pixels(test)
        let classifier = KNNClassifier(k: k, temperature: temperature, classes: train.classNames.count)
        return classifier.accuracy(queries: KNNClassifier.normalized(queries, width: width), labels: labels,
                                   bank: KNNClassifier.normalized(bank, width: width), bankLabels: bankLabels, width: width)
    }

    /// (count, C) features and labels of every image of `dataset`, in order.
    func features(_ dataset: any ImageDataset, extractor: FeatureExtractor) throws -> ([Float], [Int32]) {
        var values: [Float] = [], labels: [Int32] = []
        values.reserveCapacity(dataset.count * extractor.config.embedDim)
        let batches = EvalBatches(dataset: dataset, transform: EvalTransform(imageSize: extractor.config.imageSize),
                                  batchSize: extractor.batchSize, workers: workers)
        while let batch = try batches.next() {
            // Unreadable samples are left out of their batch; one can leave it empty.
            guard !batch.labels.isEmpty else { continue }
            values += try extractor.features(of: batch.x, count: batch.labels.count)
            labels += batch.labels
        }
        return (values, labels)
    }
}
