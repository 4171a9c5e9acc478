import Foundation
import Tensors
import Testing
import TestSupport

/// The host SGD and LAMB (the references of kernels/cl/optimizer.cl) against their formulas
/// evaluated by hand in Double on a few elements: `torch.optim.SGD`'s momentum recursion, and
/// LAMB's first step, where the bias corrections make m̂ = g and v̂ = g², so u = g/(|g| + ε) + wd·p.
@Suite struct OptimizerClosedFormTests {
    let host = HostBackend()

    /// Two segments with a frozen element between them (index 2), which no step may touch.
    static let table = SegmentTable([.init(offset: 0, count: 2), .init(offset: 3, count: 1, adapted: false)])

    @Test func sgdTwoStepsWithDecayAndMomentum() throws {
        let (lr, wd, momentum) = (0.1, 0.01, 0.9)
        let p0: [Double] = [1, -2, 7, 0.5], g1: [Double] = [0.1, 0.2, 9, -0.3], g2: [Double] = [-0.4, 0.05, 9, 0.6]
        let trained = [0, 1, 3]
        // torch.optim.SGD: d = g + wd·p; b = d on the first step (zeroed buffer), then b = m·b + d; p -= lr·b.
        var d1 = g1, b1 = [Double](repeating: 0, count: 4), p1 = p0
        var d2 = g2, b2 = b1, p2 = p0
        for i in trained {
            d1[i] = g1[i] + wd * p0[i]
            b1[i] = d1[i]
            p1[i] = p0[i] - lr * b1[i]
            d2[i] = g2[i] + wd * p1[i]
            b2[i] = momentum * b1[i] + d2[i]
            p2[i] = p1[i] - lr * b2[i]
        }
        let p = try host.makeTensor(p0.map(Float.init), shape: [4])
        let gradients1 = try host.makeTensor(g1.map(Float.init), shape: [4])
        let gradients2 = try host.makeTensor(g2.map(Float.init), shape: [4])
        let buffer = try host.makeTensor([0, 0, 0, 0] as [Float], shape: [4])
        let step = SGDStep(learningRate: lr, weightDecay: wd, momentum: momentum)
        try host.sgd(parameters: p, gradients: gradients1, momentumBuffer: buffer, segments: Self.table, step: step)
        expectClose(try host.download(p), p1.map(Float.init), relative: 1e-6, absolute: 1e-7, "p after step 1")
        expectClose(try host.download(buffer), b1.map(Float.init), relative: 1e-6, absolute: 1e-7, "b after step 1")
        expectClose(try host.download(gradients1), d1.map(Float.init), relative: 1e-6, absolute: 1e-7,
                    "gradients after step 1 (g + wd·p)")
        try host.sgd(parameters: p, gradients: gradients2, momentumBuffer: buffer, segments: Self.table, step: step)
        expectClose(try host.download(p), p2.map(Float.init), relative: 1e-6, absolute: 1e-7, "p after step 2")
        expectClose(try host.download(buffer), b2.map(Float.init), relative: 1e-6, absolute: 1e-7, "b after step 2")
        expectClose(try host.download(gradients2), d2.map(Float.init), relative: 1e-6, absolute: 1e-7,
                    "gradients after step 2")
        let afterTwoSteps = try host.download(p)
        #expect(afterTwoSteps[2] == 7, "the frozen element changed")
    }

    @Test func lambFirstStepTrustRatioAndBranches() throws {
        // Segments: an adapted (3, 4) tensor, a 1-D non-adapted one, and an adapted all-zero one.
        let table = SegmentTable([.init(offset: 0, count: 2), .init(offset: 2, count: 1, adapted: false),
                                  .init(offset: 3, count: 2)])
        let (lr, wd, epsilon) = (0.05, 0.1, 1e-6)
        let p0: [Double] = [3, 4, 1.5, 0, 0], g: [Double] = [0.5, -2, -0.25, 1, -0.5]
        let adapted = [true, true, false, true, true]
        // Step 1: m = (1 − β₁)g, m̂ = g; v = (1 − β₂)g², v̂ = g²; u = g/(|g| + ε) (+ wd·p when adapted).
        let u = g.indices.map { (i: Int) -> Double in
            let decay = adapted[i] ? wd * p0[i] : 0
            return g[i] / (abs(g[i]) + epsilon) + decay
        }
        // ‖p‖/‖u‖ = 5/‖u‖ on the first tensor; 1 on the 1-D one; 1 on the zero tensor (‖p‖ = 0).
        let ratio0 = 5 / (u[0] * u[0] + u[1] * u[1]).squareRoot()
        let ratios = [ratio0, ratio0, 1, 1, 1]
        let expected = p0.indices.map { (i: Int) -> Double in p0[i] - lr * ratios[i] * u[i] }

        let p = try host.makeTensor(p0.map(Float.init), shape: [5])
        let gradients = try host.makeTensor(g.map(Float.init), shape: [5])
        let m = try host.makeTensor([Float](repeating: 0, count: 5), shape: [5])
        let v = try host.makeTensor([Float](repeating: 0, count: 5), shape: [5])
        try host.lamb(parameters: p, gradients: gradients, firstMoment: m, secondMoment: v, segments: table,
                      step: LAMBStep(learningRate: lr, weightDecay: wd, step: 1, epsilon: epsilon))
        expectClose(try host.download(gradients), u.map(Float.init), relative: 1e-6, absolute: 1e-7, "u")
        expectClose(try host.download(p), expected.map(Float.init), relative: 1e-6, absolute: 1e-7, "p")
        expectClose(try host.download(m), g.map { Float(0.1 * $0) }, relative: 1e-6, absolute: 1e-9, "m")
        expectClose(try host.download(v), g.map { Float(0.001 * $0 * $0) }, relative: 1e-6, absolute: 1e-12, "v")
        // The trust ratio as the parameters moved: p − p0 = −lr·ratio·u on the first tensor.
        let moved = try host.download(p)
        let measured = (p0[0] - Double(moved[0])) / (lr * u[0])
        #expect(abs(measured - ratio0) <= 1e-5 * ratio0, "trust ratio \(measured), expected \(ratio0)")
    }

    @Test func lambSecondStepUsesBiasCorrections() throws {
        // Two steps of the formulas in Double: m̂ = m/(1 − β₁ᵗ), v̂ = v/(1 − β₂ᵗ).
        let table = SegmentTable([.init(offset: 0, count: 3), .init(offset: 3, count: 1, adapted: false)])
        let (beta1, beta2, epsilon, wd) = (0.9, 0.999, 1e-6, 0.05)
        let adapted = [true, true, true, false]
        var p: [Double] = [0.5, -1, 2, 0.25]
        var m = [Double](repeating: 0, count: 4), v = [Double](repeating: 0, count: 4)
        let gradients: [[Double]] = [[0.3, -0.2, 0.1, 0.4], [-0.1, 0.5, 0.2, -0.3]]
        let learningRates = [0.01, 0.02]
        var expectedU = [[Double]]()
        for (index, g) in gradients.enumerated() {
            let t = Double(index + 1)
            var u = [Double](repeating: 0, count: 4)
            for i in 0..<4 {
                m[i] = beta1 * m[i] + (1 - beta1) * g[i]
                v[i] = beta2 * v[i] + (1 - beta2) * g[i] * g[i]
                let firstCorrected: Double = m[i] / (1 - pow(beta1, t))
                let secondCorrected: Double = v[i] / (1 - pow(beta2, t))
                let decay: Double = adapted[i] ? wd * p[i] : 0
                u[i] = firstCorrected / (secondCorrected.squareRoot() + epsilon) + decay
            }
            var parameterSquares = 0.0, updateSquares = 0.0
            for i in 0..<3 {
                parameterSquares += p[i] * p[i]
                updateSquares += u[i] * u[i]
            }
            let ratio = parameterSquares.squareRoot() / updateSquares.squareRoot()
            for i in 0..<4 { p[i] -= learningRates[index] * (adapted[i] ? ratio : 1) * u[i] }
            expectedU.append(u)
        }

        let parameters = try host.makeTensor([0.5, -1, 2, 0.25] as [Float], shape: [4])
        let firstMoment = try host.makeTensor([Float](repeating: 0, count: 4), shape: [4])
        let secondMoment = try host.makeTensor([Float](repeating: 0, count: 4), shape: [4])
        for (index, g) in gradients.enumerated() {
            let gradientTensor = try host.makeTensor(g.map(Float.init), shape: [4])
            try host.lamb(parameters: parameters, gradients: gradientTensor, firstMoment: firstMoment,
                          secondMoment: secondMoment, segments: table,
                          step: LAMBStep(learningRate: learningRates[index], weightDecay: wd, step: index + 1,
                                         beta1: beta1, beta2: beta2, epsilon: epsilon))
            expectClose(try host.download(gradientTensor), expectedU[index].map(Float.init), relative: 1e-5,
                        absolute: 1e-7, "u at step \(index + 1)")
        }
        expectClose(try host.download(parameters), p.map(Float.init), relative: 1e-6, absolute: 1e-7, "p after 2 steps")
        expectClose(try host.download(firstMoment), m.map(Float.init), relative: 1e-6, absolute: 1e-9, "m")
        expectClose(try host.download(secondMoment), v.map(Float.init), relative: 1e-5, absolute: 1e-12, "v")
    }
}
