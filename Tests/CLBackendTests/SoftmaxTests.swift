import CLBackend
import Tensors
import Testing
import TestSupport

/// kernels/cl/softmax.cl (both variants) against the host backend.
@Suite(.enabled(if: TestDevices.hasOpenCL, TestDevices.skipReason), .serialized)
struct SoftmaxTests {
    /// (rows, columns): MoCo's logits are B×B (ViT-Tiny default batch 128, reference 4096 split
    /// per device), plus odd sizes around the 128-wide GPU group.
    static let shapes: [[Int]] = [[128, 128], [256, 256], [7, 129], [1, 1], [33, 5], [3, 1000]]
    let device: CLBackend

    init() throws { device = try TestDevices.backend() }

    @Test(arguments: CLBackend.KernelVariant.allCases, [(-5...5) as ClosedRange<Float>, -60...60])
    func softmaxCrossEntropyMatchesHost(variant: CLBackend.KernelVariant, range: ClosedRange<Float>) throws {
        device.kernelVariant = variant
        for shape in Self.shapes {
            var generator = SplitMix64(seed: UInt64(shape[0] * 1000 + shape[1]))
            let logits = randomValues(shape[0] * shape[1], in: range, using: &generator)
            // Labels on the "diagonal" plus an offset, as the distributed loss uses them.
            let labels = (0..<shape[0]).map { Int32(($0 + 3) % shape[1]) }
            try compareWithHost(device, inputs: [.float(logits, shape: shape), .int32(labels, shape: [shape[0]])],
                                outputs: [OpOutput(shape: [shape[0]]), OpOutput(shape: shape)],
                                "softmaxCrossEntropy \(variant) \(shape) \(range)") { b, i, o in
                try b.softmaxCrossEntropy(losses: o[0], logitsGradient: o[1], logits: i[0], labels: i[1],
                                          scale: 2 * 0.2 / Float(shape[0]))
            }
        }
    }

    /// Mixup/cutmix targets with label smoothing (rows summing to 1), plus rows that do not sum
    /// to 1 (the op's gradient keeps the total), random logits over both ranges.
    @Test(arguments: [(-5...5) as ClosedRange<Float>, -60...60])
    func softTargetCrossEntropyMatchesHost(range: ClosedRange<Float>) throws {
        for shape in Self.shapes {
            var generator = SplitMix64(seed: UInt64(shape[0] * 7 + shape[1]))
            let logits = randomValues(shape[0] * shape[1], in: range, using: &generator)
            var targets = randomValues(shape[0] * shape[1], in: 0...1, using: &generator)
            for r in 0..<shape[0] where r % 3 != 2 {
                let row = (r * shape[1])..<((r + 1) * shape[1])
                let total = targets[row].reduce(0, +)
                for i in row { targets[i] /= total }
            }
            try compareWithHost(device, inputs: [.float(logits, shape: shape), .float(targets, shape: shape)],
                                outputs: [OpOutput(shape: [shape[0]]), OpOutput(shape: shape)],
                                "softTargetCrossEntropy \(shape) \(range)") { b, i, o in
                try b.softTargetCrossEntropy(losses: o[0], logitsGradient: o[1], logits: i[0], targets: i[1],
                                             scale: 1 / Float(shape[0]))
            }
        }
    }

    @Test func badLabelsAndShapesAreRejected() throws {
        let logits = try device.makeTensor(shape: [2, 3]), gradient = try device.makeTensor(shape: [2, 3])
        let losses = try device.makeTensor(shape: [2])
        let floatLabels = try device.makeTensor(shape: [2])
        #expect(throws: BackendError.self) {
            try device.softmaxCrossEntropy(losses: losses, logitsGradient: gradient, logits: logits, labels: floatLabels,
                                           scale: 1)
        }
        let host = HostBackend()
        let error = #expect(throws: BackendError.self) {
            try host.softmaxCrossEntropy(losses: host.makeTensor(shape: [2]), logitsGradient: host.makeTensor(shape: [2, 3]),
                                         logits: host.makeTensor([0, 0, 0, 0, 0, 0] as [Float], shape: [2, 3]),
                                         labels: host.makeTensor([0, 3] as [Int32], shape: [2]), scale: 1)
        }
        #expect("\(error!)".contains("label 3 of row 1"))
        let targetError = #expect(throws: BackendError.self) {
            try device.softTargetCrossEntropy(losses: losses, logitsGradient: gradient, logits: logits,
                                              targets: device.makeTensor(shape: [2, 2]), scale: 1)
        }
        #expect("\(targetError!)".contains("equal-sized targets"))
    }
}
