import Augment
import Datasets
import Foundation
import Model

/// One training batch of a classifier run: augmented images (B, 3, S, S), or rows of cached
/// features (B, width), with their labels.
struct ClassifierBatch {
    let batchIndex: Int
    let labels: [Int32]
    let values: [Float]
}

/// What `lincls` and `finetune` share: the epoch loop with its per-iteration metrics, the
/// held-out evaluation, the best top-1, a checkpoint after every epoch and a mid-epoch one on
/// request. A conforming run supplies its batches, its step and its evaluation.
protocol ClassifierTraining: AnyObject {
    var epochs: Int { get }
    var batchesPerEpoch: Int { get }
    var position: TrainingPosition { get set }
    var best: (top1: Double, epoch: Int) { get set }
    var metrics: MetricsLog { get }
    var report: (ClassifierEvent) -> Void { get }
    var runFolder: URL { get }
    /// `lincls` or `finetune`, for the report's title.
    var command: String { get }
    /// The backend's name, for the report.
    var deviceName: String { get }
    /// Work before the first epoch (the probe's feature cache).
    func prepareRun() throws
    /// The epoch's batches from `first` on: a function returning the next, nil after the last.
    func batches(epoch: Int, from first: Int) throws -> () throws -> ClassifierBatch?
    func learningRate(epoch: Int, batch: Int) -> Double
    /// One optimizer step on `batch`; returns its mean loss. Throws, before any update, on a
    /// non-finite loss.
    func train(_ batch: ClassifierBatch, epoch: Int, learningRate: Double, step: Int) throws -> Float
    /// Checks after an epoch (the probe's frozen trunk).
    func endOfEpoch() throws
    func evaluate() throws -> (top1: Double, top5: Double, loss: Double)
    @discardableResult func saveCheckpoint(isBest: Bool) throws -> String
}

/// An epoch of RandomResizedCrop + flip views of `dataset` from batch `first` on (the classifiers'
/// train transform), as a function returning the next batch, nil after the last.
func augmentedBatches(_ dataset: any ImageDataset, imageSize: Int, cropMin: Double, batchSize: Int, seed: UInt64,
                      epoch: Int, from first: Int, dropLast: Bool, workers: Int) -> () throws -> ClassifierBatch? {
    let loader = TrainingBatches(dataset: dataset, augmentation: ClassifierAugmentation(imageSize: imageSize, scale: cropMin...1),
                                 batchSize: batchSize, seed: seed, epoch: epoch, startBatch: first, dropLast: dropLast,
                                 workers: workers)
    return {
        guard let batch = try loader.next() else {
            loader.cancel()
            return nil
        }
        return ClassifierBatch(batchIndex: batch.batchIndex, labels: batch.labels, values: batch.x1)
    }
}

/// The labeled held-out split of `data` and its class count, checked as the classifiers need
/// them (and against a resumed head's class count); `purpose` names the command in the errors.
func labeledSplits(_ data: DatasetSplits, purpose: String, resumed: (classes: Int, source: String)?) throws
    -> (test: any ImageDataset, classes: Int) {
    guard data.train.isLabeled else {
        throw PretrainError("\(data.name) has no labels (no class folders); \(purpose) needs labeled train/<class>/ "
            + "images, or Fashion-MNIST or CIFAR")
    }
    guard let test = data.test, test.isLabeled else {
        throw PretrainError("\(data.name) has no labeled held-out split (a val/ folder of class folders, or a test split); "
            + "the accuracy is measured there")
    }
    let classes = data.train.classNames.count
    guard test.classNames.count == classes else {
        throw PretrainError("\(data.name): the training split has \(classes) classes and the held-out split "
            + "\(test.classNames.count); they must be the same classes")
    }
    if let resumed, resumed.classes != classes {
        throw PretrainError("\(resumed.source) has a head of \(resumed.classes) classes, but \(data.name) has "
            + "\(classes); resume it on its own data, or start a new run with another --output")
    }
    return (test, classes)
}

/// A classifier checkpoint's position and best top-1 as metadata.
func positionMetadata(_ position: TrainingPosition, best: (top1: Double, epoch: Int), classes: Int) -> [String: String] {
    ["epoch": String(position.epoch), "batch": String(position.batch), "step": String(position.step),
     "best_acc1": String(format: "%.4f", 100 * best.top1), "best_top1": String(best.top1), "best_epoch": String(best.epoch),
     "num_classes": String(classes)]
}

extension ClassifierTraining {
    /// Trains from the current position to the last epoch, or until `shouldStop` returns true
    /// between iterations (then it writes a checkpoint of the position reached).
    func runEpochs(shouldStop: () -> Bool) throws -> ClassifierSummary {
        let start = Date()
        var summary = ClassifierSummary(completed: false, position: position, lastTop1: nil, lastTop5: nil,
                                        bestTop1: best.top1, bestEpoch: best.epoch, seconds: 0, lastCheckpoint: nil)
        if position.epoch < epochs { try prepareRun() }
        training: while position.epoch < epochs {
            let epochStart = Date()
            let epoch = position.epoch
            var lossSum = 0.0, seen = 0, learningRate = 0.0
            var last = Date()
            let next = try batches(epoch: epoch, from: position.batch)
            while let batch = try next() {
                learningRate = self.learningRate(epoch: epoch, batch: batch.batchIndex)
                let count = batch.labels.count
                let loss = try train(batch, epoch: epoch, learningRate: learningRate, step: position.step + 1)
                position.step += 1
                position.batch = batch.batchIndex + 1
                lossSum += Double(loss) * Double(count)
                seen += count
                let now = Date()
                let iteration = ClassifierIteration(
                    epoch: epoch, batch: batch.batchIndex, batchesPerEpoch: batchesPerEpoch, epochs: epochs,
                    step: position.step, loss: Double(loss), learningRate: learningRate,
                    imagesPerSecond: Double(count) / max(now.timeIntervalSince(last), 1e-9))
                last = now
                try metrics.writeClassifierIteration(iteration)
                report(.iteration(iteration))
                if shouldStop(), position.batch < batchesPerEpoch {
                    summary.lastCheckpoint = try saveCheckpoint(isBest: false)
                    break training
                }
            }
            position = TrainingPosition(epoch: epoch + 1, batch: 0, step: position.step)
            try endOfEpoch()
            let result = try evaluate()
            if result.top1 > best.top1 || best.epoch == 0 { best = (result.top1, position.epoch) }
            let record = ClassifierEpoch(epoch: position.epoch, trainLoss: seen > 0 ? lossSum / Double(seen) : .nan,
                                         learningRate: learningRate, validationLoss: result.loss, top1: result.top1,
                                         top5: result.top5, bestTop1: best.top1, bestEpoch: best.epoch,
                                         seconds: Date().timeIntervalSince(epochStart))
            try metrics.writeClassifierEpoch(record)
            report(.epoch(record))
            summary.lastTop1 = result.top1
            summary.lastTop5 = result.top5
            summary.lastCheckpoint = try saveCheckpoint(isBest: best.epoch == position.epoch)
            do {
                try RunReport.update(folder: runFolder, command: command, device: deviceName,
                                     seconds: Date().timeIntervalSince(start))
            } catch {
                report(.message("warning: report.html not written: \(error)"))
            }
            if shouldStop(), position.epoch < epochs { break training }
        }
        summary.completed = position.epoch >= epochs
        summary.position = position
        summary.bestTop1 = best.top1
        summary.bestEpoch = best.epoch
        summary.seconds = Date().timeIntervalSince(start)
        return summary
    }
}
