import Tensors

/// Gradient scratch of one `_build_mlp` head for one view, allocated once and reused by both
/// views (they run one after the other).
struct MLPGradients {
    struct Layer {
        /// ∂loss/∂(layer output), written by the next layer's backward (nil for the last layer:
        /// its output gradient comes from outside).
        let output: Tensor?         // (B, out)
        /// ∂loss/∂(BN output) after the ReLU backward (hidden layers only).
        let normOutput: Tensor?     // (B, out)
        /// ∂loss/∂(Linear output) = ∂loss/∂(BN input).
        let linear: Tensor          // (B, out)
    }

    let layers: [Layer]

    init(backend: any Backend, widths: [Int], batchSize B: Int) throws {
        layers = try widths.enumerated().map { index, width in
            let hidden = index < widths.count - 1
            return Layer(output: hidden ? try backend.makeTensor(shape: [B, width]) : nil,
                         normOutput: hidden ? try backend.makeTensor(shape: [B, width]) : nil,
                         linear: try backend.makeTensor(shape: [B, width]))
        }
    }
}

/// `_build_mlp`'s backward (training-mode BN with the saved batch statistics), in exact reverse
/// order of ``MLPForward``. Parameter gradients accumulate into `gradients` (views of the flat
/// gradient buffer that mirror `weights`).
struct MLPBackward {
    let batchSize: Int
    var batchNorm = BatchNormRunner()

    /// - Parameters:
    ///   - outputGradient: ∂loss/∂(head output) (B, out_last).
    ///   - inputGradient: overwritten with ∂loss/∂input (B, in) at row stride `inputStride`
    ///     (the projector writes the cls rows of a (B, N, C) trunk gradient in place).
    ///   - input: the head's input as the forward read it, row stride `inputStride`.
    func callAsFunction(_ backend: any Backend, inputGradient: Tensor, outputGradient: Tensor, input: Tensor,
                        inputStride: Int, weights: MLPWeights, gradients: MLPWeights, activations: MLPActivations,
                        scratch: MLPGradients) throws {
        let B = batchSize
        var gradient = outputGradient
        for index in stride(from: weights.layers.count - 1, through: 0, by: -1) {
            let (layer, parameterGradient) = (weights.layers[index], gradients.layers[index])
            let (s, g) = (activations.layers[index], scratch.layers[index])
            // ReLU (in place on the BN output in the forward, so `s.output` is ReLU's output).
            var normGradient = gradient
            if let normOutput = g.normOutput {
                try backend.reluBackward(inputGradient: normOutput, outputGradient: gradient, output: s.output)
                normGradient = normOutput
            }
            try batchNorm.backward(backend, inputGradient: g.linear, weightGradient: parameterGradient.normWeight,
                                          biasGradient: parameterGradient.normBias, outputGradient: normGradient,
                                          input: s.linear, savedMean: s.normMean, savedReciprocalStd: s.normReciprocalStd,
                                          weight: layer.normWeight)
            // y = x·Wᵀ: dW (out, in) += dyᵀ·x, dx (B, in) = dy·W.
            let (x, xStride) = index == 0 ? (input, inputStride) : (activations.layers[index - 1].output, layer.inputs)
            var weightShape = GEMMShape(m: layer.outputs, n: layer.inputs, k: B, transposeA: true)
            weightShape.ldb = xStride
            try backend.gemm(weightShape, alpha: 1, a: g.linear, b: x, beta: 1, c: parameterGradient.weight)
            let target = index == 0 ? inputGradient : scratch.layers[index - 1].output!
            var inputShape = GEMMShape(m: B, n: layer.inputs, k: layer.outputs)
            inputShape.ldc = index == 0 ? inputStride : layer.inputs
            try backend.gemm(inputShape, alpha: 1, a: g.linear, b: layer.weight, beta: 0, c: target)
            gradient = target
        }
    }
}
