import RealModule

/// Reference math for kernels/cl/l2norm.cl (`F.normalize(x, dim=1)`, eps 1e-12).
public enum L2NormReference {
    /// `F.normalize`'s floor on the norm.
    public static let epsilon = 1e-12

    /// One row of `F.normalize(x, dim=1)`; returns the norm.
    public static func normalize<T: Real & BinaryFloatingPoint>(_ x: UnsafeBufferPointer<T>, into y: UnsafeMutableBufferPointer<T>) -> T {
        var sum: T = 0
        for value in x { sum += value * value }
        let norm = T.sqrt(sum)
        let denominator = max(norm, T(epsilon))
        for i in x.indices { y[i] = x[i] / denominator }
        return norm
    }

    /// Backward of one row given the normalized output y: `(dy − y·⟨y, dy⟩) / max(norm, ε)`;
    /// below ε the normalization is a plain division by ε, whose derivative is `dy / ε`.
    public static func normalizeBackward<T: Real & BinaryFloatingPoint>(outputGradient dy: UnsafeBufferPointer<T>,
                                                  output y: UnsafeBufferPointer<T>, norm: T,
                                                  inputGradient dx: UnsafeMutableBufferPointer<T>) {
        let epsilon = T(epsilon)
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
    public func l2NormalizeForward(output: Tensor, norms: Tensor, input: Tensor) throws {
        let (rows, columns) = try checkL2Normalize("l2NormalizeForward", rowsOf: input, norms: norms, sameSize: output)
        let x = pointer(input), y = pointer(output), n = pointer(norms)
        for row in 0..<rows {
            n[row] = L2NormReference.normalize(UnsafeBufferPointer(start: x + row * columns, count: columns),
                                             into: UnsafeMutableBufferPointer(start: y + row * columns, count: columns))
        }
    }

    public func l2NormalizeBackward(inputGradient: Tensor, outputGradient: Tensor, output: Tensor,
                                    norms: Tensor) throws {
        let (rows, columns) = try checkL2Normalize("l2NormalizeBackward", rowsOf: output, norms: norms,
                                                   sameSize: inputGradient, outputGradient)
        let dy = pointer(outputGradient), y = pointer(output), dx = pointer(inputGradient), n = pointer(norms)
        for row in 0..<rows {
            L2NormReference.normalizeBackward(
                outputGradient: UnsafeBufferPointer(start: dy + row * columns, count: columns),
                output: UnsafeBufferPointer(start: y + row * columns, count: columns), norm: n[row],
                inputGradient: UnsafeMutableBufferPointer(start: dx + row * columns, count: columns))
        }
    }
}
