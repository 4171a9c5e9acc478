import Foundation

/// The reference's per-iteration schedules (SPEC A.5, A.6; `main_moco.adjust_learning_rate`,
/// `adjust_moco_momentum`), evaluated at the fractional epoch `e = epoch + i / iterationsPerEpoch`.
public struct Schedules: Sendable, Equatable {
    /// The actual peak lr: `base_lr × batch / 256` (SPEC A.6, applied once).
    public let peakLearningRate: Double
    public let warmupEpochs: Double
    public let epochs: Double
    /// m₀ (`--moco-m`).
    public let baseMomentum: Double
    /// `--moco-m-cos`: m rises from m₀ to 1 along a half cosine; otherwise m stays m₀.
    public let cosineMomentum: Bool

    public init(baseLearningRate: Double, batchSize: Int, warmupEpochs: Double, epochs: Double,
                baseMomentum: Double, cosineMomentum: Bool) {
        peakLearningRate = baseLearningRate * Double(batchSize) / 256
        self.warmupEpochs = warmupEpochs
        self.epochs = epochs
        self.baseMomentum = baseMomentum
        self.cosineMomentum = cosineMomentum
    }

    /// Linear warmup from 0 (so the very first step has lr 0), then a half-cycle cosine to 0.
    public func learningRate(at e: Double) -> Double {
        if e < warmupEpochs { return peakLearningRate * e / warmupEpochs }
        return peakLearningRate * 0.5 * (1 + cos(Double.pi * (e - warmupEpochs) / (epochs - warmupEpochs)))
    }

    /// `m(e) = 1 − ½(1 + cos(πe/E))(1 − m₀)` with `--moco-m-cos`; m₀ otherwise.
    public func momentum(at e: Double) -> Double {
        guard cosineMomentum else { return baseMomentum }
        return 1 - 0.5 * (1 + cos(Double.pi * e / epochs)) * (1 - baseMomentum)
    }
}
