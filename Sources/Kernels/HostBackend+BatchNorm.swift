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
        let result = BatchNormReference.forward(input: copyOut(input), weight: weight.map(copyOut),
                                                bias: bias.map(copyOut), runningMean: copyOut(runningMean),
                                                runningVariance: copyOut(runningVariance), momentum: momentum,
                                                epsilon: epsilon, training: training)
        copyIn(result.output, to: output)
        copyIn(result.savedMean, to: savedMean)
        copyIn(result.savedReciprocalStd, to: savedReciprocalStd)
        copyIn(result.runningMean, to: runningMean)
        copyIn(result.runningVariance, to: runningVariance)
    }

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
        let result = BatchNormReference.backward(outputGradient: copyOut(outputGradient), input: copyOut(input),
                                                 savedMean: copyOut(savedMean),
                                                 savedReciprocalStd: copyOut(savedReciprocalStd),
                                                 weight: weight.map(copyOut))
        copyIn(result.inputGradient, to: inputGradient)
        if let weightGradient { addIn(result.weightGradient, to: weightGradient) }
        if let biasGradient { addIn(result.biasGradient, to: biasGradient) }
    }
}
