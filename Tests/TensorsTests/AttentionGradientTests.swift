import Foundation
import Tensors
import Testing
import TestSupport

/// AttentionReference's backward against central differences of its forward, in Double; then
/// the host backend (OpenBLAS, Float) against the reference. Together they make the host the
/// trusted reference for kernels/cl/attention.cl (CLBackendTests/AttentionTests).
@Suite struct AttentionGradientTests {
    static let tinyShapes = [
        AttentionGeometry(batch: 1, tokens: 3, width: 8, heads: 2),
        AttentionGeometry(batch: 1, tokens: 5, width: 8, heads: 2),
        AttentionGeometry(batch: 2, tokens: 4, width: 12, heads: 3),
        AttentionGeometry(batch: 1, tokens: 1, width: 8, heads: 1),
    ]

    /// loss = Σ output·W for a random W, so dloss/doutput = W and dloss/dqkv is what the backward returns.
    @Test(arguments: tinyShapes)
    func referenceBackwardMatchesFiniteDifferences(_ g: AttentionGeometry) {
        let qkv = randomDoubles(g.batch * g.tokens * g.qkvWidth, in: -1.5...1.5, seed: 7)
        let weights = randomDoubles(g.batch * g.tokens * g.width, seed: 8)
        let loss = { (x: [Double]) -> Double in
            zip(AttentionReference.forward(qkv: x, geometry: g).output, weights).reduce(0) { $0 + $1.0 * $1.1 }
        }
        let (output, lse) = AttentionReference.forward(qkv: qkv, geometry: g)
        let analytic = AttentionReference.backward(outputGradient: weights, qkv: qkv, output: output, logSumExp: lse,
                                                   geometry: g)
        expectGradientMatches(analytic, numericalGradient(of: loss, at: qkv), "dqkv \(g)")
    }

    /// The saved log-sum-exp against its definition, log Σ_j exp(S_ij), in Double.
    @Test func referenceLogSumExpMatchesDefinition() {
        let g = AttentionGeometry(batch: 1, tokens: 4, width: 8, heads: 2)
        let qkv = randomDoubles(g.batch * g.tokens * g.qkvWidth, seed: 9)
        let lse = AttentionReference.forward(qkv: qkv, geometry: g).logSumExp
        for h in 0..<g.heads {
            for i in 0..<g.tokens {
                var sum = 0.0
                for j in 0..<g.tokens {
                    var score = 0.0
                    for d in 0..<g.headDim {
                        score += qkv[i * g.qkvWidth + h * g.headDim + d] * qkv[j * g.qkvWidth + g.width + h * g.headDim + d]
                    }
                    sum += exp(score / Double(g.headDim).squareRoot())
                }
                #expect(abs(lse[h * g.tokens + i] - log(sum)) < 1e-12, "lse h=\(h) i=\(i)")
            }
        }
    }

    /// Real ViT shapes plus odd ones; the reference runs in Double on the same Float inputs.
    @Test(arguments: [
        AttentionGeometry(batch: 2, tokens: 65, width: 192, heads: 3),
        AttentionGeometry(batch: 1, tokens: 65, width: 384, heads: 12),
        AttentionGeometry(batch: 2, tokens: 7, width: 64, heads: 2),
        AttentionGeometry(batch: 1, tokens: 1, width: 64, heads: 1),
    ])
    func hostMatchesReference(_ g: AttentionGeometry) throws {
        let host = HostBackend()
        var generator = SplitMix64(seed: UInt64(g.tokens * 1000 + g.width))
        let qkv = randomValues(g.batch * g.tokens * g.qkvWidth, in: -2...2, using: &generator)
        let outputGradient = randomValues(g.batch * g.tokens * g.width, using: &generator)
        let (output, lse) = AttentionReference.forward(qkv: qkv.map(Double.init), geometry: g)
        let gradient = AttentionReference.backward(outputGradient: outputGradient.map(Double.init),
                                                   qkv: qkv.map(Double.init), output: output, logSumExp: lse,
                                                   geometry: g)

        let qkvTensor = try host.makeTensor(qkv, shape: [g.batch, g.tokens, g.qkvWidth])
        // NaN in every output: the host must overwrite all of them (OpenBLAS may read C at beta 0).
        let outputTensor = try host.makeTensor([Float](repeating: .nan, count: output.count), shape: g.outputShape)
        let lseTensor = try host.makeTensor([Float](repeating: .nan, count: lse.count), shape: g.statisticShape)
        try host.attentionForward(output: outputTensor, logSumExp: lseTensor, qkv: qkvTensor, heads: g.heads)
        expectClose(try host.download(outputTensor), output.map(Float.init), "output \(g)")
        expectClose(try host.download(lseTensor), lse.map(Float.init), "logSumExp \(g)")

        let gradientTensor = try host.makeTensor([Float](repeating: .nan, count: qkv.count),
                                                 shape: [g.batch, g.tokens, g.qkvWidth])
        // The backward gets the exact forward values, so only its own rounding is measured.
        try host.attentionBackward(qkvGradient: gradientTensor,
                                   outputGradient: try host.makeTensor(outputGradient, shape: g.outputShape),
                                   qkv: qkvTensor, output: try host.makeTensor(output.map(Float.init), shape: g.outputShape),
                                   logSumExp: try host.makeTensor(lse.map(Float.init), shape: g.statisticShape),
                                   heads: g.heads)
        expectClose(try host.download(gradientTensor), gradient.map(Float.init), "qkvGradient \(g)")
    }

    @Test func hostRejectsBadShapes() throws {
        let host = HostBackend()
        let qkv = try host.makeTensor(shape: [2, 5, 96])
        let output = try host.makeTensor(shape: [2, 5, 32]), lse = try host.makeTensor(shape: [2, 2, 5])
        #expect(throws: BackendError.self) { try host.attentionForward(output: output, logSumExp: lse, qkv: qkv, heads: 3) }
        #expect(throws: BackendError.self) { try host.attentionForward(output: output, logSumExp: lse, qkv: qkv, heads: 0) }
        #expect(throws: BackendError.self) {
            try host.attentionForward(output: output, logSumExp: lse, qkv: qkv.reshaped([10, 96]), heads: 2)
        }
        #expect(throws: BackendError.self) {
            try host.attentionForward(output: output, logSumExp: lse, qkv: try host.makeTensor(shape: [2, 5, 95]),
                                      heads: 1)
        }
        #expect(throws: BackendError.self) {
            try host.attentionForward(output: try host.makeTensor(shape: [2, 5, 33]), logSumExp: lse, qkv: qkv, heads: 2)
        }
        #expect(throws: BackendError.self) {
            try host.attentionForward(output: output, logSumExp: try host.makeTensor(shape: [2, 5, 2]), qkv: qkv,
                                      heads: 2)
        }
        #expect(throws: BackendError.self) {
            try host.attentionBackward(qkvGradient: try host.makeTensor(shape: [2, 5, 93]), outputGradient: output,
                                       qkv: qkv, output: output, logSumExp: lse, heads: 2)
        }
        #expect(throws: BackendError.self) {
            try host.attentionBackward(qkvGradient: qkv, outputGradient: try host.makeTensor(shape: [2, 6, 32]),
                                       qkv: qkv, output: output, logSumExp: lse, heads: 2)
        }
        // A well-formed call passes, so the throws above are about the shapes.
        try host.fill(qkv, value: 0.5)
        try host.attentionForward(output: output, logSumExp: lse, qkv: qkv, heads: 2)
    }
}
