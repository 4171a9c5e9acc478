// Default implementations of the op set: each throws `BackendError.unsupported`, so a backend
// that lacks an op says so by name instead of failing to build or falling back silently.
// A backend implements an op by declaring the same method; that declaration wins.

extension Backend {
    func unsupported(_ operation: String) -> BackendError {
        .unsupported(operation: operation, backend: name, reason: "not implemented on this backend")
    }

    public func gelu(output: Tensor, input: Tensor) throws {
        throw unsupported("gelu")
    }

    public func geluBackward(inputGradient: Tensor, outputGradient: Tensor, input: Tensor) throws {
        throw unsupported("geluBackward")
    }

    public func relu(output: Tensor, input: Tensor) throws {
        throw unsupported("relu")
    }

    public func reluBackward(inputGradient: Tensor, outputGradient: Tensor, output: Tensor) throws {
        throw unsupported("reluBackward")
    }

    public func add(output: Tensor, _ a: Tensor, _ b: Tensor) throws {
        throw unsupported("add")
    }

    public func scale(_ x: Tensor, by factor: Float) throws {
        throw unsupported("scale")
    }

    public func addBias(_ x: Tensor, bias: Tensor) throws {
        throw unsupported("addBias")
    }

    public func sumRows(output: Tensor, input: Tensor) throws {
        throw unsupported("sumRows")
    }

    public func squaredNorms(output: Tensor, input: Tensor, segments: SegmentTable) throws {
        throw unsupported("squaredNorms")
    }

    public func adamw(parameters: Tensor, gradients: Tensor, firstMoment: Tensor, secondMoment: Tensor,
                      segments: SegmentTable, step: AdamWStep) throws {
        throw unsupported("adamw")
    }

    public func lars(parameters: Tensor, gradients: Tensor, momentumBuffer: Tensor, segments: SegmentTable,
                     step: LARSStep) throws {
        throw unsupported("lars")
    }

    public func sgd(parameters: Tensor, gradients: Tensor, momentumBuffer: Tensor, segments: SegmentTable,
                    step: SGDStep) throws {
        throw unsupported("sgd")
    }

    public func lamb(parameters: Tensor, gradients: Tensor, firstMoment: Tensor, secondMoment: Tensor,
                     segments: SegmentTable, step: LAMBStep) throws {
        throw unsupported("lamb")
    }

    public func knnTopK(values: Tensor, indices: Tensor, similarities: Tensor, bankLabels: Tensor,
                        columnOffset: Int) throws {
        throw unsupported("knnTopK")
    }

    public func knnTopKReset(values: Tensor, indices: Tensor) throws {
        throw unsupported("knnTopKReset")
    }

    public func knnVote(predictions: Tensor, values: Tensor, indices: Tensor, bankLabels: Tensor, classes: Int,
                        temperature: Float) throws {
        throw unsupported("knnVote")
    }

    public func momentumUpdate(target: Tensor, source: Tensor, momentum: Float) throws {
        throw unsupported("momentumUpdate")
    }

    public func layerNormForward(output: Tensor, mean: Tensor, reciprocalStd: Tensor, input: Tensor, weight: Tensor,
                                 bias: Tensor, epsilon: Float) throws {
        throw unsupported("layerNormForward")
    }

    public func layerNormBackward(inputGradient: Tensor, weightGradient: Tensor, biasGradient: Tensor,
                                  outputGradient: Tensor, input: Tensor, mean: Tensor, reciprocalStd: Tensor,
                                  weight: Tensor) throws {
        throw unsupported("layerNormBackward")
    }

    public func batchNormForward(output: Tensor, savedMean: Tensor, savedReciprocalStd: Tensor, input: Tensor,
                                 weight: Tensor?, bias: Tensor?, runningMean: Tensor, runningVariance: Tensor,
                                 momentum: Float, epsilon: Float, training: Bool) throws {
        throw unsupported("batchNormForward")
    }

    public func batchNormBackward(inputGradient: Tensor, weightGradient: Tensor?, biasGradient: Tensor?,
                                  outputGradient: Tensor, input: Tensor, savedMean: Tensor,
                                  savedReciprocalStd: Tensor, weight: Tensor?) throws {
        throw unsupported("batchNormBackward")
    }

    public func softmaxCrossEntropy(losses: Tensor, logitsGradient: Tensor, logits: Tensor, labels: Tensor,
                                    scale: Float) throws {
        throw unsupported("softmaxCrossEntropy")
    }

    public func softTargetCrossEntropy(losses: Tensor, logitsGradient: Tensor, logits: Tensor, targets: Tensor,
                                       scale: Float) throws {
        throw unsupported("softTargetCrossEntropy")
    }

    public func scaleRows(output: Tensor, input: Tensor, factors: Tensor) throws {
        throw unsupported("scaleRows")
    }

    public func l2NormalizeForward(output: Tensor, norms: Tensor, input: Tensor) throws {
        throw unsupported("l2NormalizeForward")
    }

    public func l2NormalizeBackward(inputGradient: Tensor, outputGradient: Tensor, output: Tensor, norms: Tensor) throws {
        throw unsupported("l2NormalizeBackward")
    }

    public func patchEmbedForward(output: Tensor, images: Tensor, weight: Tensor, bias: Tensor, patchSize: Int,
                                  firstToken: Int) throws {
        throw unsupported("patchEmbedForward")
    }

    public func patchEmbedBackward(weightGradient: Tensor, biasGradient: Tensor, outputGradient: Tensor, images: Tensor,
                                   patchSize: Int, firstToken: Int) throws {
        throw unsupported("patchEmbedBackward")
    }

    public func attentionForward(output: Tensor, logSumExp: Tensor, qkv: Tensor, heads: Int) throws {
        throw unsupported("attentionForward")
    }

    public func attentionBackward(qkvGradient: Tensor, outputGradient: Tensor, qkv: Tensor, output: Tensor,
                                  logSumExp: Tensor, heads: Int) throws {
        throw unsupported("attentionBackward")
    }

}
