import Collective
import Tensors

/// Training-mode BatchNorm1d over (R, C) as the model runs it: the backend's op in one process,
/// and across a data-parallel group `nn.SyncBatchNorm`: the batch statistics of the **global**
/// batch in the forward (two all-reduced sums per channel: Σx, then Σ(x − μ)², in Double, as
/// the host reference's two passes), and in the backward the two global sums Σ∂y and Σ∂y·x̂ that
/// the input gradient needs. The affine gradients stay local (the trainer's gradient all-reduce
/// sums them), so the group computes what one process computes on the concatenated batch.
///
/// The synchronised path runs on host copies (a download and an upload of each BN's input or
/// gradient, O(R·C), small next to the GEMMs around it); the normalisation itself is the
/// backend's evaluation-mode op given the global statistics.
final class BatchNormRunner {
    let communicator: any Communicator
    /// (C) scratch per width: the global mean and biased variance handed to the backend.
    private var scratch: [Int: (mean: Tensor, variance: Tensor)] = [:]

    init(communicator: any Communicator = SingleProcess()) {
        self.communicator = communicator
    }

    var isSynchronised: Bool { communicator.isDistributed }

    /// Allocates the scratch of every width the model normalises (so a step allocates nothing).
    func prepare(backend: any Backend, widths: [Int]) throws {
        guard isSynchronised else { return }
        for width in Set(widths) where scratch[width] == nil {
            scratch[width] = (try backend.makeTensor(shape: [width]), try backend.makeTensor(shape: [width]))
        }
    }

    func forward(_ backend: any Backend, output: Tensor, savedMean: Tensor, savedReciprocalStd: Tensor, input: Tensor,
                 weight: Tensor?, bias: Tensor?, runningMean: Tensor, runningVariance: Tensor, momentum: Float,
                 epsilon: Float, training: Bool) throws {
        guard training, isSynchronised else {
            try backend.batchNormForward(output: output, savedMean: savedMean, savedReciprocalStd: savedReciprocalStd,
                                         input: input, weight: weight, bias: bias, runningMean: runningMean,
                                         runningVariance: runningVariance, momentum: momentum, epsilon: epsilon,
                                         training: training)
            return
        }
        let (R, C) = backend.rowsAndColumns(input)
        try prepare(backend: backend, widths: [C])
        let (meanTensor, varianceTensor) = scratch[C]!
        let x = try backend.download(input)
        var sums = [Double](repeating: 0, count: C + 1)
        for r in 0..<R { for c in 0..<C { sums[c] += Double(x[r * C + c]) } }
        sums[C] = Double(R)
        try communicator.allReduceSum(&sums)
        let count = sums[C]
        let mean = (0..<C).map { sums[$0] / count }
        var squares = [Double](repeating: 0, count: C)
        for r in 0..<R {
            for c in 0..<C {
                let d = Double(x[r * C + c]) - mean[c]
                squares[c] += d * d
            }
        }
        try communicator.allReduceSum(&squares)
        try backend.upload(mean.map { Float($0) }, to: meanTensor)
        try backend.upload(squares.map { Float($0 / count) }, to: varianceTensor)
        try backend.batchNormForward(output: output, savedMean: savedMean, savedReciprocalStd: savedReciprocalStd,
                                     input: input, weight: weight, bias: bias, runningMean: meanTensor,
                                     runningVariance: varianceTensor, momentum: momentum, epsilon: epsilon, training: false)
        // The running statistics, as the training-mode op updates them (unbiased variance).
        let m = Double(momentum)
        let running = try backend.download(runningMean), runningVar = try backend.download(runningVariance)
        try backend.upload((0..<C).map { Float((1 - m) * Double(running[$0]) + m * mean[$0]) }, to: runningMean)
        try backend.upload((0..<C).map { Float((1 - m) * Double(runningVar[$0]) + m * squares[$0] / (count - 1)) },
                           to: runningVariance)
    }

    func backward(_ backend: any Backend, inputGradient: Tensor, weightGradient: Tensor?, biasGradient: Tensor?,
                  outputGradient: Tensor, input: Tensor, savedMean: Tensor, savedReciprocalStd: Tensor,
                  weight: Tensor?) throws {
        guard isSynchronised else {
            try backend.batchNormBackward(inputGradient: inputGradient, weightGradient: weightGradient,
                                          biasGradient: biasGradient, outputGradient: outputGradient, input: input,
                                          savedMean: savedMean, savedReciprocalStd: savedReciprocalStd, weight: weight)
            return
        }
        let (R, C) = backend.rowsAndColumns(input)
        let dy = try backend.download(outputGradient), x = try backend.download(input)
        let mean = try backend.download(savedMean), rstd = try backend.download(savedReciprocalStd)
        let gamma = try weight.map { try backend.download($0) }
        var sums = [Double](repeating: 0, count: 2 * C + 1)   // Σ∂y, Σ∂y·x̂, rows
        for r in 0..<R {
            for c in 0..<C {
                let g = Double(dy[r * C + c])
                sums[c] += g
                sums[C + c] += g * (Double(x[r * C + c]) - Double(mean[c])) * Double(rstd[c])
            }
        }
        sums[2 * C] = Double(R)
        let local = sums
        try communicator.allReduceSum(&sums)
        let count = sums[2 * C]
        var dx = [Float](repeating: 0, count: R * C)
        for c in 0..<C {
            let (s, scale) = (Double(rstd[c]), gamma.map { Double($0[c]) } ?? 1)
            let (meanGradient, meanProduct) = (sums[c] / count, sums[C + c] / count)
            for r in 0..<R {
                let normalized = (Double(x[r * C + c]) - Double(mean[c])) * s
                dx[r * C + c] = Float(scale * s * (Double(dy[r * C + c]) - meanGradient - normalized * meanProduct))
            }
        }
        try backend.upload(dx, to: inputGradient)
        // This rank's share of the affine gradients (the gradient all-reduce adds the others').
        if let weightGradient {
            let g = try backend.download(weightGradient)
            try backend.upload((0..<C).map { g[$0] + Float(local[C + $0]) }, to: weightGradient)
        }
        if let biasGradient {
            let g = try backend.download(biasGradient)
            try backend.upload((0..<C).map { g[$0] + Float(local[$0]) }, to: biasGradient)
        }
    }
}
