import Tensors

/// Gradients and backward scratch of a ``MoCoModel``, allocated once with it. The optimizer's
/// state is not here: optimizers (Train's `Optimizer`) own theirs; the model computes gradients.
struct MoCoGradientState {
    /// ∂loss/∂θ over ``MoCoParameters/trainableRegion`` (base encoder | predictor), same offsets
    /// as the parameter buffer; frozen tensors (pos_embed, a stop-grad patch projection) keep
    /// zero slots that the optimizer's segments skip.
    let gradientTensor: Tensor
    /// One segment per trainable tensor (ndim > 1 adapted), the optimizers' and monitors' table.
    let segments: SegmentTable
    /// Views of `gradientTensor` that mirror the base-encoder and predictor weight views.
    let baseGradients: BackboneWeights, projectorGradients: MLPWeights, predictorGradients: MLPWeights
    let backbone: BackboneGradients
    let projector: MLPGradients, predictor: MLPGradients
    let normalizedQueryGradient: Tensor     // (B, d) ∂loss/∂q̂
    let queryGradient: Tensor               // (B, d) ∂loss/∂q (predictor output)
    let projectionGradient: Tensor          // (B, d) ∂loss/∂(projector output)
    /// Where each part's gradients lie in `gradientTensor` (what the backward reports finished).
    let spans: GradientSpans

    init(parameters: MoCoParameters, backend: any Backend, batchSize B: Int, bufferTensor: Tensor) throws {
        let config = parameters.config
        let count = parameters.trainableRegion.upperBound
        gradientTensor = try backend.makeTensor(shape: [count])
        try backend.fill(gradientTensor, value: 0)
        segments = parameters.segmentTable()
        spans = GradientSpans(parameters: parameters)

        let gradientTensor = gradientTensor
        func view(_ table: ParameterTable, _ tensor: Tensor, _ name: String) throws -> Tensor {
            guard let entry = table[name] else { throw ModelConfigError("no tensor named \(name) in the layout") }
            return tensor.view(offset: entry.offset, shape: entry.shape)
        }
        // Buffers are not trainable; the MLP views carry them only because MLPWeights does.
        let base = MoCoParameters.baseEncoderPrefix, predictorPrefix = MoCoParameters.predictorPrefix
        baseGradients = try BackboneWeights(config: config.vit, parameter: { try view(parameters.table, gradientTensor, base + $0) })
        projectorGradients = try MLPWeights(
            linearIndices: [0, 3, 6], normIndices: [1, 4, 7], prefix: "head.",
            parameter: { try view(parameters.table, gradientTensor, base + $0) },
            buffer: { try view(parameters.buffers, bufferTensor, base + $0) })
        predictorGradients = try MLPWeights(
            linearIndices: [0, 3], normIndices: [1, 4], prefix: "",
            parameter: { try view(parameters.table, gradientTensor, predictorPrefix + $0) },
            buffer: { try view(parameters.buffers, bufferTensor, predictorPrefix + $0) })

        let (h, d) = (config.mocoMLPDim, config.mocoDim)
        backbone = try BackboneGradients(backend: backend, config: config.vit, batchSize: B)
        projector = try MLPGradients(backend: backend, widths: [h, h, d], batchSize: B)
        predictor = try MLPGradients(backend: backend, widths: [h, d], batchSize: B)
        normalizedQueryGradient = try backend.makeTensor(shape: [B, d])
        queryGradient = try backend.makeTensor(shape: [B, d])
        projectionGradient = try backend.makeTensor(shape: [B, d])
    }
}

extension MoCoModel {
    /// ∂loss/∂θ after ``backward()``: the flat gradient over ``MoCoParameters/trainableRegion``.
    public var gradientTensor: Tensor { training.gradientTensor }

    /// The gradient view of a trainable tensor by its checkpoint name
    /// (`module.base_encoder.blocks.0.attn.qkv.weight`, `module.predictor.3.weight`, …).
    public func gradient(named name: String) throws -> Tensor {
        guard let entry = parameters.table[name], entry.offset + entry.count <= parameters.trainableRegion.upperBound
        else { throw ModelConfigError("\(name) is not a tensor of the base encoder or predictor") }
        return training.gradientTensor.view(offset: entry.offset, shape: entry.shape)
    }

    /// Accumulates ∂loss/∂θ of the last ``forward(x1:x2:)`` into ``gradientTensor`` for
    /// `loss = ctr(q1, k2) + ctr(q2, k1)`, in exact reverse order of the forward. The keys get no
    /// gradient (the momentum encoder runs under no_grad, SPEC A.1). The caller zeroes the
    /// gradient first (``zeroGradients()``; Train's one training step does).
    ///
    /// - Parameter finished: called with each span of ``gradientTensor`` as soon as no later
    ///   work of this backward writes it again (during the last view's pass: the predictor, the
    ///   projector, the trunk's norm, each block from the last, then the embedding), so data
    ///   parallel training can start reducing it; together the spans cover the whole gradient.
    public func backward(x1: Tensor, x2: Tensor, finished: ((Range<Int>) throws -> Void)? = nil) throws {
        let vit = parameters.config.vit
        let (B, d) = (batchSize, parameters.config.mocoDim)
        let temperature = Float(parameters.config.temperature)
        let t = training
        let trunk = BackboneBackward(config: vit, batchSize: B, forward: backbone)
        let mlp = MLPBackward(batchSize: B, batchNorm: head.batchNorm)
        for (index, images) in [x1, x2].enumerated().reversed() {
            // The first view's pass is the last to add to each gradient: its parts are final as
            // it finishes them.
            let report = index == 0 ? finished : nil
            // Term `index` is ctr(q_index, k_other); softmaxCrossEntropy already wrote
            // ∂loss/∂logits (with the 2T/B scale). logits = q̂·k̂ᵀ/T, so ∂q̂ = (1/T)·∂logits·k̂.
            let term = lossTerms[index]
            try backend.gemm(GEMMShape(m: B, n: d, k: globalBatchSize), alpha: 1 / temperature, a: term.logitsGradient,
                             b: term.keys, beta: 0, c: t.normalizedQueryGradient)
            try backend.l2NormalizeBackward(inputGradient: t.queryGradient, outputGradient: t.normalizedQueryGradient,
                                            output: term.queries, norms: term.queryNorms)
            try mlp(backend, inputGradient: t.projectionGradient, outputGradient: t.queryGradient,
                    input: projectorActivations[index].output, inputStride: d, weights: predictorWeights,
                    gradients: t.predictorGradients, activations: predictorActivations[index], scratch: t.predictor)
            try report?(t.spans.predictor)
            // With class-token pooling the projector read the cls rows of the trunk output in place;
            // its input gradient goes to the same rows of an otherwise zero (B, N, C) gradient.
            // With global average pooling it goes to the pooled gradient (the trunk spreads it).
            if vit.pooling == .classToken { try backend.fill(t.backbone.normalized, value: 0) }
            let features = baseActivations[index]
            try mlp(backend, inputGradient: t.backbone.feature, outputGradient: t.projectionGradient,
                    input: features.feature, inputStride: features.featureStride, weights: projectorWeights,
                    gradients: t.projectorGradients, activations: projectorActivations[index], scratch: t.projector)
            try report?(t.spans.projector)
            try trunk(backend, images: images, weights: baseWeights, gradients: t.baseGradients,
                      activations: baseActivations[index], scratch: t.backbone,
                      finished: report.map { report in { try report(t.spans[$0]) } })
        }
    }

    /// Clears ``gradientTensor`` before a ``backward(x1:x2:)`` (which accumulates).
    public func zeroGradients() throws { try backend.fill(training.gradientTensor, value: 0) }

    /// One segment per trainable tensor of ``gradientTensor`` / the trainable region, in layout
    /// order; frozen tensors are left out, and only tensors with ndim > 1 are `adapted` (LARS and
    /// LAMB decay and trust-scale those only, SPEC A.6).
    public var trainableSegments: SegmentTable { training.segments }
}

/// Where each part's gradients lie in the flat gradient (contiguous, in layout order:
/// embedding | blocks | norm | projector | predictor, covering the whole of it).
struct GradientSpans {
    let embedding: Range<Int>, blocks: [Range<Int>], norm: Range<Int>, projector: Range<Int>, predictor: Range<Int>

    init(parameters: MoCoParameters) {
        let table = parameters.table, base = MoCoParameters.baseEncoderPrefix
        func start(_ name: String) -> Int { table[base + name]!.offset }
        let blockStarts = (0..<parameters.config.vit.depth).map { start("blocks.\($0).norm1.weight") }
        let normStart = start("norm.weight"), projectorStart = start("head.0.weight")
        let boundaries = blockStarts + [normStart]
        embedding = parameters.baseEncoder.lowerBound..<boundaries[0]
        blocks = blockStarts.indices.map { boundaries[$0]..<boundaries[$0 + 1] }
        norm = normStart..<projectorStart
        projector = projectorStart..<parameters.predictor.lowerBound
        predictor = parameters.predictor.lowerBound..<parameters.trainableRegion.upperBound
    }

    subscript(part: BackboneBackward.Part) -> Range<Int> {
        switch part {
        case .norm: norm
        case .block(let index): blocks[index]
        case .embedding: embedding
        }
    }
}
