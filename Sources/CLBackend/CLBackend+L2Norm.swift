import Tensors

// Launchers for kernels/cl/l2norm.cl. Host reference: HostBackend+L2Norm.swift.
extension CLBackend {
    public func l2NormalizeForward(output: Tensor, norms: Tensor, input: Tensor) throws {
        let (rows, columns) = try checkL2Normalize("l2NormalizeForward", rowsOf: input, norms: norms, sameSize: output)
        _ = try int32Count(input.count, "l2NormalizeForward")
        try launch(kernel("l2norm_forward", family: "l2norm"), label: "l2norm_forward", global: [rows],
                   [.operand(output), .operand(norms), .operand(input), .int(Int32(rows)), .int(Int32(columns))])
    }

    public func l2NormalizeBackward(inputGradient: Tensor, outputGradient: Tensor, output: Tensor,
                                    norms: Tensor) throws {
        let (rows, columns) = try checkL2Normalize("l2NormalizeBackward", rowsOf: output, norms: norms,
                                                   sameSize: inputGradient, outputGradient)
        _ = try int32Count(output.count, "l2NormalizeBackward")
        try launch(kernel("l2norm_backward", family: "l2norm"), label: "l2norm_backward", global: [rows],
                   [.operand(inputGradient), .operand(outputGradient), .operand(output), .operand(norms),
                    .int(Int32(rows)), .int(Int32(columns))])
    }
}
