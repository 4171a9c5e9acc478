import CLBackend
import Tensors
import Testing
import TestSupport

/// kernels/cl/l2norm.cl against the host backend.
@Suite(.enabled(if: TestDevices.hasOpenCL, TestDevices.skipReason), .serialized)
struct L2NormTests {
    let device: CLBackend

    init() throws { device = try TestDevices.backend() }

    @Test(arguments: [[256, 256], [128, 384], [7, 33], [1, 1], [5, 4097]])
    func l2NormalizeMatchesHost(shape: [Int]) throws {
        var generator = SplitMix64(seed: 77)
        var x = randomValues(shape[0] * shape[1], in: -3...3, using: &generator)
        // One row below F.normalize's 1e-12 floor exercises the clamped branch.
        for j in 0..<shape[1] { x[j] = 1e-15 }
        let dy = randomValues(x.count, using: &generator)
        let forward = try compareWithHost(device, inputs: [.float(x, shape: shape)],
                                          outputs: [OpOutput(shape: shape), OpOutput(shape: [shape[0]])],
                                          "l2NormalizeForward \(shape)") { b, i, o in
            try b.l2NormalizeForward(output: o[0], norms: o[1], input: i[0])
        }
        // The clamped row's gradient is dy / 1e-12 ~ 1e12: compare relative only there.
        try compareWithHost(device, inputs: [.float(dy, shape: shape), .float(forward[0], shape: shape),
                                             .float(forward[1], shape: [shape[0]])],
                            outputs: [OpOutput(shape: shape)], "l2NormalizeBackward \(shape)") { b, i, o in
            try b.l2NormalizeBackward(inputGradient: o[0], outputGradient: i[0], output: i[1], norms: i[2])
        }
    }
}
