import Kernels

/// The class-token feature of one encoder's ViT trunk (the final-LN cls row, SPEC A.2) for
/// batches of images: what the kNN evaluation and the linear probe read.
///
/// It reads the weights in place from a flat parameter tensor in ``MoCoParameters``' layout
/// (usually a ``MoCoModel``'s, so it always sees the current weights) and owns only its
/// activations, sized for `batchSize`. The trunk has no BatchNorm, so a short final batch can be
/// padded without changing the other rows.
public final class FeatureExtractor {
    public let backend: any Backend
    public let batchSize: Int
    public let config: ViTConfig
    let weights: BackboneWeights
    let activations: BackboneActivations
    let forward: BackboneForward
    let images: Tensor

    /// - Parameters:
    ///   - parameterTensor: the flat parameters of `layout` on `backend`.
    ///   - encoderPrefix: ``MoCoParameters/baseEncoderPrefix`` (the default; the features the
    ///     paper evaluates) or ``MoCoParameters/momentumEncoderPrefix``.
    public init(layout: MoCoParameters, parameterTensor: Tensor, backend: any Backend, batchSize: Int,
                encoderPrefix: String = MoCoParameters.baseEncoderPrefix) throws {
        guard batchSize > 0 else { throw ModelConfigError("feature batch size must be positive, got \(batchSize)") }
        config = layout.config.vit
        self.backend = backend
        self.batchSize = batchSize
        weights = try BackboneWeights(config: config) { name in
            guard let entry = layout.table[encoderPrefix + name] else {
                throw ModelConfigError("no tensor named \(encoderPrefix + name) in the layout")
            }
            return parameterTensor.view(offset: entry.offset, shape: entry.shape)
        }
        activations = try BackboneActivations(backend: backend, config: config, batchSize: batchSize)
        forward = try BackboneForward(backend: backend, config: config, batchSize: batchSize)
        images = try backend.makeTensor(shape: [batchSize, config.channels, config.imageSize, config.imageSize])
    }

    /// The features (count, C) of `count ≤ batchSize` images given as (count, 3, S, S) floats,
    /// row-major. The rest of the batch is padded with zeros and its rows are dropped.
    public func features(of pixels: [Float], count: Int) throws -> [Float] {
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
        try forward(backend, images: images, weights: weights, activations: activations)
        return try Self.classRows(of: activations.normalized, backend: backend, count: count, config: config)
    }

    /// Row 0 (the class token) of the first `count` images of a (B, N, C) trunk output.
    static func classRows(of tokens: Tensor, backend: any Backend, count: Int, config: ViTConfig) throws -> [Float] {
        let (N, C) = (config.tokens, config.embedDim)
        let all = try backend.download(tokens)
        var rows = [Float](repeating: 0, count: count * C)
        for b in 0..<count {
            rows.replaceSubrange(b * C..<(b + 1) * C, with: all[(b * N * C)..<(b * N * C + C)])
        }
        return rows
    }
}

extension MoCoModel {
    /// The base encoder's class-token features (B, C) of view `index` (0 or 1) from the last
    /// ``forward(x1:x2:)``.
    public func baseFeatures(view index: Int) throws -> [Float] {
        try FeatureExtractor.classRows(of: baseActivations[index].normalized, backend: backend, count: batchSize,
                                       config: parameters.config.vit)
    }

    /// The momentum encoder's class-token features (B, C) of the second view from the last
    /// ``forward(x1:x2:)`` (its trunk runs the views in turn and keeps the last).
    public func momentumFeatures() throws -> [Float] {
        try FeatureExtractor.classRows(of: momentumActivations.normalized, backend: backend, count: batchSize,
                                       config: parameters.config.vit)
    }
}
