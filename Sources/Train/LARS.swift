import Tensors

/// The reference's LARS (`moco/optimizer.py`, SPEC A.6): momentum 0.9, trust coefficient 0.001;
/// tensors with ndim > 1 are decayed and trust-scaled, biases and norms are not. Through the
/// backend's `lars` op (which adds the decay into `gradients`).
public final class LARS: Optimizer {
    public let kind = OptimizerKind.lars
    public let backend: any Backend
    public let segments: SegmentTable
    public let weightDecay: Double
    public let momentum: Double
    public let trustCoefficient: Double
    /// The heavy-ball buffer `mu`.
    public let momentumBuffer: Tensor

    public init(backend: any Backend, segments: SegmentTable, weightDecay: Double, momentum: Double = 0.9,
                trustCoefficient: Double = 0.001) throws {
        self.backend = backend
        self.segments = segments
        self.weightDecay = weightDecay
        self.momentum = momentum
        self.trustCoefficient = trustCoefficient
        momentumBuffer = try zeroedState(backend, segments)
    }

    public var state: [(key: String, tensor: Tensor)] { [(kind.stateKeys[0], momentumBuffer)] }

    public func step(parameters: Tensor, gradients: Tensor, learningRate: Double, step: Int) throws {
        try backend.lars(parameters: parameters, gradients: gradients, momentumBuffer: momentumBuffer,
                         segments: segments,
                         step: LARSStep(learningRate: learningRate, weightDecay: weightDecay, momentum: momentum,
                                        trustCoefficient: trustCoefficient))
    }
}
