import Foundation
import Tensors

/// `--on-nonfinite`: what `pretrain` does when an iteration's loss or a gradient is not finite,
/// or an update leaves a parameter non-finite.
///
/// `stop` (the default) ends the run with an error naming the iteration and the layer; the weights
/// and checkpoints stay good. `rollback` restores the training state of an in-memory snapshot
/// (taken every ``snapshotEvery`` iterations and at every epoch start, only when all parameters
/// are finite), replays the batches from there to the offending one, skips it, scales the lr of
/// every later iteration by ``learningRateScale``, logs a `"type": "rollback"` line and goes on;
/// after ``limit`` rollbacks within ``window`` iterations, the next divergence gives up with the
/// stop's error.
///
/// The replay is deterministic (the data order and augmentations are functions of the seed and
/// the position), so a rolled-back run equals one that never saw the skipped batches, and the
/// skipped batches travel in checkpoints: a resume stays bit-identical.
public struct NonFinitePolicy: Sendable, Equatable {
    public enum Action: String, Sendable, CaseIterable { case stop, rollback }

    public var action: Action
    /// Multiplies the lr of every iteration after a skipped batch (compounding; 1 keeps it).
    public var learningRateScale: Double
    /// The most rollbacks within ``window`` iterations; one more gives up.
    public var limit: Int
    public var window: Int
    /// Iterations between in-memory snapshots (each a host copy of the weights, the optimizer
    /// state and the kNN bank).
    public var snapshotEvery: Int

    public static let stop = NonFinitePolicy(action: .stop)

    public init(action: Action, learningRateScale: Double = 1, limit: Int = 3, window: Int = 1000, snapshotEvery: Int = 25) {
        self.action = action
        self.learningRateScale = learningRateScale
        self.limit = limit
        self.window = window
        self.snapshotEvery = snapshotEvery
    }

    /// The policy of the CLI's flags; each impossible value is an error naming its flag.
    public init(parsing action: String, learningRateScale: Double, limit: Int, window: Int, snapshotEvery: Int) throws {
        guard let kind = Action(rawValue: action) else {
            throw PretrainError("--on-nonfinite must be stop or rollback, got '\(action)'")
        }
        guard learningRateScale.isFinite, learningRateScale > 0, learningRateScale <= 1 else {
            throw PretrainError("--rollback-lr-scale must lie in (0, 1], got \(learningRateScale)")
        }
        guard limit >= 1 else { throw PretrainError("--rollback-limit must be at least 1, got \(limit)") }
        guard window >= 1 else { throw PretrainError("--rollback-window must be at least 1 iteration, got \(window)") }
        guard snapshotEvery >= 1 else { throw PretrainError("--snapshot-every must be at least 1 iteration, got \(snapshotEvery)") }
        self.init(action: kind, learningRateScale: learningRateScale, limit: limit, window: window, snapshotEvery: snapshotEvery)
    }
}

/// A batch that a rollback skipped (stored in checkpoints as JSON, `skipped_batches`).
public struct SkippedBatch: Codable, Sendable, Equatable {
    public var epoch: Int
    public var batch: Int
    /// The step number the failed iteration would have had (the rollback window counts these).
    public var step: Int
    /// The lr factor this rollback applied to every iteration after the batch.
    public var learningRateScale: Double

    public init(epoch: Int, batch: Int, step: Int, learningRateScale: Double) {
        self.epoch = epoch
        self.batch = batch
        self.step = step
        self.learningRateScale = learningRateScale
    }

    /// The lr factor at (`epoch`, `batch`): the product of the scales of the batches skipped before it.
    static func learningRateFactor(at epoch: Int, _ batch: Int, skipped: [SkippedBatch]) -> Double {
        skipped.filter { ($0.epoch, $0.batch) < (epoch, batch) }.map(\.learningRateScale).reduce(1, *)
    }
}

/// An iteration (or a save, or a snapshot) found a non-finite value: which batch to blame and
/// the error the `stop` policy throws.
struct Divergence: Error {
    let epoch: Int
    /// The offending batch: the current one when its loss or gradient is not finite, the last
    /// one applied when the parameters already are.
    let batch: Int
    let step: Int
    /// One line for the rollback's warning and its metrics line.
    let summary: String
    let error: PretrainError
}

/// Everything an iteration changes, on the host: what a rollback restores.
struct TrainingSnapshot {
    let position: TrainingPosition
    let parameters: [Float]
    let buffers: [Float]
    let optimizer: [String: [Float]]
    let bank: MemoryBank?
    let gradientHistory: [[Double]]
    let dips: KNNDipDetector
}
