import Tensors
import Testing
import TestSupport

/// Finite-difference checks, in Double, of the reference backward passes of elementwise.cl,
/// softmax.cl, l2norm.cl and patch_embed.cl (the host backend runs the same code in Float, and
/// the OpenCL kernels are compared with it).
@Suite struct GradientTests {
    @Test func geluDerivative() {
        let x = randomDoubles(40, in: -6...6, seed: 1) + [0, 1e-3, -1e-3]
        let analytic = x.map { ElementwiseReference.geluDerivative($0) }
        let numerical = x.map { point in numericalGradient(of: { ElementwiseReference.gelu($0[0]) }, at: [point])[0] }
        expectGradientMatches(analytic, numerical, relative: 1e-6, absolute: 1e-8, "GELU'")
    }

    @Test func softmaxCrossEntropyGradient() {
        let (rows, columns) = (3, 5)
        let logits = randomDoubles(rows * columns, in: -3...3, seed: 2)
        let labels = [4, 0, 2], scale = 2 * 0.2 / Double(rows)
        func loss(_ z: [Double]) -> Double {
            var gradient = [Double](repeating: 0, count: columns)
            return (0..<rows).reduce(0) { sum, r in
                sum + z[(r * columns)..<((r + 1) * columns)].withUnsafeBufferPointer { row in
                    gradient.withUnsafeMutableBufferPointer {
                        LossReference.softmaxCrossEntropy(logits: row, label: labels[r], scale: scale, gradient: $0)
                    }
                }
            }
        }
        var analytic = [Double](repeating: 0, count: rows * columns)
        for r in 0..<rows {
            logits[(r * columns)..<((r + 1) * columns)].withUnsafeBufferPointer { row in
                analytic.withUnsafeMutableBufferPointer {
                    _ = LossReference.softmaxCrossEntropy(
                        logits: row, label: labels[r], scale: scale,
                        gradient: UnsafeMutableBufferPointer(rebasing: $0[(r * columns)..<((r + 1) * columns)]))
                }
            }
        }
        expectGradientMatches(analytic, numericalGradient(of: loss, at: logits), "softmax cross-entropy")
    }

    @Test func l2NormalizeBackward() {
        let columns = 6
        let x = randomDoubles(columns, in: -2...2, seed: 3), weights = randomDoubles(columns, seed: 4)
        func normalized(_ input: [Double]) -> [Double] {
            var y = [Double](repeating: 0, count: columns)
            input.withUnsafeBufferPointer { source in y.withUnsafeMutableBufferPointer { _ = L2NormReference.normalize(source, into: $0) } }
            return y
        }
        let y = normalized(x)
        let norm = x.map { $0 * $0 }.reduce(0, +).squareRoot()
        var analytic = [Double](repeating: 0, count: columns)
        weights.withUnsafeBufferPointer { dy in
            y.withUnsafeBufferPointer { out in
                analytic.withUnsafeMutableBufferPointer {
                    L2NormReference.normalizeBackward(outputGradient: dy, output: out, norm: norm, inputGradient: $0)
                }
            }
        }
        let numerical = numericalGradient(of: { zip(normalized($0), weights).map(*).reduce(0, +) }, at: x)
        expectGradientMatches(analytic, numerical, "L2 normalize")
    }

    @Test func patchEmbedBackward() throws {
        // B = 2, 2 channels, 4×6 images, P = 2, C = 3, one cls row before the 6 patches.
        let host = HostBackend()
        let geometry = try PatchGeometry(output: host.makeTensor(shape: [2, 7, 3]), images: host.makeTensor(shape: [2, 2, 4, 6]),
                                         weight: host.makeTensor(shape: [3, 8]), bias: host.makeTensor(shape: [3]),
                                         patchSize: 2, firstToken: 1, operation: "test")
        let images = randomDoubles(2 * 2 * 4 * 6, seed: 5), weights = randomDoubles(2 * 7 * 3, seed: 6)
        let parameters = randomDoubles(3 * 8 + 3, seed: 7)
        func loss(_ p: [Double]) -> Double {
            var tokens = [Double](repeating: 0, count: 2 * 7 * 3)
            tokens.withUnsafeMutableBufferPointer { out in
                images.withUnsafeBufferPointer { image in
                    p.withUnsafeBufferPointer { all in
                        PatchEmbedReference.forward(output: out.baseAddress!, images: image.baseAddress!,
                                                    weight: all.baseAddress!, bias: all.baseAddress! + 24, geometry: geometry)
                    }
                }
            }
            return zip(tokens, weights).map(*).reduce(0, +)
        }
        var analytic = [Double](repeating: 0, count: parameters.count)
        analytic.withUnsafeMutableBufferPointer { gradient in
            weights.withUnsafeBufferPointer { dy in
                images.withUnsafeBufferPointer { image in
                    PatchEmbedReference.backward(weightGradient: gradient.baseAddress!, biasGradient: gradient.baseAddress! + 24,
                                                 outputGradient: dy.baseAddress!, images: image.baseAddress!, geometry: geometry)
                }
            }
        }
        expectGradientMatches(analytic, numericalGradient(of: loss, at: parameters), "patch projection dW, db")
    }
}
