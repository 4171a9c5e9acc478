import Tensors

/// An optimizer over one flat parameter buffer (all trainable tensors live in one buffer, their
/// gradients and this optimizer's state in buffers of the same layout), as the reference's
/// `torch.optim` optimizers act on `model.parameters()`.
///
/// The model computes gradients and owns none of this: an optimizer allocates its state tensors
/// once, updates them in ``step(parameters:gradients:learningRate:step:)``, and names them for
/// checkpoints with torch's state keys (`exp_avg`, `exp_avg_sq`, `momentum_buffer`), so a
/// checkpoint stores `optimizer.<key>.<parameter name>`.
///
/// ```swift
/// let optimizer = try OptimizerKind.adamw.make(backend: backend, segments: model.trainableSegments,
///                                               weightDecay: 0.1)
/// try optimizer.step(parameters: model.parameterTensor, gradients: model.gradientTensor,
///                    learningRate: 1.5e-4, step: 1)
/// ```
public protocol Optimizer: AnyObject {
    /// Which optimizer this is (what a checkpoint's configuration records).
    var kind: OptimizerKind { get }
    /// The state tensors by checkpoint key, each over the whole trainable region (``SegmentTable/extent``).
    var state: [(key: String, tensor: Tensor)] { get }
    /// One update of `parameters` from `gradients` over this optimizer's segments.
    ///
    /// - Parameters:
    ///   - learningRate: this iteration's lr (the schedules are the caller's).
    ///   - step: the 1-based number of this update (AdamW's and LAMB's bias corrections).
    func step(parameters: Tensor, gradients: Tensor, learningRate: Double, step: Int) throws
}

/// Which optimizer a run uses (SPEC A.6): AdamW for ViTs (the reference's ViT recipes), LARS as
/// the reference's default (ResNets), SGD with momentum (the linear probe, SPEC A.8) and LAMB
/// (the paper's Fig. 3 compares it with AdamW).
public enum OptimizerKind: String, Codable, Sendable, CaseIterable {
    case adamw
    case lars
    case sgd
    case lamb

    /// A new optimizer with zeroed state over `segments` (a fresh run's first step).
    public func make(backend: any Backend, segments: SegmentTable, weightDecay: Double) throws -> any Optimizer {
        switch self {
        case .adamw: return try AdamW(backend: backend, segments: segments, weightDecay: weightDecay)
        case .lars: return try LARS(backend: backend, segments: segments, weightDecay: weightDecay)
        case .sgd: return try SGD(backend: backend, segments: segments, weightDecay: weightDecay)
        case .lamb: return try LAMB(backend: backend, segments: segments, weightDecay: weightDecay)
        }
    }

    /// The keys of ``Optimizer/state``, torch's names for this optimizer's per-parameter state.
    public var stateKeys: [String] {
        switch self {
        case .adamw, .lamb: return ["exp_avg", "exp_avg_sq"]
        case .lars, .sgd: return ["momentum_buffer"]
        }
    }

    /// The optimizer named by a `--optimizer` value; anything else is an error listing the names.
    public init(parsing text: String) throws {
        guard let kind = OptimizerKind(rawValue: text.lowercased()) else {
            throw PretrainError("--optimizer must be one of \(Self.allCases.map(\.rawValue).joined(separator: ", ")), "
                + "got '\(text)'")
        }
        self = kind
    }
}

extension Optimizer {
    /// The state as host arrays by key (for a checkpoint).
    public func stateValues(on backend: any Backend) throws -> [(key: String, values: [Float])] {
        try state.map { ($0.key, try backend.download($0.tensor)) }
    }

    /// Restores every state tensor from `values` (by key); a missing or mis-sized one is an error
    /// naming it, and nothing is uploaded unless all are present.
    public func restore(_ values: [String: [Float]], on backend: any Backend) throws {
        for (key, tensor) in state {
            guard let array = values[key] else {
                throw PretrainError("the checkpoint has no \(kind.rawValue) state '\(key)'; it was written with "
                    + "another optimizer, so continue it with that --optimizer or start a new run")
            }
            guard array.count == tensor.count else {
                throw PretrainError("the checkpoint's \(kind.rawValue) state '\(key)' has \(array.count) values; "
                    + "the model needs \(tensor.count)")
            }
        }
        for (key, tensor) in state { try backend.upload(values[key]!, to: tensor) }
    }
}

/// A zeroed state tensor over the segments' extent.
func zeroedState(_ backend: any Backend, _ segments: SegmentTable) throws -> Tensor {
    let tensor = try backend.makeTensor(shape: [segments.extent])
    try backend.fill(tensor, value: 0)
    return tensor
}
