import Tensors
import Testing
import TestSupport

/// The host references of the fine-tuning ops against closed forms and finite differences.
@Suite struct SoftTargetTests {
    /// A soft target's loss and gradient equal central differences of the loss (Double), and a
    /// one-hot target gives exactly the hard-label op's values.
    @Test func softTargetGradientMatchesFiniteDifferences() {
        let logits = randomDoubles(7, in: -3...3, seed: 4)
        var targets = randomDoubles(7, in: 0...1, seed: 5)
        let total = targets.reduce(0, +)
        targets = targets.map { $0 / total * 0.8 }   // a total of 0.8: the T·softmax term is exercised
        func loss(_ z: [Double]) -> Double {
            var gradient = [Double](repeating: 0, count: 7)
            return z.withUnsafeBufferPointer { z in targets.withUnsafeBufferPointer { t in
                gradient.withUnsafeMutableBufferPointer { g in
                    LossReference.softTargetCrossEntropy(logits: z, targets: t, scale: 0.5, gradient: g)
                }
            } }
        }
        var analytic = [Double](repeating: 0, count: 7)
        _ = logits.withUnsafeBufferPointer { z in targets.withUnsafeBufferPointer { t in
            analytic.withUnsafeMutableBufferPointer { g in
                LossReference.softTargetCrossEntropy(logits: z, targets: t, scale: 0.5, gradient: g)
            }
        } }
        expectGradientMatches(analytic, numericalGradient(of: loss, at: logits), "soft-target CE")
    }

    @Test func oneHotTargetsEqualTheHardLabelOp() throws {
        let host = HostBackend()
        var generator = SplitMix64(seed: 9)
        let logits = randomValues(5 * 6, in: -4...4, using: &generator)
        let labels: [Int32] = [0, 5, 2, 2, 3]
        var onehot = [Float](repeating: 0, count: 30)
        for (r, label) in labels.enumerated() { onehot[r * 6 + Int(label)] = 1 }
        let z = try host.makeTensor(logits, shape: [5, 6])
        let (hardLoss, hardGradient) = (try host.makeTensor(shape: [5]), try host.makeTensor(shape: [5, 6]))
        let (softLoss, softGradient) = (try host.makeTensor(shape: [5]), try host.makeTensor(shape: [5, 6]))
        try host.softmaxCrossEntropy(losses: hardLoss, logitsGradient: hardGradient, logits: z,
                                     labels: host.makeTensor(labels, shape: [5]), scale: 0.2)
        try host.softTargetCrossEntropy(losses: softLoss, logitsGradient: softGradient, logits: z,
                                        targets: host.makeTensor(onehot, shape: [5, 6]), scale: 0.2)
        expectClose(try host.download(softLoss), try host.download(hardLoss), relative: 1e-6, absolute: 1e-7, "loss")
        expectClose(try host.download(softGradient), try host.download(hardGradient), relative: 1e-6, absolute: 1e-7, "gradient")
    }

    @Test func scaleRowsScalesEachRow() throws {
        let host = HostBackend()
        let x = try host.makeTensor([1, 2, 3, 4, 5, 6] as [Float], shape: [3, 2])
        try host.scaleRows(output: x, input: x, factors: host.makeTensor([2, 0, -0.5] as [Float], shape: [3]))
        let values = try host.download(x)
        #expect(values == [2, 4, 0, 0, -2.5, -3], "\(values)")
    }
}
