/// Element counts of a MoCo v3 model, as the reference reports them (no alignment padding).
public struct ParameterCounts: Equatable, Sendable {
    /// The ViT trunk without `head`, *including* the frozen `pos_embed`: timm's and SPEC A.2's
    /// convention (ViT-S/16: 21.67 M = 21,665,664; ViT-B/16: 85.80 M).
    public let backbone: Int
    /// The 3-layer projection MLP (`head`; ViT-S 19.42 M, SPEC A.3).
    public let projector: Int
    /// The 2-layer prediction MLP (2.11 M at the default widths).
    public let predictor: Int
    /// What the optimizer updates: base encoder + predictor minus the frozen tensors (ViT-S with
    /// `--stop-grad-conv1`: 42.82 M, SPEC A.3).
    public let trainable: Int
    /// Every parameter, momentum copy included, buffers excluded (ViT-S: 84.27 M).
    public let total: Int
    /// BN running-statistics elements (`num_batches_tracked` counts 1 each).
    public let buffers: Int
}

/// Bytes a training step needs, by kind (fp32 throughout; the reference uses fp16 AMP).
public struct MemoryPlan: Equatable, Sendable {
    /// The whole flat parameter buffer: base, predictor and momentum blocks, with padding.
    public let parameterBytes: Int
    /// Gradients over `trainableRegion` (frozen slots included, they stay zero).
    public let gradientBytes: Int
    /// AdamW's two moments over `trainableRegion`.
    public let optimizerStateBytes: Int
    /// BN running statistics.
    public let bufferBytes: Int
    /// Activations saved for the backward pass, both views (see ``MoCoParameters/memoryPlan(batchSize:)``).
    public let activationBytes: Int
    /// The largest transient: one block's attention probabilities for both views, B·2·H·N²,
    /// an upper bound that a fused (log-sum-exp) attention does not need.
    public let attentionScratchBytes: Int

    public var totalBytes: Int {
        parameterBytes + gradientBytes + optimizerStateBytes + bufferBytes + activationBytes + attentionScratchBytes
    }
}

extension MoCoParameters {
    public var counts: ParameterCounts {
        func sum(_ entries: some Sequence<ParameterTable.Entry>) -> Int { entries.reduce(0) { $0 + $1.count } }
        let base = table.entries.filter { $0.name.hasPrefix(Self.baseEncoderPrefix) }
        let projector = sum(base.filter { $0.name.hasPrefix(Self.baseEncoderPrefix + "head.") })
        return ParameterCounts(
            backbone: sum(base) - projector,
            projector: projector,
            predictor: sum(table.entries.filter { $0.name.hasPrefix(Self.predictorPrefix) }),
            trainable: table.trainableCount,
            total: sum(table.entries),
            buffers: sum(buffers.entries))
    }

    /// Memory for one training step with `batchSize` images per view, in bytes (4 per float).
    ///
    /// Activations saved for backward, in floats, for the query path only (the momentum encoder
    /// runs without gradient and keeps nothing):
    /// - per block and token: block input C, LN1 output C and its mean/rstd 2, qkv 3C, attention
    ///   output C, the softmax log-sum-exp H, the residual after attention C, LN2 output C and its
    ///   mean/rstd 2, fc1 output r·C and GELU output r·C: `(8 + 2r)·C + H + 4`;
    /// - per image: the input image channels·S², then the final LN's input N·C and stats 2N;
    /// - heads per image: projector 2 hidden layers × (Linear, BN, ReLU outputs) of width h plus
    ///   (Linear, BN) of width d, predictor the same with one hidden layer: `9h + 4d`;
    /// all times batchSize × 2 views. The ablation options are left out of the formula (< 1 %):
    /// ViT-BN saves norm2 statistics per channel instead of per token, and global average pooling
    /// adds one (B, C) feature per view.
    public func memoryPlan(batchSize: Int) -> MemoryPlan {
        let vit = config.vit
        let (N, C, H, r) = (vit.tokens, vit.embedDim, vit.heads, vit.mlpRatio)
        let perToken = (8 + 2 * r) * C + H + 4
        let perImage = vit.depth * N * perToken
            + vit.channels * vit.imageSize * vit.imageSize + N * C + 2 * N
            + 9 * config.mocoMLPDim + 4 * config.mocoDim
        let images = batchSize * 2
        let float = MemoryLayout<Float>.size
        return MemoryPlan(
            parameterBytes: table.count * float,
            gradientBytes: trainableRegion.count * float,
            optimizerStateBytes: 2 * trainableRegion.count * float,
            bufferBytes: buffers.count * float,
            activationBytes: images * perImage * float,
            attentionScratchBytes: images * H * N * N * float)
    }
}
