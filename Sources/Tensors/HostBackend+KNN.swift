import Foundation

// MARK: Shape checks shared by every backend (the host and the OpenCL launchers reject the same calls)

extension Backend {
    /// (R, k) of a pair of heaps: `values` (R, k) float32 and `indices` (R, k) int32.
    public func checkKNNHeaps(_ operation: String, values: Tensor, indices: Tensor) throws -> (rows: Int, k: Int) {
        try checkOperands(operation, [values])
        try checkOperands(operation, [indices], dtype: .int32)
        guard values.shape.count == 2, indices.shape == values.shape else {
            throw BackendError.invalidArgument(operation: operation, reason:
                "values \(values.shape) and indices \(indices.shape) must both be (R, k)")
        }
        return (values.shape[0], values.shape[1])
    }

    /// (R, k, M) of a ``Backend/knnTopK(values:indices:similarities:bankLabels:columnOffset:)`` call,
    /// checking that the tile (R, M) has the heaps' rows and lies inside the bank.
    public func checkKNNTopK(values: Tensor, indices: Tensor, similarities: Tensor, bankLabels: Tensor,
                             columnOffset: Int) throws -> (rows: Int, k: Int, columns: Int) {
        let operation = "knnTopK"
        let (rows, k) = try checkKNNHeaps(operation, values: values, indices: indices)
        try checkOperands(operation, [similarities])
        try checkOperands(operation, [bankLabels], dtype: .int32)
        guard similarities.shape.count == 2, similarities.shape[0] == rows else {
            throw BackendError.invalidArgument(operation: operation, reason:
                "similarities \(similarities.shape) must be (R, M) with R = \(rows), the heaps' rows")
        }
        let columns = similarities.shape[1]
        guard columnOffset >= 0, columnOffset + columns <= bankLabels.count else {
            throw BackendError.invalidArgument(operation: operation, reason:
                "the tile's bank columns \(columnOffset)..<\(columnOffset + columns) are outside the bank of "
                + "\(bankLabels.count) labels")
        }
        try checkBankFitsIndices(operation, bankLabels)
        return (rows, k, columns)
    }

    /// (R, k) of a ``Backend/knnVote(predictions:values:indices:bankLabels:classes:temperature:)`` call.
    public func checkKNNVote(predictions: Tensor, values: Tensor, indices: Tensor, bankLabels: Tensor, classes: Int,
                             temperature: Float) throws -> (rows: Int, k: Int) {
        let operation = "knnVote"
        let (rows, k) = try checkKNNHeaps(operation, values: values, indices: indices)
        try checkOperands(operation, [predictions, bankLabels], dtype: .int32)
        guard predictions.count == rows else {
            throw BackendError.invalidArgument(operation: operation, reason:
                "\(predictions.count) predictions for heaps of \(rows) rows")
        }
        guard classes > 0 else {
            throw BackendError.invalidArgument(operation: operation, reason: "classes is \(classes); it must be positive")
        }
        guard temperature > 0, temperature.isFinite else {
            throw BackendError.invalidArgument(operation: operation, reason:
                "temperature is \(temperature); it must be positive and finite (InstDisc uses 0.07)")
        }
        try checkBankFitsIndices(operation, bankLabels)
        return (rows, k)
    }

    /// Heaps hold bank columns as int32.
    private func checkBankFitsIndices(_ operation: String, _ bankLabels: Tensor) throws {
        guard bankLabels.count <= Int(Int32.max) else {
            throw BackendError.invalidArgument(operation: operation, reason:
                "a bank of \(bankLabels.count) columns does not fit the heaps' int32 indices; split the bank")
        }
    }
}

// MARK: Reference math for kernels/cl/knn.cl

/// The running top-k and the weighted vote of InstDisc (Wu et al. 2018, Sec. 3.4), one row at a
/// time, step for step as kernels/cl/knn.cl, so both backends keep exactly the same pairs.
enum KNNReference {
    /// Merges one row of a tile into its min-heap (`knn_topk`): a column with a non-negative
    /// label whose similarity is strictly larger than the root replaces it and sifts down, moving
    /// to the smaller child (the left one when both are equal).
    static func merge(row: UnsafePointer<Float>, labels: UnsafePointer<Int32>, columns: Int, firstColumn: Int,
                      values: UnsafeMutablePointer<Float>, indices: UnsafeMutablePointer<Int32>, k: Int) {
        var minimum = values[0]
        for j in 0..<columns {
            let x = row[j]
            // `x > minimum` is false for NaN: a NaN similarity is never kept.
            guard labels[j] >= 0, x > minimum else { continue }
            var hole = 0
            while true {
                let left = 2 * hole + 1
                if left >= k { break }
                var child = left, childValue = values[left]
                if left + 1 < k && values[left + 1] < childValue {
                    child = left + 1
                    childValue = values[child]
                }
                if !(childValue < x) { break }
                values[hole] = childValue
                indices[hole] = indices[child]
                hole = child
            }
            values[hole] = x
            indices[hole] = Int32(firstColumn + j)
            minimum = values[0]
        }
    }

    /// The class with the largest `Σ exp(s/T)` over one row's kept pairs (summed per class in
    /// slot order, in Double), the smallest class among equal totals, −1 for an empty heap.
    /// `totals` has one zero per class on entry and is left so. Labels were checked by the caller.
    static func vote(values: UnsafePointer<Float>, indices: UnsafePointer<Int32>, k: Int, labels: UnsafePointer<Int32>,
                     temperature: Double, totals: UnsafeMutablePointer<Double>) -> Int32 {
        for slot in 0..<k where indices[slot] >= 0 {
            let label = labels[Int(indices[slot])]
            if label >= 0 { totals[Int(label)] += exp(Double(values[slot]) / temperature) }
        }
        var best: Int32 = -1, bestTotal = 0.0
        for slot in 0..<k where indices[slot] >= 0 {
            let label = labels[Int(indices[slot])]
            guard label >= 0 else { continue }
            let total = totals[Int(label)]
            if best < 0 || total > bestTotal || (total == bestTotal && label < best) {
                best = label
                bestTotal = total
            }
        }
        for slot in 0..<k where indices[slot] >= 0 {
            let label = labels[Int(indices[slot])]
            if label >= 0 { totals[Int(label)] = 0 }
        }
        return best
    }
}

extension HostBackend {
    public func knnTopKReset(values: Tensor, indices: Tensor) throws {
        let (rows, k) = try checkKNNHeaps("knnTopKReset", values: values, indices: indices)
        UnsafeMutableBufferPointer(start: pointer(values), count: rows * k).update(repeating: -.infinity)
        UnsafeMutableBufferPointer(start: rawPointer(indices).assumingMemoryBound(to: Int32.self), count: rows * k)
            .update(repeating: -1)
    }

    public func knnTopK(values: Tensor, indices: Tensor, similarities: Tensor, bankLabels: Tensor,
                        columnOffset: Int) throws {
        let (rows, k, columns) = try checkKNNTopK(values: values, indices: indices, similarities: similarities,
                                                  bankLabels: bankLabels, columnOffset: columnOffset)
        guard rows > 0, k > 0, columns > 0 else { return }
        let heapValues = pointer(values), heapIndices = rawPointer(indices).assumingMemoryBound(to: Int32.self)
        let s = pointer(similarities)
        let labels = rawPointer(bankLabels).assumingMemoryBound(to: Int32.self) + columnOffset
        // Rows own their heaps: split over cores, each row merged exactly as the kernel does.
        HostParallel.forEachChunk(count: rows, minimumChunk: Self.normalizationRowGrain(columns)) { range in
            for row in range {
                KNNReference.merge(row: s + row * columns, labels: labels, columns: columns, firstColumn: columnOffset,
                                   values: heapValues + row * k, indices: heapIndices + row * k, k: k)
            }
        }
    }

    public func knnVote(predictions: Tensor, values: Tensor, indices: Tensor, bankLabels: Tensor, classes: Int,
                        temperature: Float) throws {
        let (rows, k) = try checkKNNVote(predictions: predictions, values: values, indices: indices,
                                         bankLabels: bankLabels, classes: classes, temperature: temperature)
        guard rows > 0 else { return }
        let heapValues = pointer(values), heapIndices = rawPointer(indices).assumingMemoryBound(to: Int32.self)
        let labels = rawPointer(bankLabels).assumingMemoryBound(to: Int32.self)
        let output = rawPointer(predictions).assumingMemoryBound(to: Int32.self)
        // Every kept pair is checked before any prediction is written, so a bad call leaves them alone.
        let bank = bankLabels.count
        for row in 0..<rows {
            for slot in 0..<k where heapIndices[row * k + slot] >= 0 {
                let column = Int(heapIndices[row * k + slot])
                guard column < bank else {
                    throw BackendError.invalidArgument(operation: "knnVote", reason:
                        "row \(row) keeps bank column \(column), outside the bank of \(bank) labels")
                }
                guard Int(labels[column]) < classes else {
                    throw BackendError.invalidArgument(operation: "knnVote", reason:
                        "bank label \(labels[column]) of column \(column) (kept by row \(row)) is outside [0, \(classes))")
                }
            }
        }
        let t = Double(temperature)
        HostParallel.forEachChunk(count: rows, minimumChunk: Self.normalizationRowGrain(k)) { range in
            let totals = UnsafeMutablePointer<Double>.allocate(capacity: classes)
            totals.initialize(repeating: 0, count: classes)
            defer { totals.deallocate() }
            for row in range {
                output[row] = KNNReference.vote(values: heapValues + row * k, indices: heapIndices + row * k, k: k,
                                                labels: labels, temperature: t, totals: totals)
            }
        }
    }
}
