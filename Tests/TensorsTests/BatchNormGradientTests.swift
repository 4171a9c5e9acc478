import Tensors
import Testing
import TestSupport

/// BatchNormReference.backward (training mode) against central differences in Double, with the
/// loss `Σ y·W` for a random W (so the output gradient is W), with and without affine; the
/// running-statistics update against torch's formula; and the host op's argument checks.
@Suite struct BatchNormGradientTests {
    static let rows = 4, columns = 3
    static let momentum = 0.1, epsilon = 1e-5

    typealias Point = NormalizationPoint

    func point(center: Double) -> Point { Point(rows: Self.rows, columns: Self.columns, center: center) }

    let projection = randomDoubles(rows * columns, seed: 4)
    let runningMean = randomDoubles(columns, seed: 5)
    let runningVariance = randomDoubles(columns, in: 0.5...2, seed: 6)

    func forward(_ point: Point, affine: Bool) -> BatchNormReference.Forward<Double> {
        BatchNormReference.forward(input: point.input, weight: affine ? point.weight : nil,
                                   bias: affine ? point.bias : nil, runningMean: runningMean,
                                   runningVariance: runningVariance, momentum: Self.momentum,
                                   epsilon: Self.epsilon, training: true)
    }

    func loss(_ point: Point, affine: Bool) -> Double {
        zip(forward(point, affine: affine).output, projection).reduce(0) { $0 + $1.0 * $1.1 }
    }

    @Test(arguments: [(0.0, true), (0.0, false), (100.0, true)])
    func gradientsMatchFiniteDifferences(center: Double, affine: Bool) {
        let at = point(center: center)
        let saved = forward(at, affine: affine)
        let analytic = BatchNormReference.backward(outputGradient: projection, input: at.input,
                                                   savedMean: saved.savedMean,
                                                   savedReciprocalStd: saved.savedReciprocalStd,
                                                   weight: affine ? at.weight : nil)
        let context = "center \(center), affine \(affine)"
        let dx = numericalGradient(of: { var p = at; p.input = $0; return loss(p, affine: affine) }, at: at.input)
        expectGradientMatches(analytic.inputGradient, dx, "inputGradient, \(context)")
        if affine {
            let dw = numericalGradient(of: { var p = at; p.weight = $0; return loss(p, affine: true) }, at: at.weight)
            let db = numericalGradient(of: { var p = at; p.bias = $0; return loss(p, affine: true) }, at: at.bias)
            expectGradientMatches(analytic.weightGradient, dw, "weightGradient, \(context)")
            expectGradientMatches(analytic.biasGradient, db, "biasGradient, \(context)")
        }
    }

    /// torch.nn.BatchNorm1d: running_var takes the unbiased batch variance, the saved statistics
    /// the biased one; evaluation normalizes with the running statistics and leaves them alone.
    @Test func runningStatisticsFollowTorch() {
        let at = point(center: 0)
        let (rows, columns) = (Self.rows, Self.columns)
        let result = forward(at, affine: true)
        for c in 0..<columns {
            let column = (0..<rows).map { at.input[$0 * columns + c] }
            let mean = column.reduce(0, +) / Double(rows)
            let biased = column.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / Double(rows)
            #expect(abs(result.savedMean[c] - mean) < 1e-12)
            #expect(abs(result.savedReciprocalStd[c] - 1 / (biased + Self.epsilon).squareRoot()) < 1e-9)
            #expect(abs(result.runningMean[c] - (0.9 * runningMean[c] + 0.1 * mean)) < 1e-12)
            #expect(abs(result.runningVariance[c] - (0.9 * runningVariance[c] + 0.1 * biased * 4 / 3)) < 1e-12)
        }
        let evaluation = BatchNormReference.forward(input: at.input, weight: nil, bias: nil, runningMean: runningMean,
                                                    runningVariance: runningVariance, momentum: Self.momentum,
                                                    epsilon: Self.epsilon, training: false)
        #expect(evaluation.runningMean == runningMean && evaluation.runningVariance == runningVariance)
        #expect(evaluation.savedMean == runningMean)
        let expected = (0..<rows * columns).map { i in
            (at.input[i] - runningMean[i % columns]) / (runningVariance[i % columns] + Self.epsilon).squareRoot()
        }
        expectGradientMatches(evaluation.output, expected, relative: 1e-12, absolute: 1e-12, "evaluation output")
    }

    @Test func hostRejectsBadShapesAndSingleRowTraining() throws {
        let host = HostBackend()
        let x = try host.makeTensor(shape: [4, 6]), y = try host.makeTensor(shape: [4, 6])
        let feature = try host.makeTensor(shape: [6]), five = try host.makeTensor(shape: [5])
        func forward(_ input: Tensor, _ output: Tensor, weight: Tensor?, runningVariance: Tensor,
                     training: Bool) throws {
            try host.batchNormForward(output: output, savedMean: feature, savedReciprocalStd: feature, input: input,
                                      weight: weight, bias: nil, runningMean: feature, runningVariance: runningVariance,
                                      momentum: 0.1, epsilon: 1e-5, training: training)
        }
        #expect(throws: BackendError.self) { try forward(x, y, weight: five, runningVariance: feature, training: true) }
        #expect(throws: BackendError.self) { try forward(x, y, weight: nil, runningVariance: five, training: false) }
        #expect(throws: BackendError.self) {
            try forward(x.reshaped([2, 2, 6]), y, weight: nil, runningVariance: feature, training: true)
        }
        #expect(throws: BackendError.self) {
            try forward(x.view(shape: [1, 6]), y.view(shape: [1, 6]), weight: nil, runningVariance: feature,
                        training: true)
        }
        // One row is fine in evaluation mode, as in PyTorch.
        try host.fill(feature, value: 1)
        try host.fill(x, value: 0.5)
        try forward(x.view(shape: [1, 6]), y.view(shape: [1, 6]), weight: nil, runningVariance: feature,
                    training: false)
        #expect(throws: BackendError.self) {
            try host.batchNormBackward(inputGradient: y, weightGradient: five, biasGradient: nil, outputGradient: y,
                                       input: x, savedMean: feature, savedReciprocalStd: feature, weight: nil)
        }
    }
}
