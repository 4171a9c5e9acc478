import Collective
import Foundation
import Tensors
import Testing
import TestSupport
@testable import Model

/// SyncBN (``BatchNormRunner`` over a group) against the one-process BatchNorm on the
/// concatenated batch: forward output, saved statistics and running statistics; backward input
/// gradient, and the affine gradients summed over the ranks. Ranks are threads (``ThreadGroup``).
@Suite struct SyncBatchNormTests {
    struct Outcome: @unchecked Sendable {
        var output: [Float], runningMean: [Float], runningVariance: [Float]
        var inputGradient: [Float], weightGradient: [Float], biasGradient: [Float]
    }

    /// One rank's (or the whole batch's) forward and backward on `rows` of x and dy.
    static func run(_ runner: BatchNormRunner, x: [Float], dy: [Float], rows: Range<Int>, columns C: Int,
                    gamma: [Float], beta: [Float], affine: Bool) throws -> Outcome {
        let backend = HostBackend()
        let R = rows.count
        let input = try backend.makeTensor(Array(x[(rows.lowerBound * C)..<(rows.upperBound * C)]), shape: [R, C])
        let outputGradient = try backend.makeTensor(Array(dy[(rows.lowerBound * C)..<(rows.upperBound * C)]), shape: [R, C])
        let output = try backend.makeTensor([Float](repeating: .nan, count: R * C), shape: [R, C])
        let inputGradient = try backend.makeTensor([Float](repeating: .nan, count: R * C), shape: [R, C])
        let (mean, rstd) = (try backend.makeTensor(shape: [C]), try backend.makeTensor(shape: [C]))
        let runningMean = try backend.makeTensor((0..<C).map { 0.1 * Float($0) }, shape: [C])
        let runningVariance = try backend.makeTensor((0..<C).map { 1 + 0.2 * Float($0) }, shape: [C])
        let weight = try backend.makeTensor(gamma, shape: [C]), bias = try backend.makeTensor(beta, shape: [C])
        let weightGradient = try backend.makeTensor([Float](repeating: 0.5, count: C), shape: [C])
        let biasGradient = try backend.makeTensor([Float](repeating: -0.25, count: C), shape: [C])
        try runner.forward(backend, output: output, savedMean: mean, savedReciprocalStd: rstd, input: input,
                           weight: affine ? weight : nil, bias: affine ? bias : nil, runningMean: runningMean,
                           runningVariance: runningVariance, momentum: 0.1, epsilon: 1e-5, training: true)
        try runner.backward(backend, inputGradient: inputGradient, weightGradient: affine ? weightGradient : nil,
                            biasGradient: affine ? biasGradient : nil, outputGradient: outputGradient, input: input,
                            savedMean: mean, savedReciprocalStd: rstd, weight: affine ? weight : nil)
        return Outcome(output: try backend.download(output), runningMean: try backend.download(runningMean),
                       runningVariance: try backend.download(runningVariance), inputGradient: try backend.download(inputGradient),
                       weightGradient: try backend.download(weightGradient), biasGradient: try backend.download(biasGradient))
    }

    static func maxRelative(_ a: [Float], _ b: [Float]) -> Float {
        zip(a, b).map { abs($0 - $1) / (1e-3 + abs($1)) }.max() ?? .infinity
    }

    /// 3 ranks × 5 rows of 7 channels (odd sizes, a shifted and scaled input), affine and not.
    @Test(arguments: [true, false]) func syncBNOnThreeRanksIsBatchNormOnTheWholeBatch(affine: Bool) throws {
        let (ranks, rowsPerRank, C) = (3, 5, 7)
        var generator = SplitMix64(seed: 21)
        let x = (0..<(ranks * rowsPerRank * C)).map { i in Float(generator.nextGaussian()) * Float(1 + i % C) + 3 }
        let dy = (0..<(ranks * rowsPerRank * C)).map { _ in Float(generator.nextGaussian()) }
        let gamma = (0..<C).map { 0.5 + Float($0) / 7 }, beta = (0..<C).map { Float($0) / 3 - 1 }
        let whole = try Self.run(BatchNormRunner(), x: x, dy: dy, rows: 0..<(ranks * rowsPerRank), columns: C,
                                 gamma: gamma, beta: beta, affine: affine)
        let parts = try ThreadGroup.run(ranks) { rank, communicator in
            try Self.run(BatchNormRunner(communicator: communicator), x: x, dy: dy,
                         rows: (rank * rowsPerRank)..<((rank + 1) * rowsPerRank), columns: C,
                         gamma: gamma, beta: beta, affine: affine)
        }
        #expect(Self.maxRelative(parts.flatMap(\.output), whole.output) < 1e-5)
        #expect(Self.maxRelative(parts.flatMap(\.inputGradient), whole.inputGradient) < 1e-5)
        for part in parts {
            #expect(Self.maxRelative(part.runningMean, whole.runningMean) < 1e-6)
            #expect(Self.maxRelative(part.runningVariance, whole.runningVariance) < 1e-6)
        }
        if affine {
            // Each rank adds its rows' share to the gradient it holds; the trainer's all-reduce sums them.
            let initial: (Float, Float) = (0.5, -0.25)
            let weight = (0..<C).map { c in parts.map { $0.weightGradient[c] - initial.0 }.reduce(0, +) + initial.0 }
            let bias = (0..<C).map { c in parts.map { $0.biasGradient[c] - initial.1 }.reduce(0, +) + initial.1 }
            #expect(Self.maxRelative(weight, whole.weightGradient) < 1e-5)
            #expect(Self.maxRelative(bias, whole.biasGradient) < 1e-5)
        }
    }
}
