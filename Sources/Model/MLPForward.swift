import Tensors

/// Views of one `_build_mlp` head (SPEC A.3): per layer a bias-free Linear and a BatchNorm1d
/// (affine on hidden layers, affine-free on the last) with its running buffers.
struct MLPWeights {
    struct Layer {
        let weight: Tensor              // (out, in)
        let normWeight: Tensor?         // (out) γ; nil on the affine-free last BN
        let normBias: Tensor?           // (out) β
        let statistics: BatchNormStatistics
        var outputs: Int { weight.shape[0] }
        var inputs: Int { weight.shape[1] }
    }

    let layers: [Layer]

    /// `linearIndices`/`normIndices`: the Sequential indices (projector 0,3,6 / 1,4,7; predictor
    /// 0,3 / 1,4). `parameter` and `buffer` give views by name relative to the module.
    init(linearIndices: [Int], normIndices: [Int], prefix: String,
         parameter: (String) throws -> Tensor, buffer: (String) throws -> Tensor) throws {
        layers = try zip(linearIndices, normIndices).enumerated().map { layer, indices in
            let (linear, norm) = indices
            let affine = layer < linearIndices.count - 1
            return Layer(weight: try parameter("\(prefix)\(linear).weight"),
                         normWeight: affine ? try parameter("\(prefix)\(norm).weight") : nil,
                         normBias: affine ? try parameter("\(prefix)\(norm).bias") : nil,
                         statistics: try BatchNormStatistics(prefix: "\(prefix)\(norm)", buffer: buffer))
        }
    }
}

/// What one head forward writes, kept for the backward.
public struct MLPActivations {
    public struct Layer {
        public let linear: Tensor              // (B, out) Linear output = BN input
        public let normMean: Tensor            // (out) batch mean
        public let normReciprocalStd: Tensor   // (out) 1/√(biased var + ε)
        /// BN output, then ReLU in place on hidden layers (ReLU's backward reads its output).
        public let output: Tensor              // (B, out)
    }

    public let layers: [Layer]
    /// The head's result: the last layer's output.
    public var output: Tensor { layers[layers.count - 1].output }

    init(backend: any Backend, widths: [Int], batchSize B: Int) throws {
        layers = try widths.map { width in
            Layer(linear: try backend.makeTensor(shape: [B, width]), normMean: try backend.makeTensor(shape: [width]),
                  normReciprocalStd: try backend.makeTensor(shape: [width]),
                  output: try backend.makeTensor(shape: [B, width]))
        }
    }
}

/// `_build_mlp`'s forward with every BatchNorm in training mode on this batch (one view).
struct MLPForward {
    /// BatchNorm1d ε and momentum (SPEC A.3, PyTorch defaults).
    /// `nn.BatchNorm1d`'s defaults (SPEC A.3); ViT-BN's norm2 uses the same.
    static let normEpsilon: Float = 1e-5
    static let normMomentum: Float = 0.1

    let batchSize: Int
    /// (1) holding 1: num_batches_tracked += 1 per training-mode forward, as PyTorch counts.
    let one: Tensor
    /// The backend's BN, or SyncBN across a data-parallel group.
    let batchNorm: BatchNormRunner

    init(backend: any Backend, batchSize: Int, batchNorm: BatchNormRunner = BatchNormRunner()) throws {
        self.batchSize = batchSize
        self.batchNorm = batchNorm
        one = try backend.makeTensor([Float(1)], shape: [1])
    }

    /// - Parameters:
    ///   - input: (B, in) with row stride `inputStride` (the projector reads the cls rows of the
    ///     trunk's (B, N, C) output in place: stride N·C).
    func callAsFunction(_ backend: any Backend, input: Tensor, inputStride: Int, weights: MLPWeights,
                        activations: MLPActivations) throws {
        var x = input, stride = inputStride
        for (index, (layer, s)) in zip(weights.layers, activations.layers).enumerated() {
            var shape = GEMMShape(m: batchSize, n: layer.outputs, k: layer.inputs, transposeB: true)
            shape.lda = stride
            try backend.gemm(shape, alpha: 1, a: x, b: layer.weight, beta: 0, c: s.linear)
            try batchNorm.forward(backend, output: s.output, savedMean: s.normMean, savedReciprocalStd: s.normReciprocalStd,
                                         input: s.linear, weight: layer.normWeight, bias: layer.normBias,
                                         runningMean: layer.statistics.mean, runningVariance: layer.statistics.variance,
                                         momentum: Self.normMomentum, epsilon: Self.normEpsilon, training: true)
            try backend.axpy(alpha: 1, x: one, y: layer.statistics.batchesTracked)
            if index < weights.layers.count - 1 { try backend.relu(output: s.output, input: s.output) }
            x = s.output
            stride = layer.outputs
        }
    }
}
