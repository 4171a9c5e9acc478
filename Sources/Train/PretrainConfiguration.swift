import Foundation
import Model

/// Everything that defines a pre-training run, as the reference's `main_moco.py` flags plus the
/// data, device and image geometry. Stored in every checkpoint, so `--resume` continues the same
/// run; validated as a whole before anything is allocated.
public struct PretrainConfiguration: Codable, Sendable, Equatable {
    // Model
    public var arch = "vit_tiny"
    public var imageSize = 28
    public var patchSize = 4
    /// Overrides of the preset (0: keep the preset's value): a small ViT for the small default data.
    public var embedDim = 0
    public var depth = 0
    public var heads = 0
    public var mocoDim = 256
    public var mocoMLPDim = 4096
    public var mocoT = 0.2
    public var stopGradConv1 = false
    /// Paper ablations (Sec. 6.1, Table 6): `cls` or `avg` (global average pooling), ViT-BN, and
    /// `sincos` or `none` for the position embedding.
    public var pooling = "cls"
    public var vitBN = false
    public var positionEmbedding = "sincos"

    // Optimization
    public var batchSize = 4096
    public var epochs = 300
    /// Fractional values are allowed (the reference takes an integer): short runs warm up over part of an epoch.
    public var warmupEpochs = 40.0
    public var optimizer = OptimizerKind.adamw
    /// Base lr (`--lr`): the actual lr is `lr × batch / 256`.
    public var lr = 1.5e-4
    public var weightDecay = 0.1
    public var mocoM = 0.99
    public var mocoMCos = false
    public var cropMin = 0.08
    /// A factor on the Gaussian blur's σ range, the reference's 0.1–2.0 px at 224 px (nil: 1).
    /// Optional so that checkpoints written before it existed still read.
    public var blurScale: Double?
    public var seed: UInt64 = 0

    // Data and monitors
    public var data = "fashion-mnist"
    /// Length of the dense kNN monitor's memory bank; 0 means 10 % of the training set.
    public var knnBank = 0
    /// Run the dense kNN monitor every this many iterations (0: never).
    public var knnEvery = 1
    /// k and T of the kNN classifier (InstDisc: 200, 0.07).
    public var knnK = 200
    public var knnT = 0.07
    /// Evaluate kNN on the held-out split before training and after every this many epochs (0: never).
    public var evalEvery = 1
    /// A gradient spike: a layer's norm above this multiple of its recent median.
    public var spikeFactor = 10.0

    public init() {}

    /// The configuration of `mocov3-cl pretrain` with no flags: a ViT sized for 28×28
    /// Fashion-MNIST and a schedule that ends in about 15 minutes with the host backend on a
    /// 2-core machine (README, "The default run").
    public static var defaultRun: PretrainConfiguration {
        var c = PretrainConfiguration()
        // A 4-block, 128-wide ViT on 7×7 patches (16 + 1 tokens): ~27 MFLOP per image forward, so
        // an epoch of 60k images takes about 4 minutes on the host backend of a 2-core machine.
        c.arch = "vit_tiny"
        c.imageSize = 28
        c.patchSize = 7
        c.embedDim = 128
        c.depth = 4
        c.heads = 4
        c.mocoDim = 256
        c.mocoMLPDim = 1024
        c.batchSize = 256
        c.epochs = 3
        c.warmupEpochs = 0.5
        // 10× the ViT recipe's base lr: a short schedule at batch 256 (actual lr 1.5e-3).
        c.lr = 1.5e-3
        c.weightDecay = 0.1
        c.mocoM = 0.99
        c.mocoMCos = true
        // 28×28 images leave little to crop; 0.2 as the reference's ResNet recipe.
        c.cropMin = 0.2
        c.stopGradConv1 = true
        return c
    }

    /// The model this run trains.
    public func modelConfig() throws -> MoCoConfig {
        var vit = try ViTConfig.named(arch)
        vit.imageSize = imageSize
        vit.patchSize = patchSize
        if embedDim > 0 { vit.embedDim = embedDim }
        if depth > 0 { vit.depth = depth }
        if heads > 0 { vit.heads = heads }
        vit.stopGradConv1 = stopGradConv1
        do { try vit.setOptions(pooling: pooling, positionEmbedding: positionEmbedding, vitBN: vitBN) } catch {
            throw PretrainError("\(error)")
        }
        let config = MoCoConfig(vit: vit, mocoDim: mocoDim, mocoMLPDim: mocoMLPDim, temperature: mocoT)
        try config.validate()
        return config
    }

    /// Every impossible value, with the flag and the reason, before anything is allocated;
    /// returns the model the run trains. ``PretrainPlan`` calls it once per run.
    @discardableResult
    public func validate() throws -> MoCoConfig {
        func fail(_ message: String) -> PretrainError { PretrainError(message) }
        guard batchSize >= 2 else {
            throw fail("-b/--batch-size must be at least 2 (training-mode BatchNorm needs two samples per view), got \(batchSize)")
        }
        guard epochs >= 1 else { throw fail("--epochs must be at least 1, got \(epochs)") }
        guard warmupEpochs.isFinite, warmupEpochs >= 0, warmupEpochs < Double(epochs) else {
            throw fail("--warmup-epochs must lie in 0..<epochs (\(epochs)), got \(warmupEpochs)")
        }
        guard lr.isFinite, lr >= 0 else { throw fail("--lr must be a finite number ≥ 0, got \(lr)") }
        guard weightDecay.isFinite, weightDecay >= 0 else {
            throw fail("--weight-decay must be a finite number ≥ 0, got \(weightDecay)")
        }
        guard (0...1).contains(mocoM) else { throw fail("--moco-m must lie in [0, 1], got \(mocoM)") }
        guard mocoT.isFinite, mocoT > 0 else { throw fail("--moco-t must be a positive number, got \(mocoT)") }
        guard cropMin > 0, cropMin <= 1 else { throw fail("--crop-min must lie in (0, 1], got \(cropMin)") }
        if let blurScale, !(blurScale.isFinite && blurScale > 0 && blurScale <= 100) {
            throw fail("--blur-scale must be a positive factor (at most 100), got \(blurScale)")
        }
        guard imageSize > 0, patchSize > 0 else {
            throw fail("--image-size and --patch-size must be positive, got \(imageSize) and \(patchSize)")
        }
        guard imageSize % patchSize == 0 else {
            throw fail("--patch-size \(patchSize) must divide --image-size \(imageSize); pick an image size that is a multiple of the patch size")
        }
        guard mocoDim > 0, mocoMLPDim > 0 else {
            throw fail("--moco-dim and --moco-mlp-dim must be positive, got \(mocoDim) and \(mocoMLPDim)")
        }
        guard knnBank >= 0, knnEvery >= 0, evalEvery >= 0 else {
            throw fail("--knn-bank, --knn-every and --eval-every must be ≥ 0")
        }
        guard knnK >= 1, knnT.isFinite, knnT > 0 else { throw fail("--knn-k must be ≥ 1 and --knn-t positive") }
        guard spikeFactor > 1 else { throw fail("--spike-factor must be greater than 1, got \(spikeFactor)") }
        // Upper bounds: far beyond any real run, and low enough that no size computed from them overflows.
        let limits: [(String, Int, Int)] = [
            ("-b/--batch-size", batchSize, 1 << 20), ("--epochs", epochs, 1_000_000), ("--image-size", imageSize, 8192),
            ("--embed-dim", embedDim, 1 << 16), ("--depth", depth, 1024), ("--heads", heads, 1024),
            ("--moco-dim", mocoDim, 1 << 16), ("--moco-mlp-dim", mocoMLPDim, 1 << 16), ("--knn-bank", knnBank, 1 << 24),
            ("--knn-k", knnK, 1 << 16),
        ]
        for (flag, value, limit) in limits where value > limit {
            throw fail("\(flag) \(value) is larger than this tool supports (\(limit)); pick a smaller value")
        }
        guard (lr * Double(batchSize) / 256).isFinite else { throw fail("--lr \(lr) × batch / 256 is not a finite number") }
        let config: MoCoConfig
        do { config = try modelConfig() } catch { throw fail("\(error)") }
        let vit = config.vit
        let activations = batchSize.multipliedReportingOverflow(by: vit.tokens * vit.mlpHiddenDim)
        guard !activations.overflow, activations.partialValue < 1 << 40 else {
            throw fail("batch \(batchSize) × \(vit.tokens) tokens × width \(vit.mlpHiddenDim) is too large to allocate; "
                + "lower -b, --image-size or --embed-dim")
        }
        return config
    }
}

/// A run that passed validation: its configuration and its parameter layout, each made once
/// (the CLI prints the layout's summary before the data is opened; the trainer allocates it).
public struct PretrainPlan: Sendable {
    public private(set) var configuration: PretrainConfiguration
    public let layout: MoCoParameters

    /// Validates `configuration` (``PretrainConfiguration/validate()``) and lays out its model.
    public init(_ configuration: PretrainConfiguration) throws {
        self.configuration = configuration
        layout = try MoCoParameters(configuration.validate())
    }

    /// The same run reading its data from `path` (a resumed run whose data folder moved).
    public func withData(_ path: String) -> PretrainPlan {
        var plan = self
        plan.configuration.data = path
        return plan
    }
}

/// A run that cannot start or cannot go on: what happened, and what to do.
public struct PretrainError: Error, CustomStringConvertible, Sendable {
    public let description: String
    public init(_ description: String) { self.description = description }
}
