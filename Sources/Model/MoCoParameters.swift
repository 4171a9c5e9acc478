import Tensors

/// Where every MoCo v3 tensor lives: one flat parameter buffer and one small BN-buffer buffer,
/// both under the reference's DDP checkpoint names (SPEC A.10), e.g.
/// `module.base_encoder.blocks.0.attn.qkv.weight`.
///
/// Parameter layout, three blocks in this order:
///
///     [ base_encoder | predictor | momentum_encoder ]
///       ^ trainableRegion: gradients and AdamW state ^   (frozen, the EMA target)
///
/// - The gradient and the AdamW moments cover the prefix `trainableRegion` (base + predictor); the
///   frozen tensors inside it (`pos_embed`, a stop-grad patch projection) are left out of
///   ``segmentTable()`` and simply have zero gradient slots.
/// - The momentum block is the base block with the same relative offsets (checked at build time),
///   so the EMA `ξ ← m·ξ + (1−m)·θ` (SPEC A.5) is one elementwise pass of
///   `baseEncoder` → `momentumEncoder`, and "copy the base encoder" at init is one copy.
/// - Within an encoder the tensors that can be frozen (`pos_embed`, `patch_embed.proj.*`) come
///   first, so the trainable tensors form one run up to the momentum block. Only names and shapes
///   are the reference's; checkpoint order is the writer's business.
///
/// BatchNorm running statistics are buffers, not parameters (SPEC A.5: neither copied nor EMA-ed),
/// so they live in ``buffers``: `running_mean` [F], `running_var` [F] and `num_batches_tracked` [],
/// the last kept as a Float (exact up to 2²⁴ forwards) and written as I64 by a checkpoint writer.
///
/// ViT-BN (``ViTConfig/MLPNormalization/batchNorm``): `blocks.{i}.norm2` keeps its `weight`/`bias`
/// names and shapes, now a BatchNorm's γ/β, and gains the three running buffers.
public struct MoCoParameters: Sendable {
    public static let baseEncoderPrefix = "module.base_encoder."
    public static let momentumEncoderPrefix = "module.momentum_encoder."
    public static let predictorPrefix = "module.predictor."

    /// One tensor of an encoder or the predictor, named relative to its module.
    struct Tensor {
        let name: String
        let shape: [Int]
        /// Frozen in the base encoder too (the momentum encoder is frozen whole).
        let frozen: Bool
    }

    /// A BatchNorm layer that has running statistics, named relative to its module.
    struct BatchNorm {
        let name: String
        let features: Int
    }

    public let config: MoCoConfig
    /// Every parameter, in three blocks (see the type's documentation).
    public let table: ParameterTable
    /// BN running statistics, also as base encoder | predictor | momentum encoder. Never trainable.
    public let buffers: ParameterTable
    public let baseEncoder: Range<Int>
    public let predictor: Range<Int>
    public let momentumEncoder: Range<Int>

    /// What gradients and optimizer state cover: the base encoder and predictor blocks.
    public var trainableRegion: Range<Int> { baseEncoder.lowerBound..<predictor.upperBound }

    /// Builds the tables; throws if `config` does not validate.
    public init(_ config: MoCoConfig) throws {
        try config.validate()
        self.config = config
        let encoder = Self.encoderTensors(config)
        let head = Self.predictorTensors(config)

        var table = ParameterTable()
        for tensor in encoder {
            table.add(Self.baseEncoderPrefix + tensor.name, shape: tensor.shape, trainable: !tensor.frozen)
        }
        let baseEnd = table.count
        for tensor in head { table.add(Self.predictorPrefix + tensor.name, shape: tensor.shape) }
        let predictorEnd = table.count
        for tensor in encoder {
            table.add(Self.momentumEncoderPrefix + tensor.name, shape: tensor.shape, trainable: false)
        }
        self.table = table
        baseEncoder = 0..<baseEnd
        predictor = baseEnd..<predictorEnd
        momentumEncoder = predictorEnd..<table.count

        // The one-pass EMA relies on this; entries are padded per tensor, so it holds by
        // construction, and a change to ParameterTable that broke it should stop here.
        precondition(momentumEncoder.count == baseEncoder.count, "momentum block size differs from base block")
        for tensor in encoder {
            let base = table[Self.baseEncoderPrefix + tensor.name]!
            let momentum = table[Self.momentumEncoderPrefix + tensor.name]!
            precondition(momentum.offset - momentumEncoder.lowerBound == base.offset - baseEncoder.lowerBound
                && momentum.shape == base.shape, "momentum tensor \(tensor.name) is not aligned with the base")
        }

        var buffers = ParameterTable()
        func addBuffers(_ prefix: String, _ norms: [BatchNorm]) {
            for norm in norms {
                buffers.add(prefix + norm.name + ".running_mean", shape: [norm.features], trainable: false)
                buffers.add(prefix + norm.name + ".running_var", shape: [norm.features], trainable: false)
                buffers.add(prefix + norm.name + ".num_batches_tracked", shape: [], trainable: false)
            }
        }
        addBuffers(Self.baseEncoderPrefix, Self.encoderBatchNorms(config))
        addBuffers(Self.predictorPrefix, Self.predictorBatchNorms(config))
        addBuffers(Self.momentumEncoderPrefix, Self.encoderBatchNorms(config))
        self.buffers = buffers
    }

    /// The trainable tensors as optimizer segments, in layout order. `adapted` marks ndim > 1, the
    /// tensors that LARS decays and trust-scales (SPEC A.6); AdamW treats all alike.
    public func segmentTable() -> SegmentTable {
        SegmentTable(table.entries.filter(\.trainable).map {
            SegmentTable.Segment(offset: $0.offset, count: $0.count, adapted: $0.shape.count > 1)
        })
    }

    /// The momentum-encoder entry that mirrors a base-encoder entry (nil for anything else).
    public func momentumCounterpart(of entry: ParameterTable.Entry) -> ParameterTable.Entry? {
        guard entry.name.hasPrefix(Self.baseEncoderPrefix) else { return nil }
        return table[Self.momentumEncoderPrefix + entry.name.dropFirst(Self.baseEncoderPrefix.count)]
    }

    // MARK: Tensor lists (SPEC A.2, A.3, A.10)

    /// One encoder: ViT trunk, then the 3-layer projector `head` (Sequential indices 0 Linear,
    /// 1 BN, 2 ReLU, 3 Linear, 4 BN, 5 ReLU, 6 Linear, 7 affine-free BN: no parameters).
    static func encoderTensors(_ config: MoCoConfig) -> [Tensor] {
        let vit = config.vit
        let (C, P, hidden) = (vit.embedDim, vit.patchSize, vit.mlpHiddenDim)
        var tensors: [Tensor] = []
        // Frozen-capable tensors first (see the type's documentation).
        if vit.positionEmbedding == .sinCos {
            tensors.append(Tensor(name: "pos_embed", shape: [1, vit.tokens, C], frozen: true))
        }
        tensors.append(Tensor(name: "patch_embed.proj.weight", shape: [C, vit.channels, P, P], frozen: vit.stopGradConv1))
        tensors.append(Tensor(name: "patch_embed.proj.bias", shape: [C], frozen: vit.stopGradConv1))
        tensors.append(Tensor(name: "cls_token", shape: [1, 1, C], frozen: false))
        // nn.Linear weights are [out, in]; qkv rows are [Q; K; V], each head-major (SPEC A.2).
        let block: [(String, [Int])] = [
            ("norm1.weight", [C]), ("norm1.bias", [C]),
            ("attn.qkv.weight", [3 * C, C]), ("attn.qkv.bias", [3 * C]),
            ("attn.proj.weight", [C, C]), ("attn.proj.bias", [C]),
            ("norm2.weight", [C]), ("norm2.bias", [C]),
            ("mlp.fc1.weight", [hidden, C]), ("mlp.fc1.bias", [hidden]),
            ("mlp.fc2.weight", [C, hidden]), ("mlp.fc2.bias", [C]),
        ]
        for index in 0..<vit.depth {
            tensors += block.map { Tensor(name: "blocks.\(index).\($0.0)", shape: $0.1, frozen: false) }
        }
        tensors.append(Tensor(name: "norm.weight", shape: [C], frozen: false))
        tensors.append(Tensor(name: "norm.bias", shape: [C], frozen: false))
        let (h, d) = (config.mocoMLPDim, config.mocoDim)
        // Linears have no bias (SPEC A.3); BN γ/β only on the hidden layers.
        let projector: [(String, [Int])] = [
            ("head.0.weight", [h, C]), ("head.1.weight", [h]), ("head.1.bias", [h]),
            ("head.3.weight", [h, h]), ("head.4.weight", [h]), ("head.4.bias", [h]),
            ("head.6.weight", [d, h]),
        ]
        tensors += projector.map { Tensor(name: $0.0, shape: $0.1, frozen: false) }
        return tensors
    }

    /// The 2-layer predictor (0 Linear, 1 BN, 2 ReLU, 3 Linear, 4 affine-free BN).
    static func predictorTensors(_ config: MoCoConfig) -> [Tensor] {
        let (h, d) = (config.mocoMLPDim, config.mocoDim)
        return [("0.weight", [h, d]), ("1.weight", [h]), ("1.bias", [h]), ("3.weight", [d, h])]
            .map { Tensor(name: $0.0, shape: $0.1, frozen: false) }
    }

    static func encoderBatchNorms(_ config: MoCoConfig) -> [BatchNorm] {
        var norms: [BatchNorm] = []
        if config.vit.mlpNormalization == .batchNorm {
            norms += (0..<config.vit.depth).map { BatchNorm(name: "blocks.\($0).norm2", features: config.vit.embedDim) }
        }
        return norms + [BatchNorm(name: "head.1", features: config.mocoMLPDim),
                        BatchNorm(name: "head.4", features: config.mocoMLPDim),
                        BatchNorm(name: "head.7", features: config.mocoDim)]
    }

    static func predictorBatchNorms(_ config: MoCoConfig) -> [BatchNorm] {
        [BatchNorm(name: "1", features: config.mocoMLPDim), BatchNorm(name: "4", features: config.mocoDim)]
    }
}
