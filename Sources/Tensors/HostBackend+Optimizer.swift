import Foundation

/// Reference math for kernels/cl/reduce.cl and kernels/cl/optimizer.cl.
extension HostBackend {
    public func squaredNorms(output: Tensor, input: Tensor, segments: SegmentTable) throws {
        try checkSquaredNorms(output: output, input: input, segments: segments)
        let x = pointer(input), y = pointer(output)
        for (index, segment) in segments.segments.enumerated() {
            var sum = 0.0
            for i in segment.offset..<(segment.offset + segment.count) { sum += Double(x[i]) * Double(x[i]) }
            y[index] = Float(sum)
        }
    }

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
