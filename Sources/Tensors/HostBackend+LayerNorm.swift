// LayerNorm on the host, and the reference for kernels/cl/layernorm.cl.

/// The (R, C) of a normalization op, checked against every operand before any work is queued.
/// Both backends validate through it, so they reject exactly the same calls with the same words.
public struct NormalizationShape: Equatable, Sendable {
    public let rows: Int
    public let columns: Int

    /// LayerNorm: C is `input`'s last dimension and every leading dimension flattens into R.
    /// - Parameters:
    ///   - likeInput: tensors with as many elements as the input (output, gradients).
    ///   - perRow: tensors with one element per row (mean, reciprocalStd).
    ///   - perColumn: tensors with one element per feature (weight, bias and their gradients).
    public static func layerNorm(_ operation: String, input: Tensor, likeInput: KeyValuePairs<String, Tensor>,
                                 perRow: KeyValuePairs<String, Tensor>,
                                 perColumn: KeyValuePairs<String, Tensor>) throws -> NormalizationShape {
        guard let columns = input.shape.last, columns > 0 else {
            throw BackendError.invalidArgument(operation: operation, reason:
                "input has shape \(input.shape); LayerNorm needs at least one dimension and C ≥ 1 features in the last")
        }
        let shape = NormalizationShape(rows: input.count / columns, columns: columns)
        try shape.expect(operation, likeInput, count: input.count, "one per input element")
        try shape.expect(operation, perRow, count: shape.rows, "one per row")
        try shape.expect(operation, perColumn, count: columns, "one per feature")
        return shape
    }

    func expect(_ operation: String, _ tensors: KeyValuePairs<String, Tensor>, count: Int, _ meaning: String) throws {
        for (label, tensor) in tensors where tensor.count != count {
            throw BackendError.invalidArgument(operation: operation, reason:
                "\(label) has \(tensor.count) elements (shape \(tensor.shape)) but input (R, C) = (\(rows), \(columns)) "
                + "needs \(count) (\(meaning))")
        }
    }
}

/// LayerNorm in plain loops (SPEC A.2; `torch.nn.LayerNorm`, biased variance), generic over the
/// storage type so the finite-difference tests run it in Double. Sums are taken in Double for any
/// `T`: a Float running sum of 768 values near 100 is off by ~1e-4, far more than the kernels.
/// Shapes: input (R, C) flat, weight and bias (C), mean and reciprocalStd (R).
public enum LayerNormReference {
    public static func forward<T: BinaryFloatingPoint>(input: [T], weight: [T], bias: [T], epsilon: T)
        -> (output: [T], mean: [T], reciprocalStd: [T]) {
        let columns = weight.count, rows = input.count / columns
        precondition(rows * columns == input.count && bias.count == columns, "LayerNorm operands do not fit (R, C)")
        var output = [T](repeating: 0, count: input.count)
        var mean = [T](repeating: 0, count: rows), reciprocalStd = [T](repeating: 0, count: rows)
        for r in 0..<rows {
            let start = r * columns
            var sum = 0.0
            for c in 0..<columns { sum += Double(input[start + c]) }
            let m = sum / Double(columns)
            var squares = 0.0
            for c in 0..<columns {
                let d = Double(input[start + c]) - m
                squares += d * d
            }
            let s = 1 / (squares / Double(columns) + Double(epsilon)).squareRoot()
            for c in 0..<columns {
                let xhat = (Double(input[start + c]) - m) * s
                output[start + c] = T(xhat * Double(weight[c]) + Double(bias[c]))
            }
            mean[r] = T(m)
            reciprocalStd[r] = T(s)
        }
        return (output, mean, reciprocalStd)
    }

    /// The gradients of one backward pass; `weightGradient` and `biasGradient` are this pass's
    /// sums alone (the backend adds them into the parameter gradients).
    public static func backward<T: BinaryFloatingPoint>(outputGradient: [T], input: [T], mean: [T], reciprocalStd: [T],
                                                        weight: [T])
        -> (inputGradient: [T], weightGradient: [T], biasGradient: [T]) {
        let columns = weight.count, rows = mean.count
        precondition(rows * columns == input.count && outputGradient.count == input.count
                     && reciprocalStd.count == rows, "LayerNorm operands do not fit (R, C)")
        var inputGradient = [T](repeating: 0, count: input.count)
        var weightGradient = [Double](repeating: 0, count: columns), biasGradient = weightGradient
        var xhat = [Double](repeating: 0, count: columns), g = xhat
        for r in 0..<rows {
            let start = r * columns
            let m = Double(mean[r]), s = Double(reciprocalStd[r])
            var sumG = 0.0, sumGXhat = 0.0
            for c in 0..<columns {
                let dy = Double(outputGradient[start + c])
                xhat[c] = (Double(input[start + c]) - m) * s
                g[c] = dy * Double(weight[c])
                sumG += g[c]
                sumGXhat += g[c] * xhat[c]
                weightGradient[c] += dy * xhat[c]
                biasGradient[c] += dy
            }
            let meanG = sumG / Double(columns), meanGXhat = sumGXhat / Double(columns)
            for c in 0..<columns { inputGradient[start + c] = T(s * (g[c] - meanG - xhat[c] * meanGXhat)) }
        }
        return (inputGradient, weightGradient.map { T($0) }, biasGradient.map { T($0) })
    }
}

// The host ops: the reference's Double arithmetic, element for element, on tensors in place (no
// array copies), rows split over cores by ``HostParallel``. Row sums use four accumulators (a
// fixed order, so still deterministic) instead of one serial chain. The weight and bias gradients
// sum over rows: per fixed row block partials, added in block order, whatever the number of cores.
extension HostBackend {
    public func layerNormForward(output: Tensor, mean: Tensor, reciprocalStd: Tensor, input: Tensor, weight: Tensor,
                                 bias: Tensor, epsilon: Float) throws {
        try checkOperands("layerNormForward", output, mean, reciprocalStd, input, weight, bias)
        let shape = try NormalizationShape.layerNorm("layerNormForward", input: input, likeInput: ["output": output],
                                                     perRow: ["mean": mean, "reciprocalStd": reciprocalStd],
                                                     perColumn: ["weight": weight, "bias": bias])
        let (rows, columns) = (shape.rows, shape.columns)
        let x = pointer(input), y = pointer(output), means = pointer(mean), rstd = pointer(reciprocalStd)
        let w = copyOut(weight).map(Double.init), b = copyOut(bias).map(Double.init)
        let count = Double(columns), eps = Double(epsilon)
        w.withUnsafeBufferPointer { w in
            b.withUnsafeBufferPointer { b in
                HostParallel.forEachChunk(count: rows, minimumChunk: Self.normalizationRowGrain(columns)) { range in
                    for r in range {
                        let line = x + r * columns, out = y + r * columns
                        let m = Self.sum(line, columns) { $0 } / count
                        let squares = Self.sum(line, columns) { ($0 - m) * ($0 - m) }
                        let s = 1 / (squares / count + eps).squareRoot()
                        for c in 0..<columns { out[c] = Float((Double(line[c]) - m) * s * w[c] + b[c]) }
                        means[r] = Float(m)
                        rstd[r] = Float(s)
                    }
                }
            }
        }
    }

    public func layerNormBackward(inputGradient: Tensor, weightGradient: Tensor, biasGradient: Tensor,
                                  outputGradient: Tensor, input: Tensor, mean: Tensor, reciprocalStd: Tensor,
                                  weight: Tensor) throws {
        try checkOperands("layerNormBackward", inputGradient, weightGradient, biasGradient, outputGradient, input,
                          mean, reciprocalStd, weight)
        let shape = try NormalizationShape.layerNorm(
            "layerNormBackward", input: input, likeInput: ["inputGradient": inputGradient, "outputGradient": outputGradient],
            perRow: ["mean": mean, "reciprocalStd": reciprocalStd],
            perColumn: ["weight": weight, "weightGradient": weightGradient, "biasGradient": biasGradient])
        let (rows, columns) = (shape.rows, shape.columns)
        let x = pointer(input), dy = pointer(outputGradient), dx = pointer(inputGradient)
        let means = pointer(mean), rstd = pointer(reciprocalStd)
        let dw = pointer(weightGradient), db = pointer(biasGradient)
        let w = copyOut(weight).map(Double.init)
        // dw = Σ dy·x̂ and db = Σ dy over rows, as 2·columns Double sums in fixed row blocks
        // (HostParallel.orderedBlockSums: deterministic on any machine). Each row is read whole
        // before its dx is written, so dx may alias dy or x.
        let sums = w.withUnsafeBufferPointer { w in
            HostParallel.orderedBlockSums(rows: rows, width: 2 * columns) { range, partial in
                for r in range {
                    Self.layerNormBackwardRow(out: dx + r * columns, dwPartial: partial, dbPartial: partial + columns,
                                              x: x + r * columns, dy: dy + r * columns, mean: Double(means[r]),
                                              reciprocalStd: Double(rstd[r]), weight: w.baseAddress!, columns: columns)
                }
            }
        }
        for c in 0..<columns {
            dw[c] += Float(sums[c])
            db[c] += Float(sums[columns + c])
        }
    }

    /// One row of the backward: dx = s·(g − mean(g) − x̂·mean(g·x̂)), g = dy·w, x̂ = (x − μ)·s;
    /// adds dy·x̂ and dy into the block's partials.
    @inline(never)
    static func layerNormBackwardRow(out: UnsafeMutablePointer<Float>, dwPartial: UnsafeMutablePointer<Double>,
                                     dbPartial: UnsafeMutablePointer<Double>, x: UnsafePointer<Float>,
                                     dy: UnsafePointer<Float>, mean m: Double, reciprocalStd s: Double,
                                     weight w: UnsafePointer<Double>, columns: Int) {
        var sumG = 0.0, sumGXhat = 0.0, sumG1 = 0.0, sumGXhat1 = 0.0
        var c = 0
        while c + 2 <= columns {
            let xhat0 = (Double(x[c]) - m) * s, xhat1 = (Double(x[c + 1]) - m) * s
            let dy0 = Double(dy[c]), dy1 = Double(dy[c + 1])
            let g0 = dy0 * w[c], g1 = dy1 * w[c + 1]
            sumG += g0
            sumG1 += g1
            sumGXhat += g0 * xhat0
            sumGXhat1 += g1 * xhat1
            dwPartial[c] += dy0 * xhat0
            dwPartial[c + 1] += dy1 * xhat1
            dbPartial[c] += dy0
            dbPartial[c + 1] += dy1
            c += 2
        }
        if c < columns {
            let xhat0 = (Double(x[c]) - m) * s, dy0 = Double(dy[c]), g0 = dy0 * w[c]
            sumG += g0
            sumGXhat += g0 * xhat0
            dwPartial[c] += dy0 * xhat0
            dbPartial[c] += dy0
        }
        let count = Double(columns)
        let meanG = (sumG + sumG1) / count, meanGXhat = (sumGXhat + sumGXhat1) / count
        for c in 0..<columns {
            let xhat = (Double(x[c]) - m) * s
            out[c] = Float(s * (Double(dy[c]) * w[c] - meanG - xhat * meanGXhat))
        }
    }

    /// Rows per chunk below which a normalization runs inline (~16 K elements).
    static func normalizationRowGrain(_ columns: Int) -> Int { max(1, HostParallel.elementwiseGrain / max(1, columns)) }

    /// `Σ f(x[i])` over one row in Double with four interleaved accumulators, combined as
    /// `(s0 + s1) + (s2 + s3)`: a fixed order, and four independent add chains instead of one.
    @inline(__always)
    static func sum(_ line: UnsafePointer<Float>, _ count: Int, _ f: (Double) -> Double) -> Double {
        var s0 = 0.0, s1 = 0.0, s2 = 0.0, s3 = 0.0
        var i = 0
        while i + 4 <= count {
            s0 += f(Double(line[i]))
            s1 += f(Double(line[i + 1]))
            s2 += f(Double(line[i + 2]))
            s3 += f(Double(line[i + 3]))
            i += 4
        }
        while i < count {
            s0 += f(Double(line[i]))
            i += 1
        }
        return (s0 + s1) + (s2 + s3)
    }
}

// A tensor's elements as an array (LayerNorm's weight and bias, widened to Double once per call).
extension HostBackend {
    func copyOut(_ tensor: Tensor) -> [Float] {
        Array(UnsafeBufferPointer(start: pointer(tensor), count: tensor.count))
    }
}
