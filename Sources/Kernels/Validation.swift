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
}
