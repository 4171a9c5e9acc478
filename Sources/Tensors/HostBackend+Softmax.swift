import RealModule

/// Reference math for kernels/cl/softmax.cl (fused softmax cross-entropy, SPEC A.4) and
/// kernels/cl/l2norm.cl (`F.normalize`).
public enum LossReference {
    /// `F.normalize`'s floor on the norm.
    public static let normalizeEpsilon = 1e-12

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

    /// One row of `F.normalize(x, dim=1)`; returns the norm.
    public static func normalize<T: Real & BinaryFloatingPoint>(_ x: UnsafeBufferPointer<T>, into y: UnsafeMutableBufferPointer<T>) -> T {
        var sum: T = 0
        for value in x { sum += value * value }
        let norm = T.sqrt(sum)
        let denominator = max(norm, T(normalizeEpsilon))
        for i in x.indices { y[i] = x[i] / denominator }
        return norm
    }

    /// Backward of one row given the normalized output y: `(dy − y·⟨y, dy⟩) / max(norm, ε)`;
    /// below ε the normalization is a plain division by ε, whose derivative is `dy / ε`.
    public static func normalizeBackward<T: Real & BinaryFloatingPoint>(outputGradient dy: UnsafeBufferPointer<T>,
                                                  output y: UnsafeBufferPointer<T>, norm: T,
                                                  inputGradient dx: UnsafeMutableBufferPointer<T>) {
        let epsilon = T(normalizeEpsilon)
        guard norm > epsilon else {
            for i in dy.indices { dx[i] = dy[i] / epsilon }
            return
        }
        var dot: T = 0
        for i in dy.indices { dot += y[i] * dy[i] }
        for i in dy.indices { dx[i] = (dy[i] - y[i] * dot) / norm }
    }
}

extension HostBackend {
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

    public func l2NormalizeForward(output: Tensor, norms: Tensor, input: Tensor) throws {
        let (rows, columns) = try checkL2Normalize("l2NormalizeForward", rowsOf: input, norms: norms, sameSize: output)
        let x = pointer(input), y = pointer(output), n = pointer(norms)
        for row in 0..<rows {
            n[row] = LossReference.normalize(UnsafeBufferPointer(start: x + row * columns, count: columns),
                                             into: UnsafeMutableBufferPointer(start: y + row * columns, count: columns))
        }
    }

    public func l2NormalizeBackward(inputGradient: Tensor, outputGradient: Tensor, output: Tensor,
                                    norms: Tensor) throws {
        let (rows, columns) = try checkL2Normalize("l2NormalizeBackward", rowsOf: output, norms: norms,
                                                   sameSize: inputGradient, outputGradient)
        let dy = pointer(outputGradient), y = pointer(output), dx = pointer(inputGradient), n = pointer(norms)
        for row in 0..<rows {
            LossReference.normalizeBackward(
                outputGradient: UnsafeBufferPointer(start: dy + row * columns, count: columns),
                output: UnsafeBufferPointer(start: y + row * columns, count: columns), norm: n[row],
                inputGradient: UnsafeMutableBufferPointer(start: dx + row * columns, count: columns))
        }
    }
}
