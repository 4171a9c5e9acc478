import Tensors

/// LAMB (You et al., ICLR 2020, Algorithm 2): Adam's bias-corrected moments, the decay added to
/// the update, and a per-tensor trust ratio ‖w‖/‖update‖; decay and ratio are skipped for 1-D
/// tensors, as LARS does (SPEC A.6). The paper's Fig. 3 compares it with AdamW. Through the
/// backend's `lamb` op.
public final class LAMB: Optimizer {
    public let kind = OptimizerKind.lamb
    public let backend: any Backend
    public let segments: SegmentTable
    public let weightDecay: Double
    public let epsilon: Double
    /// `exp_avg` and `exp_avg_sq`.
    public let firstMoment: Tensor, secondMoment: Tensor

    public init(backend: any Backend, segments: SegmentTable, weightDecay: Double, epsilon: Double = 1e-6) throws {
        self.backend = backend
        self.segments = segments
        self.weightDecay = weightDecay
        self.epsilon = epsilon
        firstMoment = try zeroedState(backend, segments)
        secondMoment = try zeroedState(backend, segments)
    }

    public var state: [(key: String, tensor: Tensor)] { zip(kind.stateKeys, [firstMoment, secondMoment]).map { ($0, $1) } }

    public func step(parameters: Tensor, gradients: Tensor, learningRate: Double, step: Int) throws {
        try backend.lamb(parameters: parameters, gradients: gradients, firstMoment: firstMoment,
                         secondMoment: secondMoment, segments: segments,
                         step: LAMBStep(learningRate: learningRate, weightDecay: weightDecay, step: step,
                                        epsilon: epsilon))
    }
}
