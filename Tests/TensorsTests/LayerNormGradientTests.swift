import Tensors
import Testing
import TestSupport

/// LayerNormReference.backward against central differences in Double, with the loss
/// `Σ y·W` for a random W (so the output gradient is W), and the host op's argument checks.
@Suite struct LayerNormGradientTests {
    static let rows = 3, columns = 5
    static let epsilon = 1e-6

    typealias Point = NormalizationPoint

    func point(center: Double) -> Point { Point(rows: Self.rows, columns: Self.columns, center: center) }

    let projection = randomDoubles(rows * columns, seed: 4)

    func loss(_ point: Point) -> Double {
        let output = LayerNormReference.forward(input: point.input, weight: point.weight, bias: point.bias,
                                                epsilon: Self.epsilon).output
        return zip(output, projection).reduce(0) { $0 + $1.0 * $1.1 }
    }

    @Test(arguments: [0.0, 100.0])
    func gradientsMatchFiniteDifferences(center: Double) {
        let at = point(center: center)
        let forward = LayerNormReference.forward(input: at.input, weight: at.weight, bias: at.bias, epsilon: Self.epsilon)
        let analytic = LayerNormReference.backward(outputGradient: projection, input: at.input, mean: forward.mean,
                                                   reciprocalStd: forward.reciprocalStd, weight: at.weight)
        let dx = numericalGradient(of: { var p = at; p.input = $0; return loss(p) }, at: at.input)
        let dw = numericalGradient(of: { var p = at; p.weight = $0; return loss(p) }, at: at.weight)
        let db = numericalGradient(of: { var p = at; p.bias = $0; return loss(p) }, at: at.bias)
        expectGradientMatches(analytic.inputGradient, dx, "inputGradient, center \(center)")
        expectGradientMatches(analytic.weightGradient, dw, "weightGradient, center \(center)")
        expectGradientMatches(analytic.biasGradient, db, "biasGradient, center \(center)")
    }

    @Test func hostAccumulatesParameterGradients() throws {
        let host = HostBackend()
        var generator = SplitMix64(seed: 5)
        let (rows, columns) = (Self.rows, Self.columns)
        let x = randomValues(rows * columns, using: &generator), w = randomValues(columns, using: &generator)
        let dy = randomValues(rows * columns, using: &generator), before = randomValues(columns, using: &generator)
        let forward = LayerNormReference.forward(input: x, weight: w, bias: w, epsilon: 1e-6)
        let expected = LayerNormReference.backward(outputGradient: dy, input: x, mean: forward.mean,
                                                   reciprocalStd: forward.reciprocalStd, weight: w)
        let weightGradient = try host.makeTensor(before, shape: [columns])
        let biasGradient = try host.makeTensor(before, shape: [columns])
        try host.layerNormBackward(inputGradient: try host.makeTensor(shape: [rows, columns]),
                                   weightGradient: weightGradient, biasGradient: biasGradient,
                                   outputGradient: try host.makeTensor(dy, shape: [rows, columns]),
                                   input: try host.makeTensor(x, shape: [rows, columns]),
                                   mean: try host.makeTensor(forward.mean, shape: [rows]),
                                   reciprocalStd: try host.makeTensor(forward.reciprocalStd, shape: [rows]),
                                   weight: try host.makeTensor(w, shape: [columns]))
        expectClose(try host.download(weightGradient), zip(before, expected.weightGradient).map { $0 + $1 },
                    relative: 1e-6, absolute: 1e-6, "weightGradient")
        expectClose(try host.download(biasGradient), zip(before, expected.biasGradient).map { $0 + $1 },
                    relative: 1e-6, absolute: 1e-6, "biasGradient")
    }

    @Test func hostRejectsMismatchedShapes() throws {
        let host = HostBackend()
        let x = try host.makeTensor(shape: [4, 6]), y = try host.makeTensor(shape: [4, 6])
        let perRow = try host.makeTensor(shape: [4]), perColumn = try host.makeTensor(shape: [6])
        let five = try host.makeTensor(shape: [5])
        #expect(throws: BackendError.self) {
            try host.layerNormForward(output: y, mean: perRow, reciprocalStd: perRow, input: x, weight: five,
                                      bias: perColumn, epsilon: 1e-6)
        }
        #expect(throws: BackendError.self) {
            try host.layerNormForward(output: y, mean: five, reciprocalStd: perRow, input: x, weight: perColumn,
                                      bias: perColumn, epsilon: 1e-6)
        }
        #expect(throws: BackendError.self) {
            try host.layerNormForward(output: y.view(shape: [23]), mean: perRow, reciprocalStd: perRow, input: x,
                                      weight: perColumn, bias: perColumn, epsilon: 1e-6)
        }
        #expect(throws: BackendError.self) {
            try host.layerNormForward(output: y.view(shape: []), mean: perRow.view(shape: [1]),
                                      reciprocalStd: perRow.view(shape: [1]), input: x.view(shape: []),
                                      weight: perColumn, bias: perColumn, epsilon: 1e-6)
        }
        #expect(throws: BackendError.self) {
            try host.layerNormBackward(inputGradient: y, weightGradient: perColumn, biasGradient: five,
                                       outputGradient: y, input: x, mean: perRow, reciprocalStd: perRow,
                                       weight: perColumn)
        }
    }
}
