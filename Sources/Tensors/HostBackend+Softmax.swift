import RealModule

/// Reference math for kernels/cl/softmax.cl (fused softmax cross-entropy, SPEC A.4).
public enum LossReference {
    /// One row: returns `scale·(logsumexp(z) − z[label])` and writes `scale·(softmax(z) − onehot)`.
    public static func softmaxCrossEntropy<T: Real & BinaryFloatingPoint>(logits: UnsafeBufferPointer<T>, label: Int, scale: T,
                                                    gradient: UnsafeMutableBufferPointer<T>) -> T {
        let maximum = logits.max() ?? 0
        var sum: T = 0
        for z in logits { sum += T.exp(z - maximum) }
        let logSumExp = maximum + T.log(sum)
        for j in logits.indices {
            let probability = T.exp(logits[j] - logSumExp)
            gradient[j] = scale * (probability - (j == label ? 1 : 0))
        }
        return scale * (logSumExp - logits[label])
    }
}

extension LossReference {
    /// One row of soft-target cross-entropy: returns `scale·Σ_j t_j·(lse − z_j)` and writes
    /// `scale·(T·softmax(z) − t)`, `T = Σ_j t_j`.
    public static func softTargetCrossEntropy<T: Real & BinaryFloatingPoint>(
        logits: UnsafeBufferPointer<T>, targets: UnsafeBufferPointer<T>, scale: T,
        gradient: UnsafeMutableBufferPointer<T>) -> T {
        let maximum = logits.max() ?? 0
        var sum: T = 0
        for z in logits { sum += T.exp(z - maximum) }
        let logSumExp = maximum + T.log(sum)
        var total: T = 0, value: T = 0
        for j in logits.indices {
            total += targets[j]
            value += targets[j] * (logSumExp - logits[j])
        }
        for j in logits.indices { gradient[j] = scale * (total * T.exp(logits[j] - logSumExp) - targets[j]) }
        return scale * value
    }
}

extension HostBackend {
    public func softTargetCrossEntropy(losses: Tensor, logitsGradient: Tensor, logits: Tensor, targets: Tensor,
                                       scale: Float) throws {
        let (rows, columns) = try checkSoftTargetCrossEntropy(losses: losses, logitsGradient: logitsGradient,
                                                              logits: logits, targets: targets)
        let z = pointer(logits), t = pointer(targets), dz = pointer(logitsGradient), loss = pointer(losses)
        HostParallel.forEachChunk(count: rows, minimumChunk: Self.normalizationRowGrain(columns)) { range in
            for row in range {
                loss[row] = LossReference.softTargetCrossEntropy(
                    logits: UnsafeBufferPointer(start: z + row * columns, count: columns),
                    targets: UnsafeBufferPointer(start: t + row * columns, count: columns), scale: scale,
                    gradient: UnsafeMutableBufferPointer(start: dz + row * columns, count: columns))
            }
        }
    }

    public func softmaxCrossEntropy(losses: Tensor, logitsGradient: Tensor, logits: Tensor, labels: Tensor,
                                    scale: Float) throws {
        let (rows, columns) = try checkSoftmaxCrossEntropy(losses: losses, logitsGradient: logitsGradient,
                                                           logits: logits, labels: labels)
        let label = rawPointer(labels).assumingMemoryBound(to: Int32.self)
        let z = pointer(logits), dz = pointer(logitsGradient), loss = pointer(losses)
        // Every label is checked before any row is written, so a bad label leaves the outputs alone.
        for row in 0..<rows {
            guard label[row] >= 0 && Int(label[row]) < columns else {
                throw BackendError.invalidArgument(operation: "softmaxCrossEntropy", reason:
                    "label \(label[row]) of row \(row) is outside [0, \(columns))")
            }
        }
        // Rows are independent: split over cores, each row computed exactly as the reference.
        HostParallel.forEachChunk(count: rows, minimumChunk: Self.normalizationRowGrain(columns)) { range in
            for row in range {
                loss[row] = LossReference.softmaxCrossEntropy(
                    logits: UnsafeBufferPointer(start: z + row * columns, count: columns), label: Int(label[row]),
                    scale: scale, gradient: UnsafeMutableBufferPointer(start: dz + row * columns, count: columns))
            }
        }
    }
}
