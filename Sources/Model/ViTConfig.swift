/// A configuration that cannot build a model; the message says what was wrong and what to do.
public struct ModelConfigError: Error, Equatable, CustomStringConvertible, Sendable {
    public let message: String

    public init(_ message: String) { self.message = message }

    public var description: String { message }
}

/// The shape of a ViT backbone (SPEC A.2: timm 0.4.9 `VisionTransformer` as MoCo v3's `vits.py`
/// configures it). Dimension letters: N tokens (1 + patches), C width (`embedDim`), H heads,
/// D head dim, P patch size.
///
/// The named presets use the MoCo v3 head counts: **`vitSmall` has 12 heads**, not DeiT/timm's 6
/// (SPEC A.2: same weight shapes, different function).
///
/// ```swift
/// var vit = try ViTConfig.named("vit_small")
/// vit.stopGradConv1 = true              // the ViT recipe, SPEC A.9
/// try vit.validate()
/// ```
public struct ViTConfig: Equatable, Sendable {
    /// The position embedding added to the tokens.
    public enum PositionEmbedding: String, Sendable, CaseIterable {
        /// The fixed 2-D sin-cos table, frozen (SPEC A.2); the reference's only choice.
        case sinCos
        /// No position embedding (the paper's Table 6 ablation); the model has no `pos_embed`.
        case none
    }

    /// How the token sequence becomes one feature vector.
    public enum Pooling: String, Sendable, CaseIterable {
        /// The final-LayerNorm-ed class token, `x[:, 0]` (SPEC A.2, the reference).
        case classToken
        /// The mean over the patch tokens of the final-LayerNorm output, `LN(x)[:, 1:].mean(1)`
        /// (the paper's Sec 5 class-token ablation). The class token still exists and attends,
        /// but is not read.
        ///
        /// The final LN is kept and applied *before* the mean: the paper's "LN+pool" placement
        /// ("if we keep this LN and remove [CLS] ... 69.7 %"), and the parameter set, names and
        /// shapes stay the reference's (`norm.weight`/`norm.bias`), so checkpoints of either
        /// pooling load the same way. timm's `global_pool='avg'` differs: it averages the
        /// un-normalized `x[:, 1:]` and then applies a separate `fc_norm` (and no `norm`); the
        /// paper's better "pool without LN" variant (76.3 %) is neither, and is not offered.
        case globalAverage
    }

    /// The normalization in front of each block's MLP (`norm2`).
    public enum MLPNormalization: String, Sendable, CaseIterable {
        /// LayerNorm, eps 1e-6 (SPEC A.2, the reference).
        case layerNorm
        /// BatchNorm ("ViT-BN", paper Sec 6.1): `blocks.{i}.norm2` keeps its γ/β names and
        /// shapes and gains `running_mean`/`running_var`/`num_batches_tracked` buffers. It
        /// normalizes each channel over all B·N tokens of one view (training mode in both
        /// encoders, each view its own call, as the heads' BNs), ε 1e-5, momentum 0.1
        /// (`nn.BatchNorm1d` defaults: neither the paper nor the reference gives values).
        /// Feature extraction (kNN, linear probe) runs it in evaluation mode on the running
        /// statistics.
        case batchNorm
    }

    public var imageSize: Int
    /// P: the patch-embedding conv's kernel size and stride.
    public var patchSize: Int
    /// C: the token width.
    public var embedDim: Int
    /// Number of Transformer blocks.
    public var depth: Int
    /// H: attention heads; C/H is the head dim D.
    public var heads: Int
    /// MLP hidden width = `mlpRatio`·C.
    public var mlpRatio: Int
    /// Input image channels (the patch conv's input).
    public var channels: Int
    /// `--stop-grad-conv1` (SPEC A.2): the base encoder's patch projection stays at its random init.
    public var stopGradConv1: Bool
    public var positionEmbedding: PositionEmbedding
    public var pooling: Pooling
    public var mlpNormalization: MLPNormalization

    public init(imageSize: Int = 224, patchSize: Int = 16, embedDim: Int, depth: Int, heads: Int,
                mlpRatio: Int = 4, channels: Int = 3, stopGradConv1: Bool = false,
                positionEmbedding: PositionEmbedding = .sinCos, pooling: Pooling = .classToken,
                mlpNormalization: MLPNormalization = .layerNorm) {
        self.imageSize = imageSize
        self.patchSize = patchSize
        self.embedDim = embedDim
        self.depth = depth
        self.heads = heads
        self.mlpRatio = mlpRatio
        self.channels = channels
        self.stopGradConv1 = stopGradConv1
        self.positionEmbedding = positionEmbedding
        self.pooling = pooling
        self.mlpNormalization = mlpNormalization
    }

    // MARK: Presets (width, depth, heads; 224 px, patch 16)

    public static let vitTiny = ViTConfig(embedDim: 192, depth: 12, heads: 3)
    /// 12 heads as in MoCo v3 `vits.py`, not timm's 6 (SPEC A.2).
    public static let vitSmall = ViTConfig(embedDim: 384, depth: 12, heads: 12)
    public static let vitBase = ViTConfig(embedDim: 768, depth: 12, heads: 12)
    public static let vitLarge = ViTConfig(embedDim: 1024, depth: 24, heads: 16)
    public static let vitHuge = ViTConfig(embedDim: 1280, depth: 32, heads: 16)

    /// The presets under the reference's `-a` architecture names.
    public static let presets: [(name: String, config: ViTConfig)] = [
        ("vit_tiny", vitTiny), ("vit_small", vitSmall), ("vit_base", vitBase),
        ("vit_large", vitLarge), ("vit_huge", vitHuge),
    ]

    /// The preset with the reference's architecture name (`vit_small`, …).
    public static func named(_ name: String) throws -> ViTConfig {
        guard let preset = presets.first(where: { $0.name == name }) else {
            let valid = presets.map(\.name).joined(separator: ", ")
            throw ModelConfigError("unknown ViT architecture '\(name)'; valid names: \(valid)")
        }
        return preset.config
    }

    // MARK: Derived sizes

    /// Patches per side.
    public var grid: Int { imageSize / patchSize }
    /// Patch tokens.
    public var patches: Int { grid * grid }
    /// N: the class token plus the patch tokens.
    public var tokens: Int { 1 + patches }
    /// D = C/H.
    public var headDim: Int { embedDim / heads }
    public var mlpHiddenDim: Int { mlpRatio * embedDim }

    /// Throws a ``ModelConfigError`` naming the first field that cannot build a model.
    public func validate() throws {
        let sizes = [("imageSize", imageSize), ("patchSize", patchSize), ("embedDim", embedDim),
                     ("depth", depth), ("heads", heads), ("mlpRatio", mlpRatio), ("channels", channels)]
        for (name, value) in sizes where value <= 0 {
            throw ModelConfigError("ViT \(name) must be positive, got \(value)")
        }
        guard imageSize % patchSize == 0 else {
            throw ModelConfigError("patch size \(patchSize) must divide the image size \(imageSize); "
                + "choose an image size that is a multiple of \(patchSize)")
        }
        guard embedDim % heads == 0 else {
            throw ModelConfigError("heads (\(heads)) must divide the width embedDim (\(embedDim))")
        }
        // The table splits C into four quarters: sin/cos of the row, sin/cos of the column (SPEC A.2).
        if positionEmbedding == .sinCos, embedDim % 4 != 0 {
            throw ModelConfigError("the 2-D sin-cos position embedding needs embedDim divisible by 4, got \(embedDim)")
        }
    }
}

/// MoCo v3 around a ViT: the projector (3 layers) and predictor (2 layers) widths and the loss
/// temperature (SPEC A.3, A.4; defaults are the reference's ViT settings).
public struct MoCoConfig: Equatable, Sendable {
    public var vit: ViTConfig
    /// `--moco-dim`: the projector's and predictor's output width.
    public var mocoDim: Int
    /// `--moco-mlp-dim`: the hidden width of both MLPs.
    public var mocoMLPDim: Int
    /// `--moco-t`: 0.2 in every ViT CONFIG command (the reference's default is 1.0, for R50).
    public var temperature: Double

    public init(vit: ViTConfig, mocoDim: Int = 256, mocoMLPDim: Int = 4096, temperature: Double = 0.2) {
        self.vit = vit
        self.mocoDim = mocoDim
        self.mocoMLPDim = mocoMLPDim
        self.temperature = temperature
    }

    public func validate() throws {
        try vit.validate()
        guard mocoDim > 0, mocoMLPDim > 0 else {
            throw ModelConfigError("mocoDim and mocoMLPDim must be positive, got \(mocoDim) and \(mocoMLPDim)")
        }
        guard temperature > 0, temperature.isFinite else {
            throw ModelConfigError("temperature must be a positive number, got \(temperature)")
        }
    }
}

extension ViTConfig {
    /// The command-line spellings of the paper's ablation options (`--pooling cls|avg`,
    /// `--pos-embed sincos|none`, `--vit-bn`), as the checkpoint metadata spells them.
    public mutating func setOptions(pooling: String, positionEmbedding: String, vitBN: Bool) throws {
        guard let chosenPooling = ["cls": Pooling.classToken, "avg": .globalAverage][pooling] else {
            throw ModelConfigError("--pooling must be cls or avg, got \(pooling)")
        }
        guard let chosenEmbedding = ["sincos": PositionEmbedding.sinCos, "none": .none][positionEmbedding] else {
            throw ModelConfigError("--pos-embed must be sincos or none, got \(positionEmbedding)")
        }
        self.pooling = chosenPooling
        self.positionEmbedding = chosenEmbedding
        mlpNormalization = vitBN ? .batchNorm : .layerNorm
    }
}
