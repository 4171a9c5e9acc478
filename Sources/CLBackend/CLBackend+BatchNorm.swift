import Tensors

// Launchers for kernels/cl/batchnorm.cl. Host reference: HostBackend+BatchNorm.swift.
// The variant (one work-item per 16 columns, or a work-group per block of columns) follows
// `kernelVariant`; the GPU geometry is `normalizationGroups` (CLBackend+LayerNorm.swift).
extension CLBackend {
    /// Global and local sizes of a kernel with 16 columns per work-item (CPU) or `lanes`
    /// work-items per column in groups of `columns` columns (GPU).
    func columnLaunch(columns: Int) -> (global: [Int], local: [Int]?) {
        let groups = normalizationGroups
        let block = Self.cpuColumnBlock
        return kernelVariant == .cpu ? ([(columns + block - 1) / block], nil)
            : ([columns, groups.lanes], [groups.columns, groups.lanes])
    }

    /// An optional tensor as a (buffer, offset, flag) argument triple. Absent ones pass
    /// `placeholder`, never read, since a null cl_mem argument is not portable across runtimes.
    func optionalArguments(_ tensor: Tensor?, placeholder: Tensor) -> [KernelArgument] {
        [.buffer(tensor ?? placeholder), .long(Int64(tensor?.offset ?? 0)), .int(tensor == nil ? 0 : 1)]
    }

    public func batchNormForward(output: Tensor, savedMean: Tensor, savedReciprocalStd: Tensor, input: Tensor,
                                 weight: Tensor?, bias: Tensor?, runningMean: Tensor, runningVariance: Tensor,
                                 momentum: Float, epsilon: Float, training: Bool) throws {
        try checkOperands("batchNormForward", [output, savedMean, savedReciprocalStd, input, runningMean,
                                               runningVariance]
                          + [weight, bias].compactMap { $0 })
        let shape = try NormalizationShape.batchNorm(
            "batchNormForward", input: input, training: training, likeInput: ["output": output],
            perColumn: ["savedMean": savedMean, "savedReciprocalStd": savedReciprocalStd, "weight": weight,
                        "bias": bias, "runningMean": runningMean, "runningVariance": runningVariance])
        _ = try int32Count(input.count, "batchNormForward")
        guard shape.rows > 0 else { return }
        let (global, local) = columnLaunch(columns: shape.columns)
        try launch(kernel("batchnorm_forward", family: "batchnorm", options: normalizationOptions),
                   label: "batchnorm_forward", global: global, local: local,
                   [.operand(output), .operand(savedMean),
                    .operand(savedReciprocalStd),
                    .operand(input)]
                   + optionalArguments(weight, placeholder: input) + optionalArguments(bias, placeholder: input)
                   + [.operand(runningMean),
                      .operand(runningVariance),
                      .int(Int32(shape.rows)), .int(Int32(shape.columns)), .float(momentum), .float(epsilon),
                      .int(training ? 1 : 0)])
    }

    public func batchNormBackward(inputGradient: Tensor, weightGradient: Tensor?, biasGradient: Tensor?,
                                  outputGradient: Tensor, input: Tensor, savedMean: Tensor, savedReciprocalStd: Tensor,
                                  weight: Tensor?) throws {
        try checkOperands("batchNormBackward", [inputGradient, outputGradient, input, savedMean, savedReciprocalStd]
                          + [weightGradient, biasGradient, weight].compactMap { $0 })
        let shape = try NormalizationShape.batchNorm(
            "batchNormBackward", input: input, training: true,
            likeInput: ["inputGradient": inputGradient, "outputGradient": outputGradient],
            perColumn: ["savedMean": savedMean, "savedReciprocalStd": savedReciprocalStd, "weight": weight,
                        "weightGradient": weightGradient, "biasGradient": biasGradient])
        _ = try int32Count(input.count, "batchNormBackward")
        let (global, local) = columnLaunch(columns: shape.columns)
        try launch(kernel("batchnorm_backward", family: "batchnorm", options: normalizationOptions),
                   label: "batchnorm_backward", global: global, local: local,
                   [.operand(inputGradient)]
                   + optionalArguments(weightGradient, placeholder: input)
                   + optionalArguments(biasGradient, placeholder: input)
                   + [.operand(outputGradient), .buffer(input),
                      .long(Int64(input.offset)), .operand(savedMean),
                      .operand(savedReciprocalStd)]
                   + optionalArguments(weight, placeholder: input)
                   + [.int(Int32(shape.rows)), .int(Int32(shape.columns))])
    }
}
