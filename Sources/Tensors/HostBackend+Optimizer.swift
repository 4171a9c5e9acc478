import Foundation

/// Reference math for kernels/cl/optimizer.cl.
extension HostBackend {
    /// `torch.optim.AdamW` (single-tensor path), step by step in its order of operations.
    public func adamw(parameters: Tensor, gradients: Tensor, firstMoment: Tensor, secondMoment: Tensor,
                      segments: SegmentTable, step: AdamWStep) throws {
        try checkOperands("adamw", parameters, gradients, firstMoment, secondMoment)
        try checkSegments("adamw", segments, parameters, gradients, firstMoment, secondMoment)
        let k = AdamWConstants(step)
        let p = pointer(parameters), g = pointer(gradients), m = pointer(firstMoment), v = pointer(secondMoment)
        for run in segments.contiguousRuns {
            for i in run.offset..<(run.offset + run.count) {
                p[i] *= k.decay
                m[i] += k.oneMinusBeta1 * (g[i] - m[i])
                v[i] = v[i] * k.beta2 + k.oneMinusBeta2 * g[i] * g[i]
                let denominator = v[i].squareRoot() / k.biasCorrection2Root + k.epsilon
                p[i] -= k.stepSize * m[i] / denominator
            }
        }
    }

    public func lars(parameters: Tensor, gradients: Tensor, momentumBuffer: Tensor, segments: SegmentTable,
                     step: LARSStep) throws {
        try checkOperands("lars", parameters, gradients, momentumBuffer)
        try checkSegments("lars", segments, parameters, gradients, momentumBuffer)
        let p = pointer(parameters), g = pointer(gradients), mu = pointer(momentumBuffer)
        let weightDecay = Float(step.weightDecay), momentum = Float(step.momentum)
        let learningRate = Float(step.learningRate)
        for segment in segments.segments {
            let range = segment.offset..<(segment.offset + segment.count)
            var factor: Float = 1
            if segment.adapted {
                var parameterNorm = 0.0, gradientNorm = 0.0
                for i in range {
                    g[i] += weightDecay * p[i]
                    parameterNorm += Double(p[i]) * Double(p[i])
                    gradientNorm += Double(g[i]) * Double(g[i])
                }
                if parameterNorm > 0 && gradientNorm > 0 {
                    factor = Float(step.trustCoefficient * parameterNorm.squareRoot() / gradientNorm.squareRoot())
                }
            }
            for i in range {
                mu[i] = momentum * mu[i] + g[i] * factor
                p[i] -= learningRate * mu[i]
            }
        }
    }

    /// `torch.optim.SGD` (single-tensor path): `d_p = g + wd·p`, `buf = momentum·buf + d_p`,
    /// `p -= lr·buf`.
    public func sgd(parameters: Tensor, gradients: Tensor, momentumBuffer: Tensor, segments: SegmentTable,
                    step: SGDStep) throws {
        try checkOperands("sgd", parameters, gradients, momentumBuffer)
        try checkSegments("sgd", segments, parameters, gradients, momentumBuffer)
        let p = pointer(parameters), g = pointer(gradients), b = pointer(momentumBuffer)
        let weightDecay = Float(step.weightDecay), momentum = Float(step.momentum)
        let learningRate = Float(step.learningRate)
        for run in segments.contiguousRuns {
            for i in run.offset..<(run.offset + run.count) {
                g[i] += weightDecay * p[i]
                b[i] = momentum * b[i] + g[i]
                p[i] -= learningRate * b[i]
            }
        }
    }

    /// LAMB (You et al. 2020, Algorithm 2) with the norms of each segment summed in Double, as LARS.
    public func lamb(parameters: Tensor, gradients: Tensor, firstMoment: Tensor, secondMoment: Tensor,
                     segments: SegmentTable, step: LAMBStep) throws {
        try checkOperands("lamb", parameters, gradients, firstMoment, secondMoment)
        try checkSegments("lamb", segments, parameters, gradients, firstMoment, secondMoment)
        let k = LAMBConstants(step)
        let p = pointer(parameters), g = pointer(gradients), m = pointer(firstMoment), v = pointer(secondMoment)
        for segment in segments.segments {
            let range = segment.offset..<(segment.offset + segment.count)
            var parameterNorm = 0.0, updateNorm = 0.0
            for i in range {
                m[i] = k.beta1 * m[i] + k.oneMinusBeta1 * g[i]
                v[i] = k.beta2 * v[i] + k.oneMinusBeta2 * g[i] * g[i]
                var update = (m[i] / k.biasCorrection1) / ((v[i] / k.biasCorrection2).squareRoot() + k.epsilon)
                if segment.adapted {
                    update += k.weightDecay * p[i]
                    parameterNorm += Double(p[i]) * Double(p[i])
                    updateNorm += Double(update) * Double(update)
                }
                g[i] = update
            }
            var ratio: Float = 1
            if segment.adapted && parameterNorm > 0 && updateNorm > 0 {
                ratio = Float(parameterNorm.squareRoot() / updateNorm.squareRoot())
            }
            let scale = k.learningRate * ratio
            for i in range { p[i] -= scale * g[i] }
        }
    }

    public func momentumUpdate(target: Tensor, source: Tensor, momentum: Float) throws {
        try checkOperands("momentumUpdate", target, source)
        try checkSameCount("momentumUpdate", target, source)
        let xi = pointer(target), theta = pointer(source)
        for i in 0..<target.count { xi[i] = xi[i] * momentum + theta[i] * (1 - momentum) }
    }
}

/// The scalars of one AdamW step, formed in Double and rounded once, as PyTorch does.
public struct AdamWConstants {
    /// `1 − lr·wd` (decoupled weight decay).
    public let decay: Float
    public let oneMinusBeta1: Float
    public let beta2: Float
    public let oneMinusBeta2: Float
    /// `lr / (1 − β₁^t)`.
    public let stepSize: Float
    /// `√(1 − β₂^t)`.
    public let biasCorrection2Root: Float
    public let epsilon: Float

    public init(_ step: AdamWStep) {
        let t = Double(step.step)
        decay = Float(1 - step.learningRate * step.weightDecay)
        oneMinusBeta1 = Float(1 - step.beta1)
        beta2 = Float(step.beta2)
        oneMinusBeta2 = Float(1 - step.beta2)
        stepSize = Float(step.learningRate / (1 - pow(step.beta1, t)))
        biasCorrection2Root = Float((1 - pow(step.beta2, t)).squareRoot())
        epsilon = Float(step.epsilon)
    }
}

/// The scalars of one LAMB step, formed in Double and rounded once, as ``AdamWConstants``.
public struct LAMBConstants {
    public let beta1: Float
    public let oneMinusBeta1: Float
    public let beta2: Float
    public let oneMinusBeta2: Float
    /// `1 − β₁^t`.
    public let biasCorrection1: Float
    /// `1 − β₂^t`.
    public let biasCorrection2: Float
    public let epsilon: Float
    public let weightDecay: Float
    public let learningRate: Float

    public init(_ step: LAMBStep) {
        let t = Double(step.step)
        beta1 = Float(step.beta1)
        oneMinusBeta1 = Float(1 - step.beta1)
        beta2 = Float(step.beta2)
        oneMinusBeta2 = Float(1 - step.beta2)
        biasCorrection1 = Float(1 - pow(step.beta1, t))
        biasCorrection2 = Float(1 - pow(step.beta2, t))
        epsilon = Float(step.epsilon)
        weightDecay = Float(step.weightDecay)
        learningRate = Float(step.learningRate)
    }
}
