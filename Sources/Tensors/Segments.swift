/// Ranges of a flat buffer that an op treats as separate tensors: the trainable parameters for
/// AdamW, the per-tensor norms for LARS and the gradient monitor.
///
/// Built once from the model's parameter table and reused every step; backends keep a device
/// copy keyed by the table's identity, so passing it costs nothing after the first step.
public final class SegmentTable: @unchecked Sendable {
    public struct Segment: Equatable, Sendable {
        /// First element in the flat buffer.
        public let offset: Int
        public let count: Int
        /// LARS: whether weight decay and the trust ratio apply (tensors with ndim > 1, SPEC A.6).
        public let adapted: Bool

        public init(offset: Int, count: Int, adapted: Bool = true) {
            self.offset = offset
            self.count = count
            self.adapted = adapted
        }
    }

    public let segments: [Segment]

    public init(_ segments: [Segment]) {
        precondition(segments.allSatisfy { $0.offset >= 0 && $0.count >= 0 }, "negative segment")
        self.segments = segments
    }

    public var count: Int { segments.count }

    /// Adjacent segments merged into maximal contiguous runs (for ops that need no per-tensor
    /// state, such as AdamW: one launch per run instead of one per tensor).
    public var contiguousRuns: [(offset: Int, count: Int)] {
        var runs: [(offset: Int, count: Int)] = []
        for segment in segments.sorted(by: { $0.offset < $1.offset }) where segment.count > 0 {
            if let last = runs.last, last.offset + last.count == segment.offset {
                runs[runs.count - 1].count += segment.count
            } else {
                runs.append((segment.offset, segment.count))
            }
        }
        return runs
    }

    /// Elements a flat buffer needs to hold every segment.
    public var extent: Int { segments.map { $0.offset + $0.count }.max() ?? 0 }
}

/// Hyper-parameters of one AdamW step (PyTorch `torch.optim.AdamW`, decoupled weight decay;
/// SPEC A.6: betas (0.9, 0.999), eps 1e-8, decay on every trainable tensor). Doubles, as
/// PyTorch's Python scalars are: constants such as `1 − β₂` are formed in double and only then
/// rounded to float, which matters at the 1e-5 level for golden comparisons.
public struct AdamWStep: Sendable {
    public var learningRate: Double
    public var beta1: Double
    public var beta2: Double
    public var epsilon: Double
    public var weightDecay: Double
    /// 1-based step count, for the bias corrections.
    public var step: Int

    public init(learningRate: Double, weightDecay: Double, step: Int, beta1: Double = 0.9, beta2: Double = 0.999,
                epsilon: Double = 1e-8) {
        self.learningRate = learningRate
        self.weightDecay = weightDecay
        self.step = step
        self.beta1 = beta1
        self.beta2 = beta2
        self.epsilon = epsilon
    }
}

/// Hyper-parameters of one LARS step (the reference's `moco/optimizer.py`, SPEC A.6).
public struct LARSStep: Sendable {
    public var learningRate: Double
    public var weightDecay: Double
    public var momentum: Double
    public var trustCoefficient: Double

    public init(learningRate: Double, weightDecay: Double, momentum: Double = 0.9, trustCoefficient: Double = 0.001) {
        self.learningRate = learningRate
        self.weightDecay = weightDecay
        self.momentum = momentum
        self.trustCoefficient = trustCoefficient
    }
}

/// Hyper-parameters of one SGD step (`torch.optim.SGD` with momentum, the linear probe's
/// optimizer, SPEC A.8: momentum 0.9, wd 0).
public struct SGDStep: Sendable {
    public var learningRate: Double
    public var weightDecay: Double
    public var momentum: Double

    public init(learningRate: Double, weightDecay: Double = 0, momentum: Double = 0.9) {
        self.learningRate = learningRate
        self.weightDecay = weightDecay
        self.momentum = momentum
    }
}

/// Hyper-parameters of one LAMB step (You et al., "Large Batch Optimization for Deep Learning:
/// Training BERT in 76 minutes", ICLR 2020, Algorithm 2, with φ the identity): the paper's Fig. 3
/// compares it with AdamW. ε 1e-6 as in the LAMB paper's experiments.
public struct LAMBStep: Sendable {
    public var learningRate: Double
    public var weightDecay: Double
    /// 1-based step count, for the bias corrections.
    public var step: Int
    public var beta1: Double
    public var beta2: Double
    public var epsilon: Double

    public init(learningRate: Double, weightDecay: Double, step: Int, beta1: Double = 0.9, beta2: Double = 0.999,
                epsilon: Double = 1e-6) {
        self.learningRate = learningRate
        self.weightDecay = weightDecay
        self.step = step
        self.beta1 = beta1
        self.beta2 = beta2
        self.epsilon = epsilon
    }
}
