import Tensors

// Launchers for kernels/cl/layernorm.cl. Host reference: HostBackend+LayerNorm.swift.
// The variant (one work-item per row, or a work-group per row) follows `kernelVariant`.
extension CLBackend {
    /// Rows per partial sum of the weight and bias gradients: 16640 tokens make 130 blocks, enough
    /// work-items for any device, and the second stage reads only 130·C partials.
    static let layerNormRowBlock = 128

    /// Work-group geometry of the GPU variants of layernorm.cl and batchnorm.cl, clamped to the
    /// device: `row` work-items per LayerNorm row; `columns` × `lanes` for column reductions.
    struct NormalizationGroups {
        let row: Int
        let columns: Int
        let lanes: Int

        init(maxWorkGroupSize: Int) {
            // The tree reductions halve their width each step, so every size is a power of two.
            var limit = 1
            while limit * 2 <= maxWorkGroupSize { limit *= 2 }
            row = min(128, limit)
            columns = min(32, limit)
            lanes = min(8, limit / columns)
        }

        var buildOptions: String { "-DGROUP=\(row) -DCOLUMN_GROUP=\(columns) -DCOLUMN_LANES=\(lanes)" }
    }

    var normalizationGroups: NormalizationGroups { NormalizationGroups(maxWorkGroupSize: device.maxWorkGroupSize) }

    /// Build options of layernorm.cl and batchnorm.cl for the current `kernelVariant`.
    var normalizationOptions: String {
        kernelVariant == .cpu ? kernelVariant.buildOption
            : kernelVariant.buildOption + " " + normalizationGroups.buildOptions
    }

    /// Global and local sizes of a kernel with one row per work-item (CPU) or per work-group (GPU).
    func rowLaunch(rows: Int) -> (global: [Int], local: [Int]?) {
        kernelVariant == .cpu ? ([rows], nil) : ([rows * normalizationGroups.row], [normalizationGroups.row])
    }

    public func layerNormForward(output: Tensor, mean: Tensor, reciprocalStd: Tensor, input: Tensor, weight: Tensor,
                                 bias: Tensor, epsilon: Float) throws {
        try checkOperands("layerNormForward", output, mean, reciprocalStd, input, weight, bias)
        let shape = try NormalizationShape.layerNorm("layerNormForward", input: input, likeInput: ["output": output],
                                                     perRow: ["mean": mean, "reciprocalStd": reciprocalStd],
                                                     perColumn: ["weight": weight, "bias": bias])
        _ = try int32Count(input.count, "layerNormForward")
        guard shape.rows > 0 else { return }
        let (global, local) = rowLaunch(rows: shape.rows)
        try launch(kernel("layernorm_forward", family: "layernorm", options: normalizationOptions),
                   label: "layernorm_forward", global: global, local: local,
                   [.operand(output), .operand(mean),
                    .operand(reciprocalStd), .operand(input),
                    .operand(weight), .operand(bias),
                    .int(Int32(shape.rows)), .int(Int32(shape.columns)), .float(epsilon)])
    }

    public func layerNormBackward(inputGradient: Tensor, weightGradient: Tensor, biasGradient: Tensor,
                                  outputGradient: Tensor, input: Tensor, mean: Tensor, reciprocalStd: Tensor,
                                  weight: Tensor) throws {
        try checkOperands("layerNormBackward", inputGradient, weightGradient, biasGradient, outputGradient, input,
                          mean, reciprocalStd, weight)
        let shape = try NormalizationShape.layerNorm(
            "layerNormBackward", input: input, likeInput: ["inputGradient": inputGradient,
                                                           "outputGradient": outputGradient],
            perRow: ["mean": mean, "reciprocalStd": reciprocalStd],
            perColumn: ["weight": weight, "weightGradient": weightGradient, "biasGradient": biasGradient])
        _ = try int32Count(input.count, "layerNormBackward")
        guard shape.rows > 0 else { return }
        let options = normalizationOptions
        let statistics: [KernelArgument] = [.operand(input), .buffer(mean),
                                            .long(Int64(mean.offset)), .buffer(reciprocalStd),
                                            .long(Int64(reciprocalStd.offset))]

        // Parameter gradients first, so that they have read outputGradient before dx is written.
        let rowsPerBlock = Self.layerNormRowBlock
        let blocks = (shape.rows + rowsPerBlock - 1) / rowsPerBlock
        let partial = try makeTensor(shape: [2, blocks, shape.columns])
        let groups = normalizationGroups
        let block = Self.cpuColumnBlock
        let partialGlobal = kernelVariant == .cpu ? [(shape.columns + block - 1) / block, blocks]
            : [shape.columns, blocks * groups.lanes]
        let partialLocal = kernelVariant == .cpu ? nil : [groups.columns, groups.lanes]
        try launch(kernel("layernorm_backward_params_partial", family: "layernorm", options: options),
                   label: "layernorm_backward_params_partial", global: partialGlobal, local: partialLocal,
                   [.buffer(partial), .operand(outputGradient)] + statistics
                   + [.int(Int32(shape.rows)), .int(Int32(shape.columns)), .int(Int32(rowsPerBlock)),
                      .int(Int32(blocks))])
        try launch(kernel("layernorm_backward_params_reduce", family: "layernorm", options: options),
                   label: "layernorm_backward_params_reduce", global: [shape.columns], local: nil,
                   [.operand(weightGradient), .buffer(biasGradient),
                    .long(Int64(biasGradient.offset)), .buffer(partial), .int(Int32(blocks)), .int(Int32(shape.columns))])

        let (global, local) = rowLaunch(rows: shape.rows)
        try launch(kernel("layernorm_backward_input", family: "layernorm", options: options),
                   label: "layernorm_backward_input", global: global, local: local,
                   [.operand(inputGradient), .buffer(outputGradient),
                    .long(Int64(outputGradient.offset))] + statistics
                   + [.operand(weight), .int(Int32(shape.rows)), .int(Int32(shape.columns))])
    }
}
