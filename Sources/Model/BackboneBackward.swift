import Tensors

/// Gradient scratch of the ViT trunk for one view, allocated once and reused by both views.
struct BackboneGradients {
    let residual: Tensor      // (B, N, C) ∂loss/∂(residual stream) at the current point
    let branch: Tensor        // (B, N, C) a LayerNorm's input gradient before the residual add
    let normalized: Tensor    // (B, N, C) ∂loss/∂(norm output) / ∂(attention output); the final LN's
                              //           output gradient (nonzero only in the cls rows; with global average
                              //           pooling everywhere but row 0)
    let qkv: Tensor           // (B, N, 3C)
    let gelu: Tensor          // (B, N, 4C) ∂loss/∂(GELU output)
    let fc1: Tensor           // (B, N, 4C) ∂loss/∂(fc1 output)
    /// Global average pooling only: ∂loss/∂(pooled feature).
    let pooled: Tensor?       // (B, C)

    /// Where the projector's backward writes ∂loss/∂feature, at row stride ``featureStride``:
    /// the cls rows of `normalized` (the caller zeroes it first), or `pooled`.
    var feature: Tensor { pooled ?? normalized }
    var featureStride: Int { pooled == nil ? normalized.shape[1] * normalized.shape[2] : normalized.shape[2] }

    init(backend: any Backend, config: ViTConfig, batchSize B: Int) throws {
        let (N, C, hidden) = (config.tokens, config.embedDim, config.mlpHiddenDim)
        func make(_ shape: [Int]) throws -> Tensor { try backend.makeTensor(shape: shape) }
        residual = try make([B, N, C])
        branch = try make([B, N, C])
        normalized = try make([B, N, C])
        qkv = try make([B, N, 3 * C])
        gelu = try make([B, N, hidden])
        fc1 = try make([B, N, hidden])
        pooled = config.pooling == .globalAverage ? try make([B, C]) : nil
    }
}

/// The trunk's backward, in exact reverse order of ``BackboneForward``.
struct BackboneBackward {
    let config: ViTConfig
    let batchSize: Int
    /// (B, 1) of ones (shared with the forward): cls_token's gradient is onesᵀ·(row 0 of every image).
    let ones: Tensor
    /// (B, N−1) of 1/(N−1) (shared with the forward), global average pooling only.
    let average: Tensor?

    let batchNorm: BatchNormRunner

    init(config: ViTConfig, batchSize: Int, forward: BackboneForward) {
        self.config = config
        self.batchSize = batchSize
        batchNorm = forward.batchNorm
        ones = forward.ones
        average = forward.average
    }

    /// nn.Linear backward for y (R, out) = x (R, in)·Wᵀ + b: dW += dyᵀ·x, db += Σ_r dy (accumulate),
    /// dx = dy·W (overwrite).
    static func linearBackward(_ backend: any Backend, inputGradient: Tensor, weightGradient: Tensor,
                               biasGradient: Tensor, outputGradient: Tensor, input: Tensor, weight: Tensor,
                               rows: Int, inputs: Int, outputs: Int) throws {
        try backend.gemm(GEMMShape(m: outputs, n: inputs, k: rows, transposeA: true), alpha: 1, a: outputGradient,
                         b: input, beta: 1, c: weightGradient)
        try backend.sumRows(output: biasGradient, input: outputGradient.reshaped([rows, outputs]))
        try backend.gemm(GEMMShape(m: rows, n: inputs, k: outputs), alpha: 1, a: outputGradient, b: weight,
                         beta: 0, c: inputGradient)
    }

    /// Reads ∂loss/∂feature from `g.feature`; accumulates every trunk
    /// parameter gradient into `gradients` except pos_embed (frozen) and, with stop_grad_conv1,
    /// the patch projection.
    func callAsFunction(_ backend: any Backend, images: Tensor, weights w: BackboneWeights,
                        gradients dw: BackboneWeights, activations a: BackboneActivations,
                        scratch g: BackboneGradients, dropPath: DropPath? = nil,
                        finished: ((Part) throws -> Void)? = nil) throws {
        let (B, N, C) = (batchSize, config.tokens, config.embedDim)
        let (R, hidden) = (B * N, config.mlpHiddenDim)
        let blockInputs = [a.embedded] + a.blocks.dropLast().map(\.output)

        if let pooledGradient = g.pooled, let average {
            // Pooling backward: ∂normalized[b, n] = ∂pooled[b] / (N−1) for n ≥ 1, row 0 zero:
            // (N−1, C) = average[b] as a column (N−1, 1) · ∂pooled[b] (1, C).
            try backend.fill(g.normalized, value: 0)
            var shape = GEMMShape(m: N - 1, n: C, k: 1, batch: B)
            shape.strideC = N * C
            try backend.gemm(shape, alpha: 1, a: average, b: pooledGradient, beta: 0,
                             c: g.normalized.view(offset: C, shape: [B * N * C - C]))
        }
        try backend.layerNormBackward(inputGradient: g.residual, weightGradient: dw.normWeight,
                                      biasGradient: dw.normBias, outputGradient: g.normalized,
                                      input: a.blocks.last?.output ?? a.embedded, mean: a.normMean,
                                      reciprocalStd: a.normReciprocalStd, weight: w.normWeight)
        try finished?(.norm)
        for index in stride(from: w.blocks.count - 1, through: 0, by: -1) {
            let (block, blockGradient, s) = (w.blocks[index], dw.blocks[index], a.blocks[index])
            // x = x + fc2(GELU(fc1(LN2(x)))): g.residual is ∂loss/∂(block output); the branch's
            // gradient is it times the drop-path factors, when there are any.
            var branchGradient = g.residual
            if let factors = dropPath?.mlp[index] {
                try backend.scaleRows(output: g.branch.reshaped([B, N * C]), input: g.residual.reshaped([B, N * C]),
                                      factors: factors)
                branchGradient = g.branch
            }
            try Self.linearBackward(backend, inputGradient: g.gelu, weightGradient: blockGradient.fc2Weight,
                                    biasGradient: blockGradient.fc2Bias, outputGradient: branchGradient, input: s.gelu,
                                    weight: block.fc2Weight, rows: R, inputs: hidden, outputs: C)
            try backend.geluBackward(inputGradient: g.fc1, outputGradient: g.gelu, input: s.fc1)
            try Self.linearBackward(backend, inputGradient: g.normalized, weightGradient: blockGradient.fc1Weight,
                                    biasGradient: blockGradient.fc1Bias, outputGradient: g.fc1, input: s.norm2,
                                    weight: block.fc1Weight, rows: R, inputs: C, outputs: hidden)
            switch config.mlpNormalization {
            case .layerNorm:
                try backend.layerNormBackward(inputGradient: g.branch, weightGradient: blockGradient.norm2Weight,
                                              biasGradient: blockGradient.norm2Bias, outputGradient: g.normalized,
                                              input: s.afterAttention, mean: s.norm2Mean,
                                              reciprocalStd: s.norm2ReciprocalStd, weight: block.norm2Weight)
            case .batchNorm:
                // Training-mode BN: the batch statistics depend on every token of the view.
                try batchNorm.backward(backend, inputGradient: g.branch.reshaped([R, C]),
                                              weightGradient: blockGradient.norm2Weight,
                                              biasGradient: blockGradient.norm2Bias,
                                              outputGradient: g.normalized.reshaped([R, C]),
                                              input: s.afterAttention.reshaped([R, C]), savedMean: s.norm2Mean,
                                              savedReciprocalStd: s.norm2ReciprocalStd, weight: block.norm2Weight)
            }
            try backend.add(output: g.residual, g.residual, g.branch)
            // x = x + proj(attn(LN1(x))): g.residual is now ∂loss/∂(afterAttention).
            branchGradient = g.residual
            if let factors = dropPath?.attention[index] {
                try backend.scaleRows(output: g.branch.reshaped([B, N * C]), input: g.residual.reshaped([B, N * C]),
                                      factors: factors)
                branchGradient = g.branch
            }
            try Self.linearBackward(backend, inputGradient: g.normalized, weightGradient: blockGradient.projWeight,
                                    biasGradient: blockGradient.projBias, outputGradient: branchGradient,
                                    input: s.attention, weight: block.projWeight, rows: R, inputs: C, outputs: C)
            try backend.attentionBackward(qkvGradient: g.qkv, outputGradient: g.normalized, qkv: s.qkv,
                                          output: s.attention, logSumExp: s.logSumExp, heads: config.heads)
            try Self.linearBackward(backend, inputGradient: g.normalized, weightGradient: blockGradient.qkvWeight,
                                    biasGradient: blockGradient.qkvBias, outputGradient: g.qkv, input: s.norm1,
                                    weight: block.qkvWeight, rows: R, inputs: C, outputs: 3 * C)
            try backend.layerNormBackward(inputGradient: g.branch, weightGradient: blockGradient.norm1Weight,
                                          biasGradient: blockGradient.norm1Bias, outputGradient: g.normalized,
                                          input: blockInputs[index], mean: s.norm1Mean,
                                          reciprocalStd: s.norm1ReciprocalStd, weight: block.norm1Weight)
            try backend.add(output: g.residual, g.residual, g.branch)
            try finished?(.block(index))
        }
        // g.residual = ∂loss/∂embedded. pos_embed is frozen (SPEC A.2): no gradient.
        // cls_token (1, 1, C) += Σ_b row 0 of image b: onesᵀ (1, B) · rows 0 (B, C) at ld N·C.
        var classRows = GEMMShape(m: 1, n: C, k: B, transposeA: true)
        classRows.ldb = N * C
        try backend.gemm(classRows, alpha: 1, a: ones, b: g.residual, beta: 1, c: dw.classToken)
        if !config.stopGradConv1 {
            try backend.patchEmbedBackward(weightGradient: dw.patchWeight, biasGradient: dw.patchBias,
                                           outputGradient: g.residual, images: images, patchSize: config.patchSize,
                                           firstToken: 1)
        }
        try finished?(.embedding)
    }

    /// A part of the trunk whose weight gradients a backward has just finished writing, in the
    /// order it finishes them (data parallel starts reducing them while the rest runs).
    enum Part {
        case norm, block(Int)
        /// `cls_token` and the patch projection (and the frozen `pos_embed` before them).
        case embedding
    }
}
