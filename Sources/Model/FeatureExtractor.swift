import Tensors

/// The feature of one encoder's ViT trunk for batches of images: the final-LN cls row (SPEC
/// A.2), or with ``ViTConfig/Pooling/globalAverage`` the mean of the final-LN patch rows. What the
/// kNN evaluation and the linear probe read.
///
/// It reads the weights in place from a flat parameter tensor in ``MoCoParameters``' layout
/// (usually a ``MoCoModel``'s, so it always sees the current weights) and owns only its
/// activations, sized for `batchSize`. A ViT-BN trunk runs its BatchNorms in evaluation mode on
/// the running statistics (read in place from the buffer tensor; nothing is updated), so in
/// every configuration the images are independent and a short final batch can be padded without
/// changing the other rows.
public final class FeatureExtractor {
    public let backend: any Backend
    public let batchSize: Int
    public let config: ViTConfig
    let weights: BackboneWeights
    let activations: BackboneActivations
    let forward: BackboneForward
    let images: Tensor
    /// (B, C): the gathered class-token rows of ``featureTensor(of:count:)``.
    let rows: Tensor
    /// (1, 1) holding 1, the gather's A.
    let unit: Tensor

    /// - Parameters:
    ///   - parameterTensor: the flat parameters of `layout` on `backend`.
    ///   - bufferTensor: the flat BN buffers of `layout` on `backend`; required for a ViT-BN trunk
    ///     (its norm2 running statistics), unused otherwise.
    ///   - encoderPrefix: ``MoCoParameters/baseEncoderPrefix`` (the default; the features the
    ///     paper evaluates) or ``MoCoParameters/momentumEncoderPrefix``.
    public convenience init(layout: MoCoParameters, parameterTensor: Tensor, bufferTensor: Tensor? = nil,
                            backend: any Backend, batchSize: Int,
                            encoderPrefix: String = MoCoParameters.baseEncoderPrefix) throws {
        try self.init(config: layout.config.vit, table: layout.table, buffers: layout.buffers, prefix: encoderPrefix,
                      parameterTensor: parameterTensor, bufferTensor: bufferTensor, backend: backend, batchSize: batchSize)
    }

    /// The trunk of a ``ViTLayout`` (the linear probe's and fine-tuning's backbone).
    public convenience init(layout: ViTLayout, parameterTensor: Tensor, bufferTensor: Tensor? = nil,
                            backend: any Backend, batchSize: Int) throws {
        try self.init(config: layout.config, table: layout.table, buffers: layout.buffers, prefix: "",
                      parameterTensor: parameterTensor, bufferTensor: bufferTensor, backend: backend, batchSize: batchSize)
    }

    /// The evaluation-mode view of a trainable trunk: the same weights, activations and batch, so
    /// evaluating between training steps allocates nothing (it overwrites the activations the
    /// next step's forward rewrites anyway).
    public init(sharing trunk: ViTTrunk) {
        config = trunk.layout.config
        backend = trunk.backend
        batchSize = trunk.batchSize
        weights = trunk.weights
        activations = trunk.activations
        forward = trunk.forwardPass
        images = trunk.images
        rows = trunk.rows
        unit = trunk.unit
    }

    /// - Parameters:
    ///   - table, buffers: where the trunk's tensors (named `prefix` + timm name) lie in
    ///     `parameterTensor` and `bufferTensor`.
    init(config: ViTConfig, table: ParameterTable, buffers: ParameterTable, prefix: String, parameterTensor: Tensor,
         bufferTensor: Tensor?, backend: any Backend, batchSize: Int) throws {
        guard batchSize > 0 else { throw ModelConfigError("feature batch size must be positive, got \(batchSize)") }
        self.config = config
        self.backend = backend
        self.batchSize = batchSize
        func view(_ table: ParameterTable, _ tensor: Tensor, _ name: String) throws -> Tensor {
            guard let entry = table[prefix + name] else {
                throw ModelConfigError("no tensor named \(prefix + name) in the layout")
            }
            return tensor.view(offset: entry.offset, shape: entry.shape)
        }
        var buffer: ((String) throws -> Tensor)?
        if config.mlpNormalization == .batchNorm {
            guard let bufferTensor else {
                throw ModelConfigError("a ViT-BN trunk's features need its BatchNorm running statistics; "
                    + "pass the model's bufferTensor")
            }
            buffer = { try view(buffers, bufferTensor, $0) }
        }
        weights = try BackboneWeights(config: config, parameter: { try view(table, parameterTensor, $0) },
                                      buffer: buffer)
        activations = try BackboneActivations(backend: backend, config: config, batchSize: batchSize)
        forward = try BackboneForward(backend: backend, config: config, batchSize: batchSize)
        images = try backend.makeTensor(shape: [batchSize, config.channels, config.imageSize, config.imageSize])
        rows = try backend.makeTensor(shape: [batchSize, config.embedDim])
        unit = try backend.makeTensor([Float(1)], shape: [1, 1])
    }

    /// The features of `count ≤ batchSize` images (count, 3, S, S) as a device tensor (batchSize,
    /// C), contiguous rows (the class-token rows gathered, or the pooled rows); rows ≥ `count`
    /// belong to the zero padding. Valid until the next call.
    public func featureTensor(of pixels: [Float], count: Int) throws -> Tensor {
        try run(pixels, count: count)
        return try Self.contiguousFeature(of: activations, rows: rows, unit: unit, backend: backend)
    }

    /// The feature (B, C) with contiguous rows: `pooled` as it is, or the class-token rows of
    /// `normalized` (stride N·C) gathered into `rows` by a batched 1×1 · 1×C GEMM per image
    /// (1·x exactly, beta 0, so no copy op is needed); `unit` is a (1, 1) tensor holding 1.
    static func contiguousFeature(of activations: BackboneActivations, rows: Tensor, unit: Tensor,
                                  backend: any Backend) throws -> Tensor {
        if let pooled = activations.pooled { return pooled }
        let (B, N, C) = (activations.normalized.shape[0], activations.normalized.shape[1], activations.normalized.shape[2])
        var gather = GEMMShape(m: 1, n: C, k: 1, batch: B)
        gather.strideA = 0
        gather.strideB = N * C
        gather.strideC = C
        try backend.gemm(gather, alpha: 1, a: unit, b: activations.normalized, beta: 0, c: rows)
        return rows
    }

    func run(_ pixels: [Float], count: Int) throws {
        let imageSize = config.channels * config.imageSize * config.imageSize
        guard count > 0, count <= batchSize, pixels.count == count * imageSize else {
            throw ModelConfigError("feature batch of \(count) images with \(pixels.count) values; "
                + "expected 1...\(batchSize) images of \(imageSize) values")
        }
        if count == batchSize {
            try backend.upload(pixels, to: images)
        } else {
            try backend.upload(pixels + [Float](repeating: 0, count: (batchSize - count) * imageSize), to: images)
        }
        try forward(backend, images: images, weights: weights, activations: activations, training: false)
    }

    /// The features (count, C) of `count ≤ batchSize` images given as (count, 3, S, S) floats,
    /// row-major. The rest of the batch is padded with zeros and its rows are dropped.
    public func features(of pixels: [Float], count: Int) throws -> [Float] {
        try run(pixels, count: count)
        return try Self.featureRows(of: activations, backend: backend, count: count)
    }

    /// The features (count, C) of the first `count` images: row 0 of each image's (N, C) trunk
    /// output, or its pooled row.
    static func featureRows(of activations: BackboneActivations, backend: any Backend, count: Int) throws -> [Float] {
        let (C, stride) = (activations.normalized.shape[2], activations.featureStride)
        let all = try backend.download(activations.feature)
        var rows = [Float](repeating: 0, count: count * C)
        for b in 0..<count {
            rows.replaceSubrange(b * C..<(b + 1) * C, with: all[(b * stride)..<(b * stride + C)])
        }
        return rows
    }
}

extension MoCoModel {
    /// The base encoder's features (B, C) of view `index` (0 or 1) from the last
    /// ``forward(x1:x2:)``: what the projector read (class token or pooled; a ViT-BN trunk's in
    /// training mode).
    public func baseFeatures(view index: Int) throws -> [Float] {
        try FeatureExtractor.featureRows(of: baseActivations[index], backend: backend, count: batchSize)
    }

    /// The momentum encoder's features (B, C) of the second view from the last
    /// ``forward(x1:x2:)`` (its trunk runs the views in turn and keeps the last).
    public func momentumFeatures() throws -> [Float] {
        try FeatureExtractor.featureRows(of: momentumActivations, backend: backend, count: batchSize)
    }
}
