// Shape checks shared by every backend, so the host reference and the OpenCL launchers reject
// the same calls with the same messages.

extension Backend {
    /// Throws unless every buffer reaches past the segment table's last element.
    public func checkSegments(_ operation: String, _ segments: SegmentTable, _ tensors: Tensor...) throws {
        for tensor in tensors where tensor.count < segments.extent {
            throw BackendError.invalidArgument(operation: operation, reason:
                "a buffer of \(tensor.count) elements is shorter than the segment table's extent \(segments.extent)")
        }
    }

    /// (R, C) of `x` for `addBias` / `sumRows`, checking that `vector` has C elements.
    public func checkRowVector(_ operation: String, matrix x: Tensor, vector: Tensor) throws -> (rows: Int, columns: Int) {
        let (rows, columns) = rowsAndColumns(x)
        guard vector.count == columns else {
            throw BackendError.invalidArgument(operation: operation, reason:
                "a vector of \(vector.count) elements for \(columns) columns")
        }
        return (rows, columns)
    }

    /// (R, M) of the logits, checking losses (R), labels (R, int32) and the gradient (R, M).
    public func checkSoftmaxCrossEntropy(losses: Tensor, logitsGradient: Tensor, logits: Tensor,
                                         labels: Tensor) throws -> (rows: Int, columns: Int) {
        try checkOperands("softmaxCrossEntropy", losses, logitsGradient, logits)
        try checkOperands("softmaxCrossEntropy", [labels], dtype: .int32)
        let (rows, columns) = rowsAndColumns(logits)
        guard losses.count == rows, labels.count == rows, logitsGradient.count == logits.count else {
            throw BackendError.invalidArgument(operation: "softmaxCrossEntropy", reason:
                "logits \(logits.shape) need \(rows) losses and labels and an equal-sized gradient; got "
                + "\(losses.count), \(labels.count), \(logitsGradient.count)")
        }
        return (rows, columns)
    }

    /// (R, M) of soft-target cross-entropy's logits, checking the other operands' sizes.
    public func checkSoftTargetCrossEntropy(losses: Tensor, logitsGradient: Tensor, logits: Tensor,
                                            targets: Tensor) throws -> (rows: Int, columns: Int) {
        try checkOperands("softTargetCrossEntropy", losses, logitsGradient, logits, targets)
        let (rows, columns) = rowsAndColumns(logits)
        guard losses.count == rows, targets.count == logits.count, logitsGradient.count == logits.count else {
            throw BackendError.invalidArgument(operation: "softTargetCrossEntropy", reason:
                "logits \(logits.shape) need \(rows) losses and equal-sized targets and gradient; got "
                + "\(losses.count), \(targets.count), \(logitsGradient.count)")
        }
        return (rows, columns)
    }

    /// (R, C) of scaleRows' input, checking that the output has its size and `factors` R elements.
    public func checkScaleRows(output: Tensor, input: Tensor, factors: Tensor) throws -> (rows: Int, columns: Int) {
        try checkOperands("scaleRows", output, input, factors)
        let (rows, columns) = rowsAndColumns(input)
        guard output.count == input.count, factors.count == rows else {
            throw BackendError.invalidArgument(operation: "scaleRows", reason:
                "input \(input.shape) needs an output of \(input.count) and \(rows) factors; got \(output.count) and \(factors.count)")
        }
        return (rows, columns)
    }

    /// (R, C) of an L2-normalized tensor, checking that every other operand has its size and
    /// `norms` has R elements.
    public func checkL2Normalize(_ operation: String, rowsOf tensor: Tensor, norms: Tensor,
                                 sameSize others: Tensor...) throws -> (rows: Int, columns: Int) {
        try checkOperands(operation, [tensor, norms] + others)
        let (rows, columns) = rowsAndColumns(tensor)
        guard others.allSatisfy({ $0.count == tensor.count }), norms.count == rows else {
            throw BackendError.invalidArgument(operation: operation, reason:
                "\(tensor.shape) needs operands of the same size and \(rows) norms")
        }
        return (rows, columns)
    }

    /// Checks `squaredNorms` operands: one output element per segment, an input covering them all.
    public func checkSquaredNorms(output: Tensor, input: Tensor, segments: SegmentTable) throws {
        try checkOperands("squaredNorms", output, input)
        try checkSegments("squaredNorms", segments, input)
        guard output.count == segments.count else {
            throw BackendError.invalidArgument(operation: "squaredNorms", reason:
                "output has \(output.count) elements for \(segments.count) segments")
        }
    }

    /// The attention geometry of a forward call, with every operand's shape checked.
    public func checkAttentionForward(output: Tensor, logSumExp: Tensor, qkv: Tensor,
                                      heads: Int) throws -> AttentionGeometry {
        let operation = "attentionForward"
        try checkOperands(operation, output, logSumExp, qkv)
        let g = try AttentionGeometry(qkv: qkv, heads: heads, operation: operation)
        try g.expect(output, "output", g.outputShape, operation: operation)
        try g.expect(logSumExp, "logSumExp", g.statisticShape, operation: operation)
        return g
    }

    /// The attention geometry of a backward call, with every operand's shape checked.
    public func checkAttentionBackward(qkvGradient: Tensor, outputGradient: Tensor, qkv: Tensor, output: Tensor,
                                       logSumExp: Tensor, heads: Int) throws -> AttentionGeometry {
        let operation = "attentionBackward"
        try checkOperands(operation, qkvGradient, outputGradient, qkv, output, logSumExp)
        let g = try AttentionGeometry(qkv: qkv, heads: heads, operation: operation)
        try g.expect(qkvGradient, "qkvGradient", qkv.shape, operation: operation)
        try g.expect(outputGradient, "outputGradient", g.outputShape, operation: operation)
        try g.expect(output, "output", g.outputShape, operation: operation)
        try g.expect(logSumExp, "logSumExp", g.statisticShape, operation: operation)
        return g
    }
}
