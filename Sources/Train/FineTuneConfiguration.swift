import Foundation
import Model

/// Everything that defines an end-to-end fine-tuning run (`mocov3-cl finetune`, paper §6.3–6.4
/// with DeiT's recipe): the whole ViT plus a new head trains with AdamW at `lr × B/512`, warmup
/// then cosine per iteration, label smoothing, stochastic depth, mixup and cutmix. The transfer
/// recipe of SPEC A.9 is `-b 128 --lr 3e-4 --weight-decay 0.1 --epochs 100`.
public struct FineTuneConfiguration: Codable, Sendable, Equatable {
    public var pretrained: String?
    /// Start from the ViT's initialisation instead (the architecture of `pretrained`, or the
    /// default pre-training run's): the comparison that shows what pre-training bought.
    public var randomInit = false
    public var heads: Int?
    public var data = "fashion-mnist"
    public var batchSize = 128
    /// Base lr: the actual one is `lr × B / 512` (DeiT's scaling).
    public var lr = 5e-4
    public var weightDecay = 0.05
    public var epochs = 3
    public var warmupEpochs = 1.0
    /// DeiT's `--warmup-lr` and `--min-lr`.
    public var warmupLR = 1e-6
    public var minLR = 1e-5
    public var smoothing = 0.1
    public var dropPath = 0.1
    public var mixup = 0.8
    public var cutmix = 1.0
    public var mixupSwitchProbability = 0.5
    public var mixupProbability = 1.0
    public var cropMin = 0.08
    public var seed: UInt64 = 0

    public init() {}

    public var peakLearningRate: Double { lr * Double(batchSize) / 512 }

    /// Linear warmup from `warmupLR` to the peak over `warmupEpochs`, then a half cosine to
    /// `minLR`, evaluated at the fractional epoch `e` (per iteration).
    public func learningRate(at e: Double) -> Double {
        let peak = peakLearningRate
        if e < warmupEpochs { return warmupLR + (peak - warmupLR) * e / warmupEpochs }
        let progress = (e - warmupEpochs) / max(Double(epochs) - warmupEpochs, 1e-12)
        return minLR + (peak - minLR) * 0.5 * (1 + cos(Double.pi * min(progress, 1)))
    }

    /// timm's `drop_path_rate` schedule: block i of `depth` drops with rate `dropPath·i/(depth−1)`.
    public func dropPathRates(depth: Int) -> [Double] {
        depth <= 1 ? [Double](repeating: 0, count: depth) : (0..<depth).map { dropPath * Double($0) / Double(depth - 1) }
    }

    public func validate() throws {
        func fail(_ message: String) -> PretrainError { PretrainError(message) }
        guard batchSize >= 2 else {
            throw fail("-b/--batch-size must be at least 2 (mixup and cutmix mix each image with another of its batch), got \(batchSize)")
        }
        guard epochs >= 1 else { throw fail("--epochs must be at least 1, got \(epochs)") }
        guard warmupEpochs.isFinite, warmupEpochs >= 0, warmupEpochs < Double(epochs) else {
            throw fail("--warmup-epochs must lie in 0..<epochs (\(epochs)), got \(warmupEpochs)")
        }
        guard lr.isFinite, lr > 0 else { throw fail("--lr must be a positive number, got \(lr)") }
        guard weightDecay.isFinite, weightDecay >= 0 else { throw fail("--weight-decay must be a finite number ≥ 0, got \(weightDecay)") }
        guard warmupLR.isFinite, warmupLR >= 0, minLR.isFinite, minLR >= 0 else {
            throw fail("--warmup-lr and --min-lr must be finite numbers ≥ 0, got \(warmupLR) and \(minLR)")
        }
        guard smoothing.isFinite, (0..<1).contains(smoothing) else { throw fail("--smoothing must lie in [0, 1), got \(smoothing)") }
        guard dropPath.isFinite, (0..<1).contains(dropPath) else {
            throw fail("--drop-path must lie in [0, 1) (a rate of 1 would drop every residual branch), got \(dropPath)")
        }
        guard mixup.isFinite, mixup >= 0 else { throw fail("--mixup is a Beta distribution's α and must be ≥ 0 (0: off), got \(mixup)") }
        guard cutmix.isFinite, cutmix >= 0 else { throw fail("--cutmix is a Beta distribution's α and must be ≥ 0 (0: off), got \(cutmix)") }
        guard (0...1).contains(mixupSwitchProbability) else {
            throw fail("--mixup-switch-prob must lie in [0, 1], got \(mixupSwitchProbability)")
        }
        guard (0...1).contains(mixupProbability) else { throw fail("--mixup-prob must lie in [0, 1], got \(mixupProbability)") }
        guard cropMin > 0, cropMin <= 1 else { throw fail("--crop-min must lie in (0, 1], got \(cropMin)") }
        if let heads, heads < 1 { throw fail("--heads must be at least 1, got \(heads)") }
        if pretrained == nil, !randomInit {
            throw fail("pass --pretrained FILE (a pretrain, lincls or finetune checkpoint, or a timm ViT), or --random-init")
        }
    }
}
