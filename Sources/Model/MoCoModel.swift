import Collective
import Tensors

/// MoCo v3 around a ViT on one ``Backend``: parameters, BN buffers and every activation of one
/// training step for a fixed batch size, allocated once (SPEC A.1–A.5; `moco/builder.py`).
///
/// After the first ``forward(x1:x2:)`` a step allocates nothing from the backend's pool: every
/// op writes into the tensors made here.
///
/// ```swift
/// let model = try MoCoModel(parameters: layout, backend: backend, batchSize: 256,
///                           initial: layout.initialValues(seed: 0))
/// try model.momentumUpdate(m: 0.99)
/// let loss = try model.forward(x1: view1, x2: view2)
/// ```
public final class MoCoModel {
    public let parameters: MoCoParameters
    public let backend: any Backend
    /// Images per view on this rank (the global batch / the group's size).
    public let batchSize: Int
    /// The data-parallel group (``SingleProcess`` by default): keys are gathered across it and
    /// every BatchNorm is synchronised over it (SPEC A.3, A.4).
    public let communicator: any Communicator
    /// Images per view across the group: the number of keys each query is contrasted with.
    public var globalBatchSize: Int { batchSize * communicator.size }

    /// Every parameter: base encoder | predictor | momentum encoder (``MoCoParameters``).
    public let parameterTensor: Tensor
    /// BN running statistics (``MoCoParameters/buffers``).
    public let bufferTensor: Tensor

    /// The base encoder and predictor pass of each view (kept for the backward).
    public let baseActivations: [BackboneActivations]        // one per view
    public let projectorActivations: [MLPActivations]        // one per view; output (B, moco_dim)
    public let predictorActivations: [MLPActivations]        // one per view; output q (B, moco_dim)
    /// The momentum encoder needs no backward: one trunk set serves both views.
    let momentumActivations: BackboneActivations
    public let momentumProjectorActivations: [MLPActivations] // one per view; output k (B, moco_dim)
    /// The two `contrastive_loss` terms: ctr(q1, k2) and ctr(q2, k1).
    public let lossTerms: [ContrastiveLossActivations]

    let baseWeights: BackboneWeights, momentumWeights: BackboneWeights
    let projectorWeights: MLPWeights, momentumProjectorWeights: MLPWeights, predictorWeights: MLPWeights
    let backbone: BackboneForward
    let head: MLPForward
    let labels: Tensor                                       // (B) int32 arange(B) + B·rank
    /// Gradients and backward scratch (MoCoModel+Backward.swift).
    let training: MoCoGradientState

    /// q1, q2: the predictor outputs; k1, k2: the momentum encoder outputs (raw, before L2).
    public var q1: Tensor { predictorActivations[0].output }
    public var q2: Tensor { predictorActivations[1].output }
    public var k1: Tensor { momentumProjectorActivations[0].output }
    public var k2: Tensor { momentumProjectorActivations[1].output }

    /// - Parameter initial: flat parameters and buffers in `parameters`' layout (e.g.
    ///   ``MoCoParameters/initialValues(seed:)``, or tensors loaded by name through the tables).
    ///   - batchSize: the images per view on this rank.
    ///   - communicator: the data-parallel group this model trains in.
    public init(parameters: MoCoParameters, backend: any Backend, batchSize: Int,
                initial: (parameters: [Float], buffers: [Float]),
                communicator: any Communicator = SingleProcess()) throws {
        let config = parameters.config
        guard batchSize > 1 else {
            throw ModelConfigError("batch size must be at least 2 (training-mode BatchNorm), got \(batchSize)")
        }
        guard initial.parameters.count == parameters.table.count, initial.buffers.count == parameters.buffers.count else {
            throw ModelConfigError("initial values have \(initial.parameters.count) parameters and "
                + "\(initial.buffers.count) buffers; the layout needs \(parameters.table.count) and \(parameters.buffers.count)")
        }
        self.parameters = parameters
        self.backend = backend
        self.batchSize = batchSize
        self.communicator = communicator
        parameterTensor = try backend.makeTensor(initial.parameters, shape: [parameters.table.count])
        bufferTensor = try backend.makeTensor(initial.buffers, shape: [parameters.buffers.count])

        let (parameterTensor, bufferTensor) = (parameterTensor, bufferTensor)
        func view(_ table: ParameterTable, _ tensor: Tensor, _ name: String) throws -> Tensor {
            guard let entry = table[name] else { throw ModelConfigError("no tensor named \(name) in the layout") }
            return tensor.view(offset: entry.offset, shape: entry.shape)
        }
        func encoder(_ prefix: String) throws -> (BackboneWeights, MLPWeights) {
            let parameter = { (name: String) in try view(parameters.table, parameterTensor, prefix + name) }
            let buffer = { (name: String) in try view(parameters.buffers, bufferTensor, prefix + name) }
            return (try BackboneWeights(config: config.vit, parameter: parameter, buffer: buffer),
                    try MLPWeights(linearIndices: [0, 3, 6], normIndices: [1, 4, 7], prefix: "head.",
                                   parameter: parameter, buffer: buffer))
        }
        (baseWeights, projectorWeights) = try encoder(MoCoParameters.baseEncoderPrefix)
        (momentumWeights, momentumProjectorWeights) = try encoder(MoCoParameters.momentumEncoderPrefix)
        let predictorPrefix = MoCoParameters.predictorPrefix
        predictorWeights = try MLPWeights(
            linearIndices: [0, 3], normIndices: [1, 4], prefix: "",
            parameter: { try view(parameters.table, parameterTensor, predictorPrefix + $0) },
            buffer: { try view(parameters.buffers, bufferTensor, predictorPrefix + $0) })

        let (h, d) = (config.mocoMLPDim, config.mocoDim)
        baseActivations = try (0..<2).map { _ in try BackboneActivations(backend: backend, config: config.vit, batchSize: batchSize) }
        projectorActivations = try (0..<2).map { _ in try MLPActivations(backend: backend, widths: [h, h, d], batchSize: batchSize) }
        predictorActivations = try (0..<2).map { _ in try MLPActivations(backend: backend, widths: [h, d], batchSize: batchSize) }
        momentumActivations = try BackboneActivations(backend: backend, config: config.vit, batchSize: batchSize)
        momentumProjectorActivations = try (0..<2).map { _ in
            try MLPActivations(backend: backend, widths: [h, h, d], batchSize: batchSize)
        }
        let keyCount = batchSize * communicator.size
        lossTerms = try (0..<2).map { _ in
            try ContrastiveLossActivations(backend: backend, batchSize: batchSize, keys: keyCount, width: d,
                                           distributed: communicator.isDistributed)
        }
        let batchNorm = BatchNormRunner(communicator: communicator)
        try batchNorm.prepare(backend: backend, widths: [h, d] + (config.vit.mlpNormalization == .batchNorm ? [config.vit.embedDim] : []))
        backbone = try BackboneForward(backend: backend, config: config.vit, batchSize: batchSize, batchNorm: batchNorm)
        head = try MLPForward(backend: backend, batchSize: batchSize, batchNorm: batchNorm)
        let offset = batchSize * communicator.rank
        labels = try backend.makeTensor((0..<batchSize).map { Int32(offset + $0) }, shape: [batchSize])
        training = try MoCoGradientState(parameters: parameters, backend: backend, batchSize: batchSize,
                                         bufferTensor: bufferTensor)
    }

    /// The momentum-encoder EMA `ξ ← m·ξ + (1 − m)·θ` over every base-encoder parameter (SPEC
    /// A.5), one pass over the aligned blocks. The step calls it before the key forward (A.1).
    public func momentumUpdate(m: Float) throws {
        let (base, momentum) = (parameters.baseEncoder, parameters.momentumEncoder)
        try backend.momentumUpdate(target: parameterTensor.view(offset: momentum.lowerBound, shape: [momentum.count]),
                                   source: parameterTensor.view(offset: base.lowerBound, shape: [base.count]),
                                   momentum: m)
    }

    /// One step's forward (`MoCo.forward`, SPEC A.1): q1, q2 from the base encoder and predictor,
    /// each view its own call so each BN normalizes over its own view; k1, k2 from the momentum
    /// encoder, also in training mode. Returns `ctr(q1, k2) + ctr(q2, k1)`.
    ///
    /// The views never share a trunk call either: ViT-BN's norm2 must see one view's statistics
    /// (paper Sec 6.1 and Appendix: "the two crops ... are separately forwarded").
    ///
    /// - Parameters: x1, x2: the views (B, 3, S, S) on this backend.
    public func forward(x1: Tensor, x2: Tensor) throws -> Float {
        let vit = parameters.config.vit
        let expected = [batchSize, vit.channels, vit.imageSize, vit.imageSize]
        for view in [x1, x2] where view.shape != expected {
            throw ModelConfigError("a view has shape \(view.shape); this model was built for \(expected)")
        }
        for (index, images) in [x1, x2].enumerated() {
            // q = predictor(base_encoder(x))
            try backbone(backend, images: images, weights: baseWeights, activations: baseActivations[index])
            try head(backend, input: baseActivations[index].feature, inputStride: baseActivations[index].featureStride,
                     weights: projectorWeights, activations: projectorActivations[index])
            try head(backend, input: projectorActivations[index].output, inputStride: parameters.config.mocoDim,
                     weights: predictorWeights, activations: predictorActivations[index])
        }
        for (index, images) in [x1, x2].enumerated() {
            // k = momentum_encoder(x)
            try backbone(backend, images: images, weights: momentumWeights, activations: momentumActivations)
            try head(backend, input: momentumActivations.feature, inputStride: momentumActivations.featureStride,
                     weights: momentumProjectorWeights, activations: momentumProjectorActivations[index])
        }
        let temperature = Float(parameters.config.temperature)
        try lossTerms[0](backend, queries: q1, keys: k2, labels: labels, temperature: temperature, communicator: communicator)
        try lossTerms[1](backend, queries: q2, keys: k1, labels: labels, temperature: temperature, communicator: communicator)
        // Summed on the host in Double: 2·B floats (and over the group: each rank's terms are its share).
        var loss = [0.0]
        for term in lossTerms { loss[0] += try backend.download(term.losses).reduce(0) { $0 + Double($1) } }
        try communicator.allReduceSum(&loss)
        return Float(loss[0])
    }
}

/// `contrastive_loss(q, k)` (SPEC A.4): `2T · CE(q̂·k̂ᵀ / T, arange(B) + B·rank)` of this rank's B
/// queries against the keys of the whole group (`concat_all_gather`, no gradient), with the
/// per-row losses and the logits gradient kept for the backward. Each row's loss is scaled by
/// 2T/K for K keys, so the group's rows sum to the mean over the global batch × 2T, and the sum
/// of the ranks' gradients is the one-process gradient of that batch.
public struct ContrastiveLossActivations {
    public let queries: Tensor          // (B, d) q / ‖q‖
    public let queryNorms: Tensor       // (B)
    public let keys: Tensor             // (K, d) k / ‖k‖ of every rank, K = B·ranks
    /// This rank's normalised keys before the gather (nil in one process: `keys` is written directly).
    let localKeys: Tensor?              // (B, d)
    public let keyNorms: Tensor         // (B)
    public let logits: Tensor           // (B, K) q̂·k̂ᵀ / T
    public let logitsGradient: Tensor   // (B, K) ∂loss/∂logits
    /// Per-query losses, each already × 2T/K, so their sum over the group is the term (mean CE × 2T).
    public let losses: Tensor           // (B)

    init(backend: any Backend, batchSize B: Int, keys K: Int, width d: Int, distributed: Bool) throws {
        queries = try backend.makeTensor(shape: [B, d])
        queryNorms = try backend.makeTensor(shape: [B])
        keys = try backend.makeTensor(shape: [K, d])
        localKeys = distributed ? try backend.makeTensor(shape: [B, d]) : nil
        keyNorms = try backend.makeTensor(shape: [B])
        logits = try backend.makeTensor(shape: [B, K])
        logitsGradient = try backend.makeTensor(shape: [B, K])
        losses = try backend.makeTensor(shape: [B])
    }

    func callAsFunction(_ backend: any Backend, queries q: Tensor, keys k: Tensor, labels: Tensor,
                        temperature: Float, communicator: any Communicator) throws {
        let (B, d, K) = (q.shape[0], q.shape[1], keys.shape[0])
        try backend.l2NormalizeForward(output: queries, norms: queryNorms, input: q)
        if let localKeys {
            try backend.l2NormalizeForward(output: localKeys, norms: keyNorms, input: k)
            try backend.upload(try communicator.allGather(try backend.download(localKeys)), to: keys)
        } else {
            try backend.l2NormalizeForward(output: keys, norms: keyNorms, input: k)
        }
        try backend.gemm(GEMMShape(m: B, n: K, k: d, transposeB: true), alpha: 1 / temperature, a: queries, b: keys,
                         beta: 0, c: logits)
        try backend.softmaxCrossEntropy(losses: losses, logitsGradient: logitsGradient, logits: logits, labels: labels,
                                        scale: 2 * temperature / Float(K))
    }
}
