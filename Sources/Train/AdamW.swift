import Tensors

/// `torch.optim.AdamW` (β 0.9/0.999, ε 1e-8, decoupled decay on every trainable tensor; SPEC A.6),
/// through the backend's `adamw` op.
public final class AdamW: Optimizer {
    public let kind = OptimizerKind.adamw
    public let backend: any Backend
    public let segments: SegmentTable
    public let weightDecay: Double
    /// `exp_avg` and `exp_avg_sq`.
    public let firstMoment: Tensor, secondMoment: Tensor

    public init(backend: any Backend, segments: SegmentTable, weightDecay: Double) throws {
        self.backend = backend
        self.segments = segments
        self.weightDecay = weightDecay
        firstMoment = try zeroedState(backend, segments)
        secondMoment = try zeroedState(backend, segments)
    }

    public var state: [(key: String, tensor: Tensor)] { zip(kind.stateKeys, [firstMoment, secondMoment]).map { ($0, $1) } }

    public func step(parameters: Tensor, gradients: Tensor, learningRate: Double, step: Int) throws {
        try backend.adamw(parameters: parameters, gradients: gradients, firstMoment: firstMoment,
                          secondMoment: secondMoment, segments: segments,
                          step: AdamWStep(learningRate: learningRate, weightDecay: weightDecay, step: step))
    }
}
