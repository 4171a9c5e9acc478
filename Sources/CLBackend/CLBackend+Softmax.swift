import Tensors

// Launchers for kernels/cl/softmax.cl. Host reference: HostBackend+Softmax.swift.
extension CLBackend {
    /// Work-items per row in the GPU-class softmax (GROUP in softmax.cl).
    static let softmaxGroup = 128

    public func softmaxCrossEntropy(losses: Tensor, logitsGradient: Tensor, logits: Tensor, labels: Tensor,
                                    scale: Float) throws {
        let (rows, columns) = try checkSoftmaxCrossEntropy(losses: losses, logitsGradient: logitsGradient,
                                                           logits: logits, labels: labels)
        _ = try int32Count(logits.count, "softmaxCrossEntropy")
        guard rows > 0 else { return }
        let arguments: [KernelArgument] = [.operand(losses), .operand(logitsGradient), .operand(logits),
                        .operand(labels),
                                           .int(Int32(rows)), .int(Int32(columns)), .float(scale)]
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

    public func softTargetCrossEntropy(losses: Tensor, logitsGradient: Tensor, logits: Tensor, targets: Tensor,
                                       scale: Float) throws {
        let (rows, columns) = try checkSoftTargetCrossEntropy(losses: losses, logitsGradient: logitsGradient,
                                                              logits: logits, targets: targets)
        _ = try int32Count(logits.count, "softTargetCrossEntropy")
        guard rows > 0 else { return }
        let entry = try kernel("soft_target_cross_entropy", family: "softmax",
                               options: kernelVariant.buildOption + " -DGROUP=\(Self.softmaxGroup)")
        try launch(entry, label: "soft_target_cross_entropy", global: [rows],
                   [.operand(losses), .operand(logitsGradient), .operand(logits), .operand(targets),
                    .int(Int32(rows)), .int(Int32(columns)), .float(scale)])
    }
}
