import Foundation
import Model

/// Everything that defines a linear-probe run (`mocov3-cl lincls`, the reference's
/// `main_lincls.py`, SPEC A.8): what the features are, the data, the schedule. Stored in every
/// lincls checkpoint so `--resume` continues the same run; validated before anything is allocated.
public struct LinearProbeConfiguration: Codable, Sendable, Equatable {
    /// What the classifier reads.
    public enum Features: String, Codable, Sendable {
        /// The final-LN class token of the ViT in `pretrained` (the paper's protocol).
        case pretrained
        /// The normalised pixels themselves, 3·S·S values: the baseline any feature should beat.
        case rawPixels = "raw-pixels"
        /// The same ViT at its initialisation (seed `seed`): what pre-training bought.
        case randomInit = "random-init"
    }

    public var features = Features.pretrained
    /// The weights file (`pretrained`) or, for `random-init`, the file whose architecture to build
    /// (nil: the default pre-training run's ViT).
    public var pretrained: String?
    /// The heads of a file whose metadata does not say (a timm/DeiT file).
    public var heads: Int?
    public var data = "fashion-mnist"
    /// The image side for `raw-pixels` (a ViT's comes from its configuration).
    public var imageSize = 28
    public var batchSize = 256
    /// Base lr: the actual one is `lr × batch / 256` (SPEC A.8; `--lr 3` for ViTs).
    public var lr = 3.0
    public var momentum = 0.9
    public var weightDecay = 0.0
    public var epochs = 10
    /// The fast protocol (a deviation from the reference): features of the evaluation transform
    /// computed once, then only the head trains, with no train augmentation.
    public var cachedFeatures = false
    /// A parameter-free BatchNorm before the head (MAE's linear probe).
    public var bnHead = false
    /// The smallest RandomResizedCrop scale of the train augmentation (the reference's 0.08).
    public var cropMin = 0.08
    /// The seed of the head's init, the data order and the augmentations (and of `random-init`).
    public var seed: UInt64 = 0

    public init() {}

    /// The epochs without `--epochs`: the reference's 90 with `--cached-features` (a few seconds
    /// each), 10 otherwise (each epoch runs the ViT over the augmented training split: about 40 s
    /// for the default model on 60k images on a 2-core host).
    public static func defaultEpochs(cachedFeatures: Bool) -> Int { cachedFeatures ? 90 : 10 }

    /// The actual peak lr (`lr × B / 256`).
    public var peakLearningRate: Double { lr * Double(batchSize) / 256 }

    /// `main_lincls.adjust_learning_rate`: cosine decay set once per epoch, no warmup.
    public func learningRate(epoch: Int) -> Double {
        peakLearningRate * 0.5 * (1 + cos(Double.pi * Double(epoch) / Double(epochs)))
    }

    /// Every impossible value, with the flag and the reason.
    public func validate() throws {
        func fail(_ message: String) -> PretrainError { PretrainError(message) }
        guard batchSize >= 1 else { throw fail("-b/--batch-size must be at least 1, got \(batchSize)") }
        if bnHead, batchSize < 2 {
            throw fail("--bn-head normalises with the batch's statistics, which need -b/--batch-size ≥ 2, got \(batchSize)")
        }
        guard epochs >= 1 else { throw fail("--epochs must be at least 1, got \(epochs)") }
        guard lr.isFinite, lr > 0 else { throw fail("--lr must be a positive number, got \(lr)") }
        guard momentum.isFinite, (0..<1).contains(momentum) else { throw fail("--momentum must lie in [0, 1), got \(momentum)") }
        guard weightDecay.isFinite, weightDecay >= 0 else {
            throw fail("--weight-decay must be a finite number ≥ 0, got \(weightDecay)")
        }
        guard cropMin > 0, cropMin <= 1 else { throw fail("--crop-min must lie in (0, 1], got \(cropMin)") }
        guard imageSize >= 1 else { throw fail("--image-size must be at least 1, got \(imageSize)") }
        if let heads, heads < 1 { throw fail("--heads must be at least 1, got \(heads)") }
        switch features {
        case .pretrained where pretrained == nil:
            throw fail("pass --pretrained FILE (a pretrain, lincls or finetune checkpoint, or a timm ViT), "
                + "or a baseline: --raw-pixels or --random-init")
        case .rawPixels where pretrained != nil:
            throw fail("--raw-pixels classifies the pixels and reads no weights; drop --pretrained")
        default: break
        }
    }
}
