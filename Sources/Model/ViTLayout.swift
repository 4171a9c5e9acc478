import Tensors

/// A ViT trunk on its own, under timm's names (`cls_token`, `pos_embed`, `patch_embed.proj.*`,
/// `blocks.N.*`, `norm.*`): the backbone of the linear probe and of fine-tuning, and what
/// `convert_to_deit.py` makes of a pre-training checkpoint (SPEC A.10). Same tensors, shapes,
/// order and alignment as the base encoder's trunk in ``MoCoParameters``, so the backbone code
/// reads either through a name lookup.
///
/// - `table`: every trunk parameter. `trainable` marks what fine-tuning updates: everything but
///   the position embedding (the fixed sin-cos table of MoCo v3, frozen as in pre-training;
///   timm's learned one trains in DeiT, and a file of it is loaded as values either way).
/// - `buffers`: ViT-BN's `blocks.N.norm2.running_mean`/`running_var`/`num_batches_tracked`.
public struct ViTLayout: Sendable {
    public let config: ViTConfig
    public let table: ParameterTable
    public let buffers: ParameterTable

    public init(_ config: ViTConfig) throws {
        try config.validate()
        self.config = config
        var trunkConfig = config
        trunkConfig.stopGradConv1 = false
        let moco = MoCoConfig(vit: trunkConfig, mocoDim: 1, mocoMLPDim: 1)
        var table = ParameterTable()
        for tensor in MoCoParameters.encoderTensors(moco) where !tensor.name.hasPrefix("head.") {
            table.add(tensor.name, shape: tensor.shape, trainable: tensor.name != "pos_embed")
        }
        self.table = table
        var buffers = ParameterTable()
        for norm in MoCoParameters.encoderBatchNorms(moco) where !norm.name.hasPrefix("head.") {
            buffers.add(norm.name + ".running_mean", shape: [norm.features], trainable: false)
            buffers.add(norm.name + ".running_var", shape: [norm.features], trainable: false)
            buffers.add(norm.name + ".num_batches_tracked", shape: [], trainable: false)
        }
        self.buffers = buffers
    }

    /// The trunk's values at initialisation: exactly the base encoder's trunk of
    /// ``MoCoParameters/initialValues(seed:)`` for the same `seed` (each tensor draws from a
    /// stream of the seed and its reference name), so `--random-init` sees the network that
    /// pre-training started from.
    public func initialValues(seed: UInt64) throws -> (parameters: [Float], buffers: [Float]) {
        let moco = try MoCoParameters(MoCoConfig(vit: config, mocoDim: 1, mocoMLPDim: 1))
        let values = moco.initialValues(seed: seed)
        return try baseEncoderTrunk(of: moco, parameters: values.parameters, buffers: values.buffers)
    }

    /// The base encoder's trunk out of a MoCo model's flat values (what `convert_to_deit.py` keeps).
    public func baseEncoderTrunk(of moco: MoCoParameters, parameters: [Float], buffers bufferValues: [Float]) throws
        -> (parameters: [Float], buffers: [Float]) {
        (try gather(parameters, from: moco.table, prefix: MoCoParameters.baseEncoderPrefix, into: table),
         try gather(bufferValues, from: moco.buffers, prefix: MoCoParameters.baseEncoderPrefix, into: buffers))
    }

    /// This layout's tensors read from a flat buffer of `source` (names there: `prefix` + ours).
    func gather(_ values: [Float], from source: ParameterTable, prefix: String, into target: ParameterTable) throws -> [Float] {
        var result = [Float](repeating: 0, count: target.count)
        for entry in target.entries {
            guard let from = source[prefix + entry.name], from.shape == entry.shape else {
                throw ModelConfigError("no tensor \(prefix + entry.name) of shape \(entry.shape) in the source layout")
            }
            result.replaceSubrange(entry.offset..<(entry.offset + entry.count), with: values[from.offset..<(from.offset + from.count)])
        }
        return result
    }

    /// The trainable tensors as optimizer segments (`adapted`: ndim > 1, as ``MoCoParameters/segmentTable()``).
    public func segmentTable() -> SegmentTable {
        SegmentTable(table.entries.filter(\.trainable).map {
            SegmentTable.Segment(offset: $0.offset, count: $0.count, adapted: $0.shape.count > 1)
        })
    }
}

extension Backend {
    /// A 1-D tensor holding `values`, of one unused element when `values` is empty (a trunk
    /// without ViT-BN has no buffers, and a device cannot allocate or upload nothing).
    public func makeFlatTensor(_ values: [Float]) throws -> Tensor {
        try makeTensor(values.isEmpty ? [0] : values, shape: [max(values.count, 1)])
    }
}
