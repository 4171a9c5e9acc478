import Tensors

// Launchers for kernels/cl/knn.cl. Host reference: HostBackend+KNN.swift.
extension CLBackend {
    public func knnTopKReset(values: Tensor, indices: Tensor) throws {
        let (rows, k) = try checkKNNHeaps("knnTopKReset", values: values, indices: indices)
        let count = try int32Count(rows * k, "knnTopKReset")
        guard count > 0 else { return }
        try launch(kernel("knn_topk_reset", family: "knn"), label: "knn_topk_reset", global: [rows * k],
                   local: [Self.vectorLocalSize], [.operand(values), .operand(indices), .int(count)])
    }

    public func knnTopK(values: Tensor, indices: Tensor, similarities: Tensor, bankLabels: Tensor,
                        columnOffset: Int) throws {
        let (rows, k, columns) = try checkKNNTopK(values: values, indices: indices, similarities: similarities,
                                                  bankLabels: bankLabels, columnOffset: columnOffset)
        _ = try int32Count(values.count, "knnTopK")
        guard rows > 0, k > 0, columns > 0 else { return }
        // One work-item per query row: its heap is private to it, so no atomics or barriers.
        try launch(kernel("knn_topk", family: "knn"), label: "knn_topk", global: [rows],
                   [.operand(values), .operand(indices), .operand(similarities), .operand(bankLabels),
                    .int(Int32(rows)), .int(Int32(k)), .int(Int32(columns)), .int(Int32(columnOffset))])
    }

    public func knnVote(predictions: Tensor, values: Tensor, indices: Tensor, bankLabels: Tensor, classes: Int,
                        temperature: Float) throws {
        let (rows, k) = try checkKNNVote(predictions: predictions, values: values, indices: indices,
                                         bankLabels: bankLabels, classes: classes, temperature: temperature)
        _ = try int32Count(values.count, "knnVote")
        let rowCount = try int32Count(rows, "knnVote"), classCount = try int32Count(classes, "knnVote")
        guard rows > 0 else { return }
        try launch(kernel("knn_vote", family: "knn"), label: "knn_vote", global: [rows],
                   [.operand(predictions), .operand(values), .operand(indices), .operand(bankLabels),
                    .int(rowCount), .int(Int32(k)), .int(Int32(bankLabels.count)), .int(classCount),
                    .float(temperature)])
    }
}
