import Tensors

// Launchers for kernels/cl/optimizer.cl. Host reference: HostBackend+Optimizer.swift.
extension CLBackend {
    /// One work-item per element over `count` elements of optimizer.cl, built with the variant option.
    func launchOptimizer(_ name: String, count: Int, _ arguments: [KernelArgument]) throws {
        try launch(kernel(name, family: "optimizer", options: kernelVariant.buildOption), label: name, global: [count],
                   local: [Self.vectorLocalSize], arguments)
    }

    public func adamw(parameters: Tensor, gradients: Tensor, firstMoment: Tensor, secondMoment: Tensor,
                      segments: SegmentTable, step: AdamWStep) throws {
        try checkOperands("adamw", parameters, gradients, firstMoment, secondMoment)
        try checkSegments("adamw", segments, parameters, gradients, firstMoment, secondMoment)
        let k = AdamWConstants(step)
        // One launch per contiguous run of trainable tensors (typically a handful per model).
        for run in segments.contiguousRuns {
            let count = try int32Count(run.count, "adamw")
            try launchOptimizer("adamw", count: run.count,
                                [.operand(parameters), .operand(gradients), .operand(firstMoment),
                                 .operand(secondMoment), .long(Int64(run.offset)), .int(count), .float(k.decay), .float(k.oneMinusBeta1),
                                   .float(k.beta2), .float(k.oneMinusBeta2), .float(k.stepSize),
                                   .float(k.biasCorrection2Root), .float(k.epsilon)])
        }
    }

    public func lars(parameters: Tensor, gradients: Tensor, momentumBuffer: Tensor, segments: SegmentTable,
                     step: LARSStep) throws {
        try checkOperands("lars", parameters, gradients, momentumBuffer)
        try checkSegments("lars", segments, parameters, gradients, momentumBuffer)
        let table = try deviceSegments(segments)
        guard table.chunks > 0 else { return }
        let partialParameters = try makeTensor(shape: [table.chunks])
        let partialGradients = try makeTensor(shape: [table.chunks])
        let factors = try makeTensor(shape: [segments.count])
        try launch(kernel("lars_decay_norms", family: "optimizer"), label: "lars_decay_norms", global: [table.chunks],
                   [.buffer(partialParameters), .buffer(partialGradients)] + [.operand(parameters),
                    .operand(gradients), .buffer(table.chunkSegment), .buffer(table.chunkBegin), .buffer(table.chunkCount),
                      .buffer(table.segmentAdapted), .int(Int32(table.chunks)), .float(Float(step.weightDecay))])
        try launch(kernel("lars_factors", family: "optimizer"), label: "lars_factors", global: [segments.count],
                   [.buffer(factors), .buffer(partialParameters), .buffer(partialGradients),
                    .buffer(table.segmentFirstChunk), .buffer(table.segmentChunks), .buffer(table.segmentAdapted),
                    .int(Int32(segments.count)), .float(Float(step.trustCoefficient))])
        try launch(kernel("lars_update", family: "optimizer"), label: "lars_update", global: [table.chunks],
                   [.operand(parameters), .operand(gradients), .operand(momentumBuffer), .buffer(factors),
                    .buffer(table.chunkSegment), .buffer(table.chunkBegin), .buffer(table.chunkCount),
                      .int(Int32(table.chunks)), .float(Float(step.momentum)), .float(Float(step.learningRate))])
    }

    public func sgd(parameters: Tensor, gradients: Tensor, momentumBuffer: Tensor, segments: SegmentTable,
                    step: SGDStep) throws {
        try checkOperands("sgd", parameters, gradients, momentumBuffer)
        try checkSegments("sgd", segments, parameters, gradients, momentumBuffer)
        for run in segments.contiguousRuns {
            let count = try int32Count(run.count, "sgd")
            try launchOptimizer("sgd", count: run.count,
                                [.operand(parameters), .operand(gradients), .operand(momentumBuffer),
                                 .long(Int64(run.offset)), .int(count), .float(Float(step.weightDecay)),
                                 .float(Float(step.momentum)), .float(Float(step.learningRate))])
        }
    }

    public func lamb(parameters: Tensor, gradients: Tensor, firstMoment: Tensor, secondMoment: Tensor,
                     segments: SegmentTable, step: LAMBStep) throws {
        try checkOperands("lamb", parameters, gradients, firstMoment, secondMoment)
        try checkSegments("lamb", segments, parameters, gradients, firstMoment, secondMoment)
        let table = try deviceSegments(segments)
        guard table.chunks > 0 else { return }
        let k = LAMBConstants(step)
        let partialParameters = try makeTensor(shape: [table.chunks])
        let partialUpdates = try makeTensor(shape: [table.chunks])
        let ratios = try makeTensor(shape: [segments.count])
        try launch(kernel("lamb_moments_norms", family: "optimizer"), label: "lamb_moments_norms",
                   global: [table.chunks],
                   [.buffer(partialParameters), .buffer(partialUpdates), .operand(parameters), .operand(gradients),
                    .operand(firstMoment), .operand(secondMoment), .buffer(table.chunkSegment),
                    .buffer(table.chunkBegin), .buffer(table.chunkCount), .buffer(table.segmentAdapted),
                    .int(Int32(table.chunks)), .float(k.beta1), .float(k.oneMinusBeta1), .float(k.beta2),
                    .float(k.oneMinusBeta2), .float(k.biasCorrection1), .float(k.biasCorrection2),
                    .float(k.epsilon), .float(k.weightDecay)])
        try launch(kernel("lamb_factors", family: "optimizer"), label: "lamb_factors", global: [segments.count],
                   [.buffer(ratios), .buffer(partialParameters), .buffer(partialUpdates),
                    .buffer(table.segmentFirstChunk), .buffer(table.segmentChunks), .buffer(table.segmentAdapted),
                    .int(Int32(segments.count))])
        try launch(kernel("lamb_update", family: "optimizer"), label: "lamb_update", global: [table.chunks],
                   [.operand(parameters), .operand(gradients), .buffer(ratios), .buffer(table.chunkSegment),
                    .buffer(table.chunkBegin), .buffer(table.chunkCount), .int(Int32(table.chunks)),
                    .float(k.learningRate)])
    }

    public func momentumUpdate(target: Tensor, source: Tensor, momentum: Float) throws {
        try checkOperands("momentumUpdate", target, source)
        try checkSameCount("momentumUpdate", target, source)
        let n = try int32Count(target.count, "momentumUpdate")
        try launchOptimizer("momentum_update", count: target.count,
                            [.operand(target), .operand(source), .int(n), .float(momentum)])
    }
}
