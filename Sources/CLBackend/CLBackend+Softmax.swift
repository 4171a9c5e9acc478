import Kernels

// Launchers for kernels/cl/softmax.cl and kernels/cl/l2norm.cl.
// Host reference: HostBackend+Softmax.swift.
extension CLBackend {
    /// Work-items per row in the GPU-class softmax (GROUP in softmax.cl).
    static let softmaxGroup = 128

    public func softmaxCrossEntropy(losses: Tensor, logitsGradient: Tensor, logits: Tensor, labels: Tensor,
                                    scale: Float) throws {
        try checkOperands("softmaxCrossEntropy", losses, logitsGradient, logits)
        try checkOperands("softmaxCrossEntropy", [labels], dtype: .int32)
        let (rows, columns) = rowsAndColumns(logits)
        guard losses.count == rows, labels.count == rows, logitsGradient.count == logits.count else {
            throw BackendError.invalidArgument(operation: "softmaxCrossEntropy", reason:
                "logits \(logits.shape) need \(rows) losses and labels and an equal-sized gradient; got "
                + "\(losses.count), \(labels.count), \(logitsGradient.count)")
        }
        _ = try int32Count(logits.count, "softmaxCrossEntropy")
        guard rows > 0 else { return }
        let arguments = operand(losses) + operand(logitsGradient) + operand(logits) + operand(labels)
            + [.int(Int32(rows)), .int(Int32(columns)), .float(scale)]
        let options = kernelVariant.buildOption + " -DGROUP=\(Self.softmaxGroup)"
        let entry = try kernel("softmax_cross_entropy", family: "softmax", options: options)
        switch kernelVariant {
        case .cpu:
            try launch(entry, label: "softmax_cross_entropy", global: [rows], arguments)
        case .gpu:
            try launch(entry, label: "softmax_cross_entropy", global: [Self.softmaxGroup, rows],
                       local: [Self.softmaxGroup, 1], arguments)
        }
    }

    public func l2NormalizeForward(output: Tensor, norms: Tensor, input: Tensor) throws {
        try checkOperands("l2NormalizeForward", output, norms, input)
        let (rows, columns) = rowsAndColumns(input)
        guard output.count == input.count, norms.count == rows else {
            throw BackendError.invalidArgument(operation: "l2NormalizeForward", reason:
                "input \(input.shape) needs an output of the same size and \(rows) norms")
        }
        _ = try int32Count(input.count, "l2NormalizeForward")
        try launch(kernel("l2_normalize", family: "l2norm"), label: "l2_normalize", global: [rows],
                   operand(output) + operand(norms) + operand(input) + [.int(Int32(rows)), .int(Int32(columns))])
    }

    public func l2NormalizeBackward(inputGradient: Tensor, outputGradient: Tensor, output: Tensor,
                                    norms: Tensor) throws {
        try checkOperands("l2NormalizeBackward", inputGradient, outputGradient, output, norms)
        let (rows, columns) = rowsAndColumns(output)
        guard inputGradient.count == output.count, outputGradient.count == output.count, norms.count == rows else {
            throw BackendError.invalidArgument(operation: "l2NormalizeBackward", reason:
                "output \(output.shape) needs gradients of the same size and \(rows) norms")
        }
        _ = try int32Count(output.count, "l2NormalizeBackward")
        try launch(kernel("l2_normalize_backward", family: "l2norm"), label: "l2_normalize_backward", global: [rows],
                   operand(inputGradient) + operand(outputGradient) + operand(output) + operand(norms)
                   + [.int(Int32(rows)), .int(Int32(columns))])
    }
}
