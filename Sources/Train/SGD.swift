import Tensors

/// `torch.optim.SGD` with momentum (no dampening, no Nesterov; coupled weight decay on every
/// tensor): the linear probe's optimizer (SPEC A.8: momentum 0.9, wd 0). Through the backend's
/// `sgd` op.
public final class SGD: Optimizer {
    public let kind = OptimizerKind.sgd
    public let backend: any Backend
    public let segments: SegmentTable
    public let weightDecay: Double
    public let momentum: Double
    /// torch's `momentum_buffer`; zero before the first step, where `b = g` as in torch.
    public let momentumBuffer: Tensor

    public init(backend: any Backend, segments: SegmentTable, weightDecay: Double, momentum: Double = 0.9) throws {
        self.backend = backend
        self.segments = segments
        self.weightDecay = weightDecay
        self.momentum = momentum
        momentumBuffer = try zeroedState(backend, segments)
    }

    public var state: [(key: String, tensor: Tensor)] { [(kind.stateKeys[0], momentumBuffer)] }

    public func step(parameters: Tensor, gradients: Tensor, learningRate: Double, step: Int) throws {
        try backend.sgd(parameters: parameters, gradients: gradients, momentumBuffer: momentumBuffer,
                        segments: segments,
                        step: SGDStep(learningRate: learningRate, weightDecay: weightDecay, momentum: momentum))
    }
}
