import Tensors

/// Views of one encoder's ViT trunk inside the flat parameter tensor (SPEC A.2, A.10 names).
/// The base and the momentum encoder are two of these over different blocks of the same buffer.
struct BackboneWeights {
    struct Block {
        let norm1Weight: Tensor, norm1Bias: Tensor   // (C)
        let qkvWeight: Tensor, qkvBias: Tensor       // (3C, C), (3C): rows [Q; K; V], head-major
        let projWeight: Tensor, projBias: Tensor     // (C, C), (C)
        let norm2Weight: Tensor, norm2Bias: Tensor   // (C)  LayerNorm, or ViT-BN's BatchNorm γ/β
        /// ViT-BN only (nil for LayerNorm, and in gradient views): norm2's running statistics.
        let norm2Statistics: BatchNormStatistics?
        let fc1Weight: Tensor, fc1Bias: Tensor       // (4C, C), (4C)
        let fc2Weight: Tensor, fc2Bias: Tensor       // (C, 4C), (C)
    }

    let positionEmbedding: Tensor?                   // (1, N, C), row 0 zero; nil without pos_embed
    let patchWeight: Tensor, patchBias: Tensor       // (C, 3, P, P), (C)
    let classToken: Tensor                           // (1, 1, C)
    let blocks: [Block]
    let normWeight: Tensor, normBias: Tensor         // (C)

    /// - Parameters:
    ///   - parameter: the view of a tensor named relative to the encoder (`blocks.0.norm1.weight`).
    ///   - buffer: the view of a BN buffer named likewise (`blocks.0.norm2.running_mean`); needed
    ///     by a ViT-BN forward, nil for views of the gradient.
    init(config: ViTConfig, parameter: (String) throws -> Tensor, buffer: ((String) throws -> Tensor)? = nil) throws {
        positionEmbedding = config.positionEmbedding == .sinCos ? try parameter("pos_embed") : nil
        patchWeight = try parameter("patch_embed.proj.weight")
        patchBias = try parameter("patch_embed.proj.bias")
        classToken = try parameter("cls_token")
        blocks = try (0..<config.depth).map { index in
            func p(_ name: String) throws -> Tensor { try parameter("blocks.\(index).\(name)") }
            return Block(norm1Weight: try p("norm1.weight"), norm1Bias: try p("norm1.bias"),
                         qkvWeight: try p("attn.qkv.weight"), qkvBias: try p("attn.qkv.bias"),
                         projWeight: try p("attn.proj.weight"), projBias: try p("attn.proj.bias"),
                         norm2Weight: try p("norm2.weight"), norm2Bias: try p("norm2.bias"),
                         norm2Statistics: try buffer.flatMap { buffer in
                             config.mlpNormalization == .batchNorm
                                 ? try BatchNormStatistics(prefix: "blocks.\(index).norm2", buffer: buffer) : nil
                         },
                         fc1Weight: try p("mlp.fc1.weight"), fc1Bias: try p("mlp.fc1.bias"),
                         fc2Weight: try p("mlp.fc2.weight"), fc2Bias: try p("mlp.fc2.bias"))
        }
        normWeight = try parameter("norm.weight")
        normBias = try parameter("norm.bias")
    }
}

/// Views of one BatchNorm's running buffers (`running_mean`, `running_var`, `num_batches_tracked`),
/// for the heads' BNs and ViT-BN's norm2 alike. ViT-BN uses the heads' ε and momentum
/// (`nn.BatchNorm1d`'s defaults): the paper (Sec 6.1) gives no values and the reference has no
/// ViT-BN code.
struct BatchNormStatistics {
    let mean: Tensor                // (F)
    let variance: Tensor            // (F)
    let batchesTracked: Tensor      // (1)  kept as a Float (MoCoParameters)

    /// - Parameter prefix: the BN's name relative to its module (`head.1`, `blocks.0.norm2`).
    init(prefix: String, buffer: (String) throws -> Tensor) throws {
        mean = try buffer(prefix + ".running_mean")
        variance = try buffer(prefix + ".running_var")
        batchesTracked = try buffer(prefix + ".num_batches_tracked").reshaped([1])
    }
}

/// Everything one trunk forward writes, kept for the backward (llm.c's `ActivationTensors`).
/// Allocated once for a batch size and overwritten by every call.
public struct BackboneActivations {
    public struct Block {
        public let norm1: Tensor           // (B, N, C)  LN1 output
        public let norm1Mean: Tensor       // (B, N)
        public let norm1ReciprocalStd: Tensor // (B, N)
        public let qkv: Tensor             // (B, N, 3C)
        public let attention: Tensor       // (B, N, C)  heads concatenated, before proj
        public let logSumExp: Tensor       // (B, H, N)
        public let afterAttention: Tensor  // (B, N, C)  residual stream after x + proj(attn)
        public let norm2: Tensor           // (B, N, C)  norm2 output
        public let norm2Mean: Tensor       // (B, N) LayerNorm per token; (C) ViT-BN per channel
        public let norm2ReciprocalStd: Tensor // (B, N) LayerNorm; (C) ViT-BN
        public let fc1: Tensor             // (B, N, 4C) pre-activation
        public let gelu: Tensor            // (B, N, 4C)
        public let output: Tensor          // (B, N, C)  residual stream after the MLP
    }

    /// Patch tokens with the class token in row 0, plus pos_embed: block 0's input.
    public let embedded: Tensor            // (B, N, C)
    public let blocks: [Block]
    public let normMean: Tensor            // (B, N)
    public let normReciprocalStd: Tensor   // (B, N)
    /// The final LayerNorm's output; with class-token pooling the feature is row 0 of every
    /// image, read in place.
    public let normalized: Tensor          // (B, N, C)
    /// Global average pooling only: the mean of `normalized` over the patch rows 1…N−1.
    public let pooled: Tensor?             // (B, C)

    /// The feature the heads read: (B, C) rows at stride ``featureStride`` (the cls rows of
    /// `normalized`, or `pooled`).
    public var feature: Tensor { pooled ?? normalized }
    public var featureStride: Int { pooled == nil ? normalized.shape[1] * normalized.shape[2] : normalized.shape[2] }

    init(backend: any Backend, config: ViTConfig, batchSize B: Int) throws {
        let (N, C, H, hidden) = (config.tokens, config.embedDim, config.heads, config.mlpHiddenDim)
        func make(_ shape: [Int]) throws -> Tensor { try backend.makeTensor(shape: shape) }
        embedded = try make([B, N, C])
        let norm2Statistics = config.mlpNormalization == .layerNorm ? [B, N] : [C]
        blocks = try (0..<config.depth).map { _ in
            Block(norm1: try make([B, N, C]), norm1Mean: try make([B, N]), norm1ReciprocalStd: try make([B, N]),
                  qkv: try make([B, N, 3 * C]), attention: try make([B, N, C]), logSumExp: try make([B, H, N]),
                  afterAttention: try make([B, N, C]),
                  norm2: try make([B, N, C]), norm2Mean: try make(norm2Statistics),
                  norm2ReciprocalStd: try make(norm2Statistics),
                  fc1: try make([B, N, hidden]), gelu: try make([B, N, hidden]), output: try make([B, N, C]))
        }
        normMean = try make([B, N])
        normReciprocalStd = try make([B, N])
        normalized = try make([B, N, C])
        pooled = config.pooling == .globalAverage ? try make([B, C]) : nil
    }
}

/// Stochastic depth (Huang et al. 2016, timm's `DropPath`): per block and branch, a (B) tensor of
/// per-sample factors `mask/(1 − p)` multiplying the branch before its residual add, in the
/// forward and (the same factors) the backward. nil for a block whose rate is 0.
public struct DropPath {
    public let attention: [Tensor?]
    public let mlp: [Tensor?]

    public init(attention: [Tensor?], mlp: [Tensor?]) {
        self.attention = attention
        self.mlp = mlp
    }
}

/// The ViT trunk's forward (timm `VisionTransformer.forward_features` as SPEC A.2 describes it).
struct BackboneForward {
    let config: ViTConfig
    let batchSize: Int
    /// LayerNorm ε everywhere in the trunk (SPEC A.2).
    static let layerNormEpsilon: Float = 1e-6
    /// (B, 1) of ones: the class token is written into row 0 of every image as ones·cls.
    let ones: Tensor
    /// (1) holding 1: ViT-BN's num_batches_tracked += 1 per training-mode forward.
    let one: Tensor
    /// Global average pooling only: (B, N−1) filled with 1/(N−1), one averaging row per image
    /// (a strided-batched GEMM reads row b for image b; the backward reads it as a column).
    let average: Tensor?
    /// (B, N, C) scratch for the proj and fc2 outputs before their residual add (not needed by the backward).
    let branch: Tensor
    /// ViT-BN's norm2: the backend's BN, or SyncBN across a data-parallel group.
    let batchNorm: BatchNormRunner

    init(backend: any Backend, config: ViTConfig, batchSize: Int, batchNorm: BatchNormRunner = BatchNormRunner()) throws {
        self.config = config
        self.batchSize = batchSize
        self.batchNorm = batchNorm
        ones = try backend.makeTensor([Float](repeating: 1, count: batchSize), shape: [batchSize, 1])
        one = try backend.makeTensor([Float(1)], shape: [1])
        let patches = config.tokens - 1
        average = config.pooling == .globalAverage
            ? try backend.makeTensor([Float](repeating: 1 / Float(patches), count: batchSize * patches),
                                     shape: [batchSize, patches])
            : nil
        branch = try backend.makeTensor(shape: [batchSize, config.tokens, config.embedDim])
    }

    /// `y (R, out) = x (R, in) · Wᵀ + b` (nn.Linear, weight (out, in)).
    static func linear(_ backend: any Backend, output: Tensor, input: Tensor, weight: Tensor, bias: Tensor?,
                       rows: Int, inputs: Int, outputs: Int) throws {
        try backend.gemm(GEMMShape(m: rows, n: outputs, k: inputs, transposeB: true), alpha: 1, a: input, b: weight,
                         beta: 0, c: output)
        if let bias { try backend.addBias(output.reshaped([rows, outputs]), bias: bias) }
    }

    /// images (B, 3, S, S) → `a.normalized` (B, N, C) and the feature `a.feature` (B, C): row 0
    /// of every image, or the mean of rows 1…N−1 into `a.pooled`.
    ///
    /// - Parameter training: ViT-BN only: normalize with this batch's statistics (over all B·N
    ///   tokens of the view) and update the running ones, or (false) with the running ones.
    ///   - dropPath: stochastic depth (fine-tuning only): per block, the per-sample factors
    ///     (keep/(1 − p), 0 when dropped) of the attention and the MLP branch; nil entries keep
    ///     the branch whole.
    func callAsFunction(_ backend: any Backend, images: Tensor, weights w: BackboneWeights,
                        activations a: BackboneActivations, training: Bool = true, dropPath: DropPath? = nil) throws {
        let (B, N, C) = (batchSize, config.tokens, config.embedDim)
        let (R, hidden) = (B * N, config.mlpHiddenDim)

        // Tokens [cls, patches] + pos_embed.
        try backend.patchEmbedForward(output: a.embedded, images: images, weight: w.patchWeight, bias: w.patchBias,
                                      patchSize: config.patchSize, firstToken: 1)
        var classRows = GEMMShape(m: B, n: C, k: 1)   // rows 0 of (B, N, C): ldc = N·C
        classRows.ldc = N * C
        try backend.gemm(classRows, alpha: 1, a: ones, b: w.classToken, beta: 0, c: a.embedded)
        if let positionEmbedding = w.positionEmbedding {
            try backend.addBias(a.embedded.reshaped([B, N * C]), bias: positionEmbedding)
        }

        var x = a.embedded
        for (index, (block, s)) in zip(w.blocks, a.blocks).enumerated() {
            // x = x + proj(attn(LN1(x)))
            try backend.layerNormForward(output: s.norm1, mean: s.norm1Mean, reciprocalStd: s.norm1ReciprocalStd,
                                         input: x, weight: block.norm1Weight, bias: block.norm1Bias,
                                         epsilon: Self.layerNormEpsilon)
            try Self.linear(backend, output: s.qkv, input: s.norm1, weight: block.qkvWeight, bias: block.qkvBias,
                            rows: R, inputs: C, outputs: 3 * C)
            try backend.attentionForward(output: s.attention, logSumExp: s.logSumExp, qkv: s.qkv, heads: config.heads)
            try Self.linear(backend, output: branch, input: s.attention, weight: block.projWeight,
                            bias: block.projBias, rows: R, inputs: C, outputs: C)
            if let factors = dropPath?.attention[index] {
                try backend.scaleRows(output: branch.reshaped([B, N * C]), input: branch.reshaped([B, N * C]), factors: factors)
            }
            try backend.add(output: s.afterAttention, x, branch)
            // x = x + fc2(GELU(fc1(norm2(x))))
            switch config.mlpNormalization {
            case .layerNorm:
                try backend.layerNormForward(output: s.norm2, mean: s.norm2Mean, reciprocalStd: s.norm2ReciprocalStd,
                                             input: s.afterAttention, weight: block.norm2Weight, bias: block.norm2Bias,
                                             epsilon: Self.layerNormEpsilon)
            case .batchNorm:
                // ViT-BN (paper Sec 6.1): BatchNorm over the B·N tokens of this view, per channel.
                guard let statistics = block.norm2Statistics else {
                    throw ModelConfigError("ViT-BN trunk without views of its norm2 running statistics")
                }
                try batchNorm.forward(backend, output: s.norm2.reshaped([R, C]), savedMean: s.norm2Mean,
                                             savedReciprocalStd: s.norm2ReciprocalStd,
                                             input: s.afterAttention.reshaped([R, C]), weight: block.norm2Weight,
                                             bias: block.norm2Bias, runningMean: statistics.mean,
                                             runningVariance: statistics.variance, momentum: MLPForward.normMomentum,
                                             epsilon: MLPForward.normEpsilon, training: training)
                if training { try backend.axpy(alpha: 1, x: one, y: statistics.batchesTracked) }
            }
            try Self.linear(backend, output: s.fc1, input: s.norm2, weight: block.fc1Weight, bias: block.fc1Bias,
                            rows: R, inputs: C, outputs: hidden)
            try backend.gelu(output: s.gelu, input: s.fc1)
            try Self.linear(backend, output: branch, input: s.gelu, weight: block.fc2Weight, bias: block.fc2Bias,
                            rows: R, inputs: hidden, outputs: C)
            if let factors = dropPath?.mlp[index] {
                try backend.scaleRows(output: branch.reshaped([B, N * C]), input: branch.reshaped([B, N * C]), factors: factors)
            }
            try backend.add(output: s.output, s.afterAttention, branch)
            x = s.output
        }
        // The final LN runs over every token, as timm does; then the pooling reads its output.
        try backend.layerNormForward(output: a.normalized, mean: a.normMean, reciprocalStd: a.normReciprocalStd,
                                     input: x, weight: w.normWeight, bias: w.normBias, epsilon: Self.layerNormEpsilon)
        if let pooled = a.pooled, let average {
            // Global average pooling: pooled[b] (1, C) = average[b] (1, N−1) · normalized[b, 1…N−1] (N−1, C).
            // The final LN is kept and applied before the mean (see ViTConfig.Pooling.globalAverage).
            var shape = GEMMShape(m: 1, n: C, k: N - 1, batch: B)
            shape.strideB = N * C
            try backend.gemm(shape, alpha: 1, a: average, b: a.normalized.view(offset: C, shape: [B * N * C - C]),
                             beta: 0, c: pooled)
        }
    }
}
