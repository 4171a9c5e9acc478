import CLBackend
import Tensors
import Testing
import TestSupport

/// kernels/cl/batchnorm.cl, both variants (CPU_CLASS 1 and 0, forced on PoCL), against the host
/// backend: the MoCo heads' shapes (batch × 4096 hidden, batch × 256 output) with and without
/// affine, training and evaluation, odd shapes; every output (saved statistics and updated running
/// statistics included) poisoned or pre-filled, canary tails, inputs read at an offset.
@Suite(.enabled(if: TestDevices.hasOpenCL, TestDevices.skipReason), .serialized)
struct BatchNormTests {
    struct Case: CustomTestStringConvertible, Sendable {
        let rows: Int
        let columns: Int
        let affine: Bool
        let training: Bool
        /// Inputs are `center + U(-1, 1)`; 100 catches a variance that cancels catastrophically.
        var center: Float = 0
        var variant: CLBackend.KernelVariant = .cpu

        var count: Int { rows * columns }
        var testDescription: String {
            "\(rows)x\(columns) \(affine ? "affine" : "no affine") \(training ? "training" : "eval") "
                + "x=\(center)+U(-1,1) \(variant)"
        }
    }

    static let shapes: [Case] = [
        Case(rows: 64, columns: 4096, affine: true, training: true),
        Case(rows: 128, columns: 256, affine: true, training: true),
        Case(rows: 128, columns: 256, affine: false, training: true),
        Case(rows: 128, columns: 256, affine: true, training: false),
        Case(rows: 128, columns: 256, affine: false, training: false),
        Case(rows: 128, columns: 256, affine: true, training: true, center: 100),
        Case(rows: 3, columns: 7, affine: true, training: true),
        Case(rows: 3, columns: 7, affine: false, training: false),
        Case(rows: 2, columns: 1, affine: true, training: true),
        Case(rows: 2, columns: 1, affine: false, training: true),
        Case(rows: 1, columns: 5, affine: true, training: false),
        // Two whole float16 column blocks and a partial one on CPU-class devices.
        Case(rows: 5, columns: 37, affine: true, training: true),
        Case(rows: 5, columns: 37, affine: true, training: false),
    ]
    static let cases: [Case] = CLBackend.KernelVariant.allCases.flatMap { variant in
        shapes.map { var testCase = $0; testCase.variant = variant; return testCase }
    }
    static let trainingCases = cases.filter(\.training)
    /// The heads' BatchNorm1d settings (SPEC A.3).
    static let momentum: Float = 0.1, epsilon: Float = 1e-5
    static let inputOffset = 3

    let device: CLBackend
    let host = HostBackend()

    init() throws { device = try TestDevices.backend() }

    func input(_ values: [Float], shape: [Int], on backend: any Backend) throws -> Tensor {
        let whole = try backend.makeTensor([Float](repeating: -7, count: Self.inputOffset) + values,
                                           shape: [Self.inputOffset + values.count])
        return whole.view(offset: Self.inputOffset, shape: shape)
    }

    struct Operands {
        let x, weight, bias, runningMean, runningVariance, outputGradient, weightGradient, biasGradient: [Float]
    }

    func operands(_ testCase: Case, seed: UInt64) -> Operands {
        var generator = SplitMix64(seed: seed)
        let (count, columns, center) = (testCase.count, testCase.columns, testCase.center)
        return Operands(x: randomValues(count, in: (center - 1)...(center + 1), using: &generator),
                        weight: randomValues(columns, in: 0.5...1.5, using: &generator),
                        bias: randomValues(columns, using: &generator),
                        runningMean: randomValues(columns, using: &generator),
                        runningVariance: randomValues(columns, in: 0.5...2, using: &generator),
                        outputGradient: randomValues(count, using: &generator),
                        weightGradient: randomValues(columns, using: &generator),
                        biasGradient: randomValues(columns, using: &generator))
    }

    @Test(arguments: cases)
    func forwardMatchesHost(_ testCase: Case) throws {
        device.kernelVariant = testCase.variant
        let data = operands(testCase, seed: UInt64(testCase.count))
        let (shape, columns) = ([testCase.rows, testCase.columns], testCase.columns)

        let output = try host.makeTensor(shape: shape)
        let savedMean = try host.makeTensor(shape: [columns]), savedReciprocalStd = try host.makeTensor(shape: [columns])
        let runningMean = try host.makeTensor(data.runningMean, shape: [columns])
        let runningVariance = try host.makeTensor(data.runningVariance, shape: [columns])
        try host.batchNormForward(output: output, savedMean: savedMean, savedReciprocalStd: savedReciprocalStd,
                                  input: try input(data.x, shape: shape, on: host),
                                  weight: testCase.affine ? try host.makeTensor(data.weight, shape: [columns]) : nil,
                                  bias: testCase.affine ? try host.makeTensor(data.bias, shape: [columns]) : nil,
                                  runningMean: runningMean, runningVariance: runningVariance,
                                  momentum: Self.momentum, epsilon: Self.epsilon, training: testCase.training)

        let deviceOutput = try PoisonedOutput(on: device, count: testCase.count)
        let deviceSavedMean = try PoisonedOutput(on: device, count: columns)
        let deviceSavedReciprocalStd = try PoisonedOutput(on: device, count: columns)
        let deviceRunningMean = try PoisonedOutput(on: device, count: columns, initial: data.runningMean)
        let deviceRunningVariance = try PoisonedOutput(on: device, count: columns, initial: data.runningVariance)
        try device.batchNormForward(output: deviceOutput.tensor.reshaped(shape), savedMean: deviceSavedMean.tensor,
                                    savedReciprocalStd: deviceSavedReciprocalStd.tensor,
                                    input: try input(data.x, shape: shape, on: device),
                                    weight: testCase.affine ? try input(data.weight, shape: [columns], on: device) : nil,
                                    bias: testCase.affine ? try input(data.bias, shape: [columns], on: device) : nil,
                                    runningMean: deviceRunningMean.tensor, runningVariance: deviceRunningVariance.tensor,
                                    momentum: Self.momentum, epsilon: Self.epsilon, training: testCase.training)

        expectClose(try deviceOutput.values(from: device), try host.download(output), "output \(testCase)")
        expectClose(try deviceSavedMean.values(from: device), try host.download(savedMean), "savedMean \(testCase)")
        expectClose(try deviceSavedReciprocalStd.values(from: device), try host.download(savedReciprocalStd),
                    "savedReciprocalStd \(testCase)")
        let newRunningMean = try deviceRunningMean.values(from: device)
        let newRunningVariance = try deviceRunningVariance.values(from: device)
        expectClose(newRunningMean, try host.download(runningMean), "runningMean \(testCase)")
        expectClose(newRunningVariance, try host.download(runningVariance), "runningVariance \(testCase)")
        // The host is the reference for the update, but only if it made one: evaluation keeps the
        // statistics bit for bit, and training moves every one of them.
        if testCase.training {
            #expect(zip(newRunningMean, data.runningMean).allSatisfy { $0 != $1 }, "running mean not updated")
        } else {
            #expect(newRunningMean == data.runningMean && newRunningVariance == data.runningVariance)
        }
    }

    @Test(arguments: trainingCases)
    func backwardMatchesHost(_ testCase: Case) throws {
        device.kernelVariant = testCase.variant
        let data = operands(testCase, seed: UInt64(testCase.count) + 1)
        let (shape, columns) = ([testCase.rows, testCase.columns], testCase.columns)
        // Both backends get the same saved statistics (the host's), so only the backward differs.
        let statistics = BatchNormReference.forward(input: data.x, weight: nil, bias: nil, runningMean: data.runningMean,
                                                    runningVariance: data.runningVariance, momentum: Self.momentum,
                                                    epsilon: Self.epsilon, training: true)

        let hostInputGradient = try host.makeTensor(shape: shape)
        let hostWeightGradient = try host.makeTensor(data.weightGradient, shape: [columns])
        let hostBiasGradient = try host.makeTensor(data.biasGradient, shape: [columns])
        try host.batchNormBackward(inputGradient: hostInputGradient,
                                   weightGradient: testCase.affine ? hostWeightGradient : nil,
                                   biasGradient: testCase.affine ? hostBiasGradient : nil,
                                   outputGradient: try input(data.outputGradient, shape: shape, on: host),
                                   input: try input(data.x, shape: shape, on: host),
                                   savedMean: try host.makeTensor(statistics.savedMean, shape: [columns]),
                                   savedReciprocalStd: try host.makeTensor(statistics.savedReciprocalStd, shape: [columns]),
                                   weight: testCase.affine ? try host.makeTensor(data.weight, shape: [columns]) : nil)

        let inputGradient = try PoisonedOutput(on: device, count: testCase.count)
        let weightGradient = try PoisonedOutput(on: device, count: columns, initial: data.weightGradient)
        let biasGradient = try PoisonedOutput(on: device, count: columns, initial: data.biasGradient)
        try device.batchNormBackward(inputGradient: inputGradient.tensor.reshaped(shape),
                                     weightGradient: testCase.affine ? weightGradient.tensor : nil,
                                     biasGradient: testCase.affine ? biasGradient.tensor : nil,
                                     outputGradient: try input(data.outputGradient, shape: shape, on: device),
                                     input: try input(data.x, shape: shape, on: device),
                                     savedMean: try input(statistics.savedMean, shape: [columns], on: device),
                                     savedReciprocalStd: try input(statistics.savedReciprocalStd, shape: [columns],
                                                                   on: device),
                                     weight: testCase.affine ? try input(data.weight, shape: [columns], on: device) : nil)

        expectClose(try inputGradient.values(from: device), try host.download(hostInputGradient),
                    "inputGradient \(testCase)")
        // Without affine the gradients are not passed, and must stay as they were.
        expectClose(try weightGradient.values(from: device), try host.download(hostWeightGradient),
                    "weightGradient \(testCase)")
        expectClose(try biasGradient.values(from: device), try host.download(hostBiasGradient),
                    "biasGradient \(testCase)")
    }

    @Test func rejectsBadShapesAndSingleRowTraining() throws {
        let x = try device.makeTensor(shape: [4, 6]), y = try device.makeTensor(shape: [4, 6])
        let feature = try device.makeTensor(shape: [6]), wrong = try device.makeTensor(shape: [5])
        func forward(input: Tensor, output: Tensor, weight: Tensor?, runningMean: Tensor, training: Bool) throws {
            try device.batchNormForward(output: output, savedMean: feature, savedReciprocalStd: feature, input: input,
                                        weight: weight, bias: nil, runningMean: runningMean, runningVariance: feature,
                                        momentum: 0.1, epsilon: 1e-5, training: training)
        }
        #expect(throws: BackendError.self) { try forward(input: x, output: y, weight: wrong, runningMean: feature, training: true) }
        #expect(throws: BackendError.self) { try forward(input: x, output: y, weight: nil, runningMean: wrong, training: false) }
        #expect(throws: BackendError.self) {
            try forward(input: x.reshaped([2, 2, 6]), output: y, weight: nil, runningMean: feature, training: true)
        }
        let oneRow = x.view(shape: [1, 6])
        #expect(throws: BackendError.self) {
            try forward(input: oneRow, output: y.view(shape: [1, 6]), weight: nil, runningMean: feature, training: true)
        }
        #expect(throws: BackendError.self) {
            try device.batchNormBackward(inputGradient: y, weightGradient: wrong, biasGradient: nil, outputGradient: y,
                                         input: x, savedMean: feature, savedReciprocalStd: feature, weight: nil)
        }
    }
}
