import CLBackend
import Tensors
import Testing
import TestSupport

/// kernels/cl/layernorm.cl, both variants (CPU_CLASS 1 and 0, forced on PoCL), against the host
/// backend: the ViT's shapes (B·N tokens × C) and odd ones, inputs read at an offset, outputs
/// poisoned with NaN and followed by canaries, and parameter gradients pre-filled with random
/// values so that accumulation (+=) is checked rather than assumed.
@Suite(.enabled(if: TestDevices.hasOpenCL, TestDevices.skipReason), .serialized)
struct LayerNormTests {
    struct Case: CustomTestStringConvertible, Sendable {
        /// Leading dimensions first: [2, 197, 768] is two ViT-B images of 197 tokens.
        let shape: [Int]
        /// Inputs are `center + U(-1, 1)`; 100 catches a variance that cancels catastrophically.
        let center: Float
        let variant: CLBackend.KernelVariant

        var columns: Int { shape.last! }
        var count: Int { shape.reduce(1, *) }
        var rows: Int { count / columns }
        var testDescription: String { "\(shape) x=\(center)+U(-1,1) \(variant)" }
    }

    static let cases: [Case] = CLBackend.KernelVariant.allCases.flatMap { variant in
        [[130, 192], [130, 384], [2, 197, 768], [7, 33], [1, 5]].map { Case(shape: $0, center: 0, variant: variant) }
            + [Case(shape: [130, 384], center: 100, variant: variant)]
    }
    static let epsilon: Float = 1e-6
    /// Elements in front of every input, so kernels must honour tensor offsets.
    static let inputOffset = 3

    let device: CLBackend
    let host = HostBackend()

    init() throws { device = try TestDevices.backend() }

    /// `values` on `backend` as a tensor of `shape` that starts `inputOffset` elements into its storage.
    func input(_ values: [Float], shape: [Int], on backend: any Backend) throws -> Tensor {
        let whole = try backend.makeTensor([Float](repeating: -7, count: Self.inputOffset) + values,
                                           shape: [Self.inputOffset + values.count])
        return whole.view(offset: Self.inputOffset, shape: shape)
    }

    struct Operands {
        let x, weight, bias, outputGradient, weightGradient, biasGradient: [Float]
    }

    func operands(_ testCase: Case, seed: UInt64) -> Operands {
        var generator = SplitMix64(seed: seed)
        let center = testCase.center
        return Operands(x: randomValues(testCase.count, in: (center - 1)...(center + 1), using: &generator),
                        weight: randomValues(testCase.columns, in: 0.5...1.5, using: &generator),
                        bias: randomValues(testCase.columns, using: &generator),
                        outputGradient: randomValues(testCase.count, using: &generator),
                        weightGradient: randomValues(testCase.columns, using: &generator),
                        biasGradient: randomValues(testCase.columns, using: &generator))
    }

    @Test(arguments: cases)
    func forwardMatchesHost(_ testCase: Case) throws {
        device.kernelVariant = testCase.variant
        let data = operands(testCase, seed: UInt64(testCase.count))
        let (rows, columns) = (testCase.rows, testCase.columns)

        let output = try host.makeTensor(shape: testCase.shape)
        let mean = try host.makeTensor(shape: [rows]), reciprocalStd = try host.makeTensor(shape: [rows])
        try host.layerNormForward(output: output, mean: mean, reciprocalStd: reciprocalStd,
                                  input: try input(data.x, shape: testCase.shape, on: host),
                                  weight: try host.makeTensor(data.weight, shape: [columns]),
                                  bias: try host.makeTensor(data.bias, shape: [columns]), epsilon: Self.epsilon)

        let deviceOutput = try PoisonedOutput(on: device, count: testCase.count)
        let deviceMean = try PoisonedOutput(on: device, count: rows)
        let deviceReciprocalStd = try PoisonedOutput(on: device, count: rows)
        try device.layerNormForward(output: deviceOutput.tensor.reshaped(testCase.shape), mean: deviceMean.tensor,
                                    reciprocalStd: deviceReciprocalStd.tensor,
                                    input: try input(data.x, shape: testCase.shape, on: device),
                                    weight: try input(data.weight, shape: [columns], on: device),
                                    bias: try input(data.bias, shape: [columns], on: device), epsilon: Self.epsilon)

        expectClose(try deviceOutput.values(from: device), try host.download(output), "output \(testCase)")
        expectClose(try deviceMean.values(from: device), try host.download(mean), "mean \(testCase)")
        expectClose(try deviceReciprocalStd.values(from: device), try host.download(reciprocalStd),
                    "reciprocalStd \(testCase)")
    }

    @Test(arguments: cases)
    func backwardMatchesHost(_ testCase: Case) throws {
        device.kernelVariant = testCase.variant
        let data = operands(testCase, seed: UInt64(testCase.count) + 1)
        let (rows, columns) = (testCase.rows, testCase.columns)
        // Both backends get the same saved statistics (the host's), so only the backward differs.
        let statistics = LayerNormReference.forward(input: data.x, weight: data.weight, bias: data.bias,
                                                    epsilon: Self.epsilon)

        let hostInputGradient = try host.makeTensor(shape: testCase.shape)
        let hostWeightGradient = try host.makeTensor(data.weightGradient, shape: [columns])
        let hostBiasGradient = try host.makeTensor(data.biasGradient, shape: [columns])
        try host.layerNormBackward(inputGradient: hostInputGradient, weightGradient: hostWeightGradient,
                                   biasGradient: hostBiasGradient,
                                   outputGradient: try input(data.outputGradient, shape: testCase.shape, on: host),
                                   input: try input(data.x, shape: testCase.shape, on: host),
                                   mean: try host.makeTensor(statistics.mean, shape: [rows]),
                                   reciprocalStd: try host.makeTensor(statistics.reciprocalStd, shape: [rows]),
                                   weight: try host.makeTensor(data.weight, shape: [columns]))

        let inputGradient = try PoisonedOutput(on: device, count: testCase.count)
        let weightGradient = try PoisonedOutput(on: device, count: columns, initial: data.weightGradient)
        let biasGradient = try PoisonedOutput(on: device, count: columns, initial: data.biasGradient)
        try device.layerNormBackward(inputGradient: inputGradient.tensor.reshaped(testCase.shape),
                                     weightGradient: weightGradient.tensor, biasGradient: biasGradient.tensor,
                                     outputGradient: try input(data.outputGradient, shape: testCase.shape, on: device),
                                     input: try input(data.x, shape: testCase.shape, on: device),
                                     mean: try input(statistics.mean, shape: [rows], on: device),
                                     reciprocalStd: try input(statistics.reciprocalStd, shape: [rows], on: device),
                                     weight: try input(data.weight, shape: [columns], on: device))

        expectClose(try inputGradient.values(from: device), try host.download(hostInputGradient),
                    "inputGradient \(testCase)")
        expectClose(try weightGradient.values(from: device), try host.download(hostWeightGradient),
                    "weightGradient \(testCase)")
        expectClose(try biasGradient.values(from: device), try host.download(hostBiasGradient),
                    "biasGradient \(testCase)")
    }

    @Test func rejectsMismatchedShapes() throws {
        let x = try device.makeTensor(shape: [4, 6]), y = try device.makeTensor(shape: [4, 6])
        let rowStatistic = try device.makeTensor(shape: [4]), feature = try device.makeTensor(shape: [6])
        let wrongFeature = try device.makeTensor(shape: [5]), wrongRows = try device.makeTensor(shape: [3])
        #expect(throws: BackendError.self) {
            try device.layerNormForward(output: y, mean: rowStatistic, reciprocalStd: rowStatistic, input: x,
                                        weight: wrongFeature, bias: feature, epsilon: 1e-6)
        }
        #expect(throws: BackendError.self) {
            try device.layerNormForward(output: y, mean: wrongRows, reciprocalStd: rowStatistic, input: x,
                                        weight: feature, bias: feature, epsilon: 1e-6)
        }
        #expect(throws: BackendError.self) {
            try device.layerNormBackward(inputGradient: y.view(shape: [20]), weightGradient: feature,
                                         biasGradient: feature, outputGradient: y, input: x, mean: rowStatistic,
                                         reciprocalStd: rowStatistic, weight: feature)
        }
        #expect(throws: BackendError.self) {
            try device.layerNormBackward(inputGradient: y, weightGradient: feature, biasGradient: wrongFeature,
                                         outputGradient: y, input: x, mean: rowStatistic,
                                         reciprocalStd: rowStatistic, weight: feature)
        }
    }
}
