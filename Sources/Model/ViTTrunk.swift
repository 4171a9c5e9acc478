import Tensors

/// A trainable ViT trunk on its own (``ViTLayout``, timm names): fine-tuning's backbone. It owns
/// the flat parameter, gradient and BN-buffer tensors and one batch of activations; the forward
/// gives the (B, C) feature (final-LN class token, or the pooled rows), the backward takes
/// ∂loss/∂feature and accumulates every trainable trunk gradient. Optimizers and the head are the
/// caller's (Train).
///
/// Training mode runs ViT-BN on the batch's statistics (updating the running ones) and applies
/// stochastic depth when given ``DropPath`` factors; evaluation goes through
/// ``FeatureExtractor/init(sharing:)``, on the same weights and activations.
public final class ViTTrunk {
    public let layout: ViTLayout
    public let backend: any Backend
    public let batchSize: Int
    public let parameterTensor: Tensor
    public let gradientTensor: Tensor
    public let bufferTensor: Tensor
    let weights: BackboneWeights
    let gradients: BackboneWeights
    let activations: BackboneActivations
    let forwardPass: BackboneForward
    let backwardPass: BackboneBackward
    let scratch: BackboneGradients
    let images: Tensor
    /// (B, C): the gathered class-token rows.
    let rows: Tensor
    let unit: Tensor

    public init(layout: ViTLayout, backend: any Backend, batchSize: Int, parameters: [Float], buffers: [Float]) throws {
        guard batchSize > 0 else { throw ModelConfigError("trunk batch size must be positive, got \(batchSize)") }
        guard parameters.count == layout.table.count, buffers.count == layout.buffers.count else {
            throw ModelConfigError("trunk values of \(parameters.count) and \(buffers.count) elements for a layout of "
                + "\(layout.table.count) and \(layout.buffers.count)")
        }
        let config = layout.config
        self.layout = layout
        self.backend = backend
        self.batchSize = batchSize
        parameterTensor = try backend.makeTensor(parameters, shape: [parameters.count])
        gradientTensor = try backend.makeTensor(shape: [parameters.count])
        try backend.fill(gradientTensor, value: 0)
        bufferTensor = try backend.makeFlatTensor(buffers)
        func view(_ table: ParameterTable, _ tensor: Tensor) -> (String) throws -> Tensor {
            { name in
                guard let entry = table[name] else { throw ModelConfigError("no trunk tensor named \(name)") }
                return tensor.view(offset: entry.offset, shape: entry.shape)
            }
        }
        let buffer: ((String) throws -> Tensor)? = config.mlpNormalization == .batchNorm ? view(layout.buffers, bufferTensor) : nil
        weights = try BackboneWeights(config: config, parameter: view(layout.table, parameterTensor), buffer: buffer)
        gradients = try BackboneWeights(config: config, parameter: view(layout.table, gradientTensor))
        activations = try BackboneActivations(backend: backend, config: config, batchSize: batchSize)
        forwardPass = try BackboneForward(backend: backend, config: config, batchSize: batchSize)
        backwardPass = BackboneBackward(config: config, batchSize: batchSize, forward: forwardPass)
        scratch = try BackboneGradients(backend: backend, config: config, batchSize: batchSize)
        images = try backend.makeTensor(shape: [batchSize, config.channels, config.imageSize, config.imageSize])
        rows = try backend.makeTensor(shape: [batchSize, config.embedDim])
        unit = try backend.makeTensor([Float(1)], shape: [1, 1])
    }

    /// A training forward of a full batch (B, 3, S, S): the features (B, C) on the device.
    public func forward(pixels: [Float], dropPath: DropPath? = nil) throws -> Tensor {
        try backend.upload(pixels, to: images)
        try forwardPass(backend, images: images, weights: weights, activations: activations, training: true,
                        dropPath: dropPath)
        return try FeatureExtractor.contiguousFeature(of: activations, rows: rows, unit: unit, backend: backend)
    }

    /// The backward of the last ``forward(pixels:dropPath:)`` from ∂loss/∂feature (B, C):
    /// zeroes the gradient buffer, then accumulates every trainable trunk gradient into it
    /// (pos_embed is frozen; the patch projection trains).
    public func backward(featureGradient: Tensor, dropPath: DropPath? = nil) throws {
        let (B, N, C) = (batchSize, layout.config.tokens, layout.config.embedDim)
        try backend.fill(gradientTensor, value: 0)
        if let pooled = scratch.pooled {
            try backend.fill(pooled, value: 0)
            try backend.axpy(alpha: 1, x: featureGradient.view(offset: 0, shape: [B * C]), y: pooled.reshaped([B * C]))
        } else {
            // ∂feature (B, C) into row 0 of each image of the final LN's output gradient.
            try backend.fill(scratch.normalized, value: 0)
            var scatter = GEMMShape(m: 1, n: C, k: 1, batch: B)
            scatter.strideA = 0
            scatter.strideB = C
            scatter.strideC = N * C
            try backend.gemm(scatter, alpha: 1, a: unit, b: featureGradient, beta: 0, c: scratch.normalized)
        }
        try backwardPass(backend, images: images, weights: weights, gradients: gradients, activations: activations,
                         scratch: scratch, dropPath: dropPath)
    }

    /// timm's rule: no decay for 1-D tensors and the names in `no_weight_decay()` (pos_embed, cls_token).
    public static func isDecayed(_ entry: ParameterTable.Entry) -> Bool {
        entry.shape.count > 1 && entry.name != "cls_token" && entry.name != "pos_embed"
    }
}
