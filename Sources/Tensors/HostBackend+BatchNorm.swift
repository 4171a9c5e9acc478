// BatchNorm1d on the host, and the reference for kernels/cl/batchnorm.cl.

extension NormalizationShape {
    /// BatchNorm1d: input must be (R, C), R the batch; training needs R ≥ 2 (as PyTorch: "Expected
    /// more than 1 value per channel when training").
    /// - Parameters:
    ///   - likeInput: tensors with as many elements as the input (output, gradients).
    ///   - perColumn: tensors with one element per feature (statistics, γ, β, gradients); nil
    ///     entries (affine-free) are skipped.
    public static func batchNorm(_ operation: String, input: Tensor, training: Bool,
                                 likeInput: KeyValuePairs<String, Tensor>,
                                 perColumn: KeyValuePairs<String, Tensor?>) throws -> NormalizationShape {
        guard input.shape.count == 2, input.shape[1] > 0 else {
            throw BackendError.invalidArgument(operation: operation, reason:
                "input has shape \(input.shape); BatchNorm1d takes (R, C) with C ≥ 1 features")
        }
        let shape = NormalizationShape(rows: input.shape[0], columns: input.shape[1])
        guard !training || shape.rows >= 2 else {
            throw BackendError.invalidArgument(operation: operation, reason:
                "input has \(shape.rows) row(s); training-mode BatchNorm needs at least 2 values per feature "
                + "(batch statistics of one row are undefined); use a batch of 2 or more, or evaluation mode")
        }
        try shape.expect(operation, likeInput, count: input.count, "one per input element")
        for (label, tensor) in perColumn {
            guard let tensor else { continue }
            try shape.expect(operation, [label: tensor], count: shape.columns, "one per feature")
        }
        return shape
    }
}

/// BatchNorm1d in plain loops, exactly as `torch.nn.BatchNorm1d` (SPEC A.3), generic over the
/// storage type so the finite-difference tests run it in Double; sums in Double for any `T`.
/// Shapes: input (R, C) flat; weight, bias and every statistic (C). nil weight/bias: affine-free.
public enum BatchNormReference {
    public struct Forward<T: BinaryFloatingPoint> {
        public var output: [T]
        public var savedMean: [T]
        public var savedReciprocalStd: [T]
        /// The running statistics after the call (unchanged in evaluation mode).
        public var runningMean: [T]
        public var runningVariance: [T]
    }

    public static func forward<T: BinaryFloatingPoint>(input: [T], weight: [T]?, bias: [T]?, runningMean: [T],
                                                       runningVariance: [T], momentum: T, epsilon: T,
                                                       training: Bool) -> Forward<T> {
        let columns = runningMean.count, rows = input.count / columns
        precondition(rows * columns == input.count && runningVariance.count == columns
                     && (!training || rows >= 2), "BatchNorm operands do not fit (R, C)")
        var result = Forward(output: [T](repeating: 0, count: input.count), savedMean: runningMean,
                             savedReciprocalStd: runningMean, runningMean: runningMean,
                             runningVariance: runningVariance)
        for c in 0..<columns {
            var m = Double(runningMean[c]), variance = Double(runningVariance[c])
            if training {
                var sum = 0.0
                for r in 0..<rows { sum += Double(input[r * columns + c]) }
                m = sum / Double(rows)
                var squares = 0.0
                for r in 0..<rows {
                    let d = Double(input[r * columns + c]) - m
                    squares += d * d
                }
                variance = squares / Double(rows)
                let unbiased = squares / Double(rows - 1)
                let mo = Double(momentum)
                result.runningMean[c] = T((1 - mo) * Double(runningMean[c]) + mo * m)
                result.runningVariance[c] = T((1 - mo) * Double(runningVariance[c]) + mo * unbiased)
            }
            let s = 1 / (variance + Double(epsilon)).squareRoot()
            let gamma = weight.map { Double($0[c]) } ?? 1, beta = bias.map { Double($0[c]) } ?? 0
            for r in 0..<rows {
                result.output[r * columns + c] = T((Double(input[r * columns + c]) - m) * s * gamma + beta)
            }
            result.savedMean[c] = T(m)
            result.savedReciprocalStd[c] = T(s)
        }
        return result
    }

    /// Backward of training mode; `weightGradient` and `biasGradient` are this pass's sums alone
    /// (the backend adds them into the parameter gradients).
    public static func backward<T: BinaryFloatingPoint>(outputGradient: [T], input: [T], savedMean: [T],
                                                        savedReciprocalStd: [T], weight: [T]?)
        -> (inputGradient: [T], weightGradient: [T], biasGradient: [T]) {
        let columns = savedMean.count, rows = input.count / columns
        precondition(rows * columns == input.count && outputGradient.count == input.count
                     && savedReciprocalStd.count == columns, "BatchNorm operands do not fit (R, C)")
        var inputGradient = [T](repeating: 0, count: input.count)
        var weightGradient = [T](repeating: 0, count: columns), biasGradient = weightGradient
        for c in 0..<columns {
            let m = Double(savedMean[c]), s = Double(savedReciprocalStd[c])
            var sumDy = 0.0, sumDyXhat = 0.0
            for r in 0..<rows {
                let dy = Double(outputGradient[r * columns + c])
                sumDy += dy
                sumDyXhat += dy * (Double(input[r * columns + c]) - m) * s
            }
            let gamma = weight.map { Double($0[c]) } ?? 1
            let n = Double(rows)
            for r in 0..<rows {
                let index = r * columns + c
                let xhat = (Double(input[index]) - m) * s
                inputGradient[index] = T(gamma * s / n * (n * Double(outputGradient[index]) - sumDy - xhat * sumDyXhat))
            }
            weightGradient[c] = T(sumDyXhat)
            biasGradient[c] = T(sumDy)
        }
        return (inputGradient, weightGradient, biasGradient)
    }
}

extension HostBackend {
    public func batchNormForward(output: Tensor, savedMean: Tensor, savedReciprocalStd: Tensor, input: Tensor,
                                 weight: Tensor?, bias: Tensor?, runningMean: Tensor, runningVariance: Tensor,
                                 momentum: Float, epsilon: Float, training: Bool) throws {
        try checkOperands("batchNormForward", [output, savedMean, savedReciprocalStd, input, runningMean, runningVariance]
                          + [weight, bias].compactMap { $0 })
        _ = try NormalizationShape.batchNorm(
            "batchNormForward", input: input, training: training, likeInput: ["output": output],
            perColumn: ["savedMean": savedMean, "savedReciprocalStd": savedReciprocalStd, "weight": weight,
                        "bias": bias, "runningMean": runningMean, "runningVariance": runningVariance])
        let (rows, columns) = (input.shape[0], input.shape[1])
        let x = pointer(input), y = pointer(output), saveMean = pointer(savedMean)
        let saveRstd = pointer(savedReciprocalStd), runMean = pointer(runningMean), runVar = pointer(runningVariance)
        let gammas = weight.map(pointer), betas = bias.map(pointer)
        // Features split over cores (column ranges, each walking all rows in order): every
        // statistic is summed exactly as `BatchNormReference.forward` sums it.
        HostParallel.forEachChunk(count: columns, minimumChunk: Self.batchNormColumnGrain(rows)) { range in
            let (start, width) = (range.lowerBound, range.count)
            var buffer = [Double](repeating: 0, count: 2 * width)
            buffer.withUnsafeMutableBufferPointer { buffer in
                let m = buffer.baseAddress!, s = m + width
                for c in 0..<width { m[c] = Double(runMean[start + c]) }
                for c in 0..<width { s[c] = Double(runVar[start + c]) }    // the variance, until below
                if training {
                    for c in 0..<width { m[c] = 0 }
                    for r in 0..<rows {
                        let line = x + r * columns + start
                        for c in 0..<width { m[c] += Double(line[c]) }
                    }
                    for c in 0..<width { m[c] /= Double(rows) }
                    for c in 0..<width { s[c] = 0 }
                    for r in 0..<rows {
                        let line = x + r * columns + start
                        for c in 0..<width {
                            let d = Double(line[c]) - m[c]
                            s[c] += d * d
                        }
                    }
                    let mo = Double(momentum)
                    for c in 0..<width {
                        let unbiased = s[c] / Double(rows - 1)
                        s[c] /= Double(rows)
                        runMean[start + c] = Float((1 - mo) * Double(runMean[start + c]) + mo * m[c])
                        runVar[start + c] = Float((1 - mo) * Double(runVar[start + c]) + mo * unbiased)
                    }
                }
                for c in 0..<width { s[c] = 1 / (s[c] + Double(epsilon)).squareRoot() }
                for r in 0..<rows {
                    let line = x + r * columns + start, out = y + r * columns + start
                    for c in 0..<width {
                        let gamma = gammas.map { Double($0[start + c]) } ?? 1
                        let beta = betas.map { Double($0[start + c]) } ?? 0
                        out[c] = Float((Double(line[c]) - m[c]) * s[c] * gamma + beta)
                    }
                }
                for c in 0..<width {
                    saveMean[start + c] = Float(m[c])
                    saveRstd[start + c] = Float(s[c])
                }
            }
        }
    }

    /// Features per chunk below which BatchNorm runs inline (~16 K elements; at least a cache line).
    static func batchNormColumnGrain(_ rows: Int) -> Int { max(16, HostParallel.elementwiseGrain / max(1, rows)) }

    public func batchNormBackward(inputGradient: Tensor, weightGradient: Tensor?, biasGradient: Tensor?,
                                  outputGradient: Tensor, input: Tensor, savedMean: Tensor, savedReciprocalStd: Tensor,
                                  weight: Tensor?) throws {
        try checkOperands("batchNormBackward", [inputGradient, outputGradient, input, savedMean, savedReciprocalStd]
                          + [weightGradient, biasGradient, weight].compactMap { $0 })
        _ = try NormalizationShape.batchNorm(
            "batchNormBackward", input: input, training: true,
            likeInput: ["inputGradient": inputGradient, "outputGradient": outputGradient],
            perColumn: ["savedMean": savedMean, "savedReciprocalStd": savedReciprocalStd, "weight": weight,
                        "weightGradient": weightGradient, "biasGradient": biasGradient])
        let (rows, columns) = (input.shape[0], input.shape[1])
        let x = pointer(input), dy = pointer(outputGradient), dx = pointer(inputGradient)
        let means = pointer(savedMean), rstd = pointer(savedReciprocalStd)
        let gammas = weight.map(pointer), dw = weightGradient.map(pointer), db = biasGradient.map(pointer)
        let n = Double(rows)
        // As the forward: column ranges per core, rows in order, the reference's arithmetic.
        HostParallel.forEachChunk(count: columns, minimumChunk: Self.batchNormColumnGrain(rows)) { range in
            let (start, width) = (range.lowerBound, range.count)
            var buffer = [Double](repeating: 0, count: 2 * width)
            buffer.withUnsafeMutableBufferPointer { buffer in
                let sumDy = buffer.baseAddress!, sumDyXhat = sumDy + width
                for r in 0..<rows {
                    let line = x + r * columns + start, gradient = dy + r * columns + start
                    for c in 0..<width {
                        let g = Double(gradient[c])
                        sumDy[c] += g
                        sumDyXhat[c] += g * (Double(line[c]) - Double(means[start + c])) * Double(rstd[start + c])
                    }
                }
                for r in 0..<rows {
                    let line = x + r * columns + start, gradient = dy + r * columns + start
                    let out = dx + r * columns + start
                    for c in 0..<width {
                        let m = Double(means[start + c]), s = Double(rstd[start + c])
                        let gamma = gammas.map { Double($0[start + c]) } ?? 1
                        let xhat = (Double(line[c]) - m) * s
                        out[c] = Float(gamma * s / n * (n * Double(gradient[c]) - sumDy[c] - xhat * sumDyXhat[c]))
                    }
                }
                if let dw { for c in 0..<width { dw[start + c] += Float(sumDyXhat[c]) } }
                if let db { for c in 0..<width { db[start + c] += Float(sumDy[c]) } }
            }
        }
    }
}
