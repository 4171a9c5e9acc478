import Tensors
import Model

/// One MoCo v3 training iteration (SPEC A.1), the single sequence that `mocov3-cl step` and
/// `mocov3-cl pretrain` both run: the momentum-encoder EMA with this iteration's m, the forward
/// of both views, zero the gradient, the backward, the per-tensor squared gradient norms (the
/// gradient monitor's input), and the optimizer update — which is skipped when the loss or a
/// gradient is not finite, so a diverged step never touches the weights.
public final class MoCoTrainingStep {
    public let model: MoCoModel
    public let optimizer: any Optimizer
    /// One element per trainable tensor (``MoCoModel/trainableSegments``).
    let squaredNorms: Tensor
    /// Data parallel: the gradient's bucketed all-reduce (nil in one process).
    let reduction: GradientReduction?
    /// DDP's bucket size: the predictor and the projector go out in the first bucket, the
    /// trunk in buckets of a block or more.
    public static let defaultBucketBytes = 4 << 20
    /// Test hook: called after the forward with the model and the 1-based step number, before the
    /// checks (a test poisons a weight here to exercise the non-finite stop).
    public var afterForward: ((MoCoModel, Int) throws -> Void)?
    /// Test hook: called after the optimizer update with the model and the step number (a test
    /// poisons a weight here, as an update that overflows would).
    public var afterUpdate: ((MoCoModel, Int) throws -> Void)?

    /// Data parallel: wall seconds spent after the backwards finishing the gradient all-reduce
    /// (what the overlap did not hide), and the buckets reduced.
    public var reductionExposure: (seconds: Double, buckets: Int) {
        (reduction?.exposedSeconds ?? 0, reduction?.buckets ?? 0)
    }

    /// What one iteration measured.
    public struct Outcome: Sendable {
        /// `ctr(q1, k2) + ctr(q2, k1)` of this iteration's forward (before the update).
        public let loss: Float
        /// ‖∂loss/∂θ‖² per trainable tensor, in layout order.
        public let squaredNorms: [Float]
        /// False when the loss or a gradient was not finite: then the optimizer did not run.
        public let applied: Bool
    }

    /// - Parameter bucketBytes: data parallel only: the all-reduce bucket (0: one blocking
    ///   all-reduce of the whole gradient after the backward).
    public init(model: MoCoModel, optimizer: any Optimizer, bucketBytes: Int = defaultBucketBytes) throws {
        self.model = model
        self.optimizer = optimizer
        reduction = model.communicator.isDistributed ? GradientReduction(model: model, bucketBytes: bucketBytes) : nil
        squaredNorms = try model.backend.makeTensor(shape: [model.trainableSegments.count])
        // Once now, so a backend's lasting per-table state (CLBackend uploads a chunk table) is
        // made before the first iteration, not from buffers that iteration's scratch would reuse:
        // after the first iteration nothing allocates.
        try model.backend.squaredNorms(output: squaredNorms, input: model.gradientTensor,
                                       segments: model.trainableSegments)
    }

    /// Runs the iteration on views already on the model's backend.
    ///
    /// - Parameters:
    ///   - learningRate: this iteration's lr (from ``Schedules``, or fixed for `step`).
    ///   - momentum: this iteration's EMA coefficient m.
    ///   - step: the 1-based number of this update (the optimizer's bias corrections).
    public func callAsFunction(x1: Tensor, x2: Tensor, learningRate: Double, momentum: Double,
                               step: Int) throws -> Outcome {
        let backend = model.backend
        try model.momentumUpdate(m: Float(momentum))
        let loss = try model.forward(x1: x1, x2: x2)
        try afterForward?(model, step)
        try model.zeroGradients()
        // Data parallel: the ranks' gradients summed (each rank's loss is its share of the
        // global batch's), bucket by bucket as the backward finishes them.
        try model.backward(x1: x1, x2: x2, finished: reduction?.finished)
        try reduction?.complete()
        try backend.squaredNorms(output: squaredNorms, input: model.gradientTensor, segments: model.trainableSegments)
        let squared = try backend.download(squaredNorms)
        guard loss.isFinite, squared.allSatisfy(\.isFinite) else {
            return Outcome(loss: loss, squaredNorms: squared, applied: false)
        }
        try optimizer.step(parameters: model.parameterTensor, gradients: model.gradientTensor,
                           learningRate: learningRate, step: step)
        try afterUpdate?(model, step)
        return Outcome(loss: loss, squaredNorms: squared, applied: true)
    }
}
