import CLBackend
import Tensors
import Testing
import TestSupport

/// kernels/cl/elementwise.cl (both variants) against the host backend.
@Suite(.enabled(if: TestDevices.hasOpenCL, TestDevices.skipReason), .serialized)
struct ElementwiseTests {
    /// (rows, columns): ViT-Tiny/Small activations and odd sizes around the work-group size and
    /// the CPU-class kernels' span of 16384 elements ([2, 65, 384] and [5, 7001]: several spans and
    /// a partial one; 7001 columns: two rows per work-item and a float8 tail in each row).
    static let shapes: [[Int]] = [[130, 192], [2, 65, 384], [7, 33], [1, 1], [65, 1], [3, 4097], [5, 7001]]
    let device: CLBackend

    init() throws { device = try TestDevices.backend() }

    func values(_ shape: [Int], seed: UInt64, range: ClosedRange<Float> = -4...4) -> [Float] {
        var generator = SplitMix64(seed: seed)
        return randomValues(shape.reduce(1, *), in: range, using: &generator)
    }

    @Test(arguments: CLBackend.KernelVariant.allCases, [(-4...4) as ClosedRange<Float>, -30...30])
    func geluForwardAndBackward(variant: CLBackend.KernelVariant, range: ClosedRange<Float>) throws {
        device.kernelVariant = variant
        for shape in Self.shapes {
            let x = values(shape, seed: 1, range: range), dy = values(shape, seed: 2)
            // The CPU variant's erfc fit has ~1.2e-7 relative error: well inside rtol 1e-4.
            try compareWithHost(device, inputs: [.float(x, shape: shape)], outputs: [OpOutput(shape: shape)],
                                "gelu \(variant) \(shape)") { backend, i, o in
                try backend.gelu(output: o[0], input: i[0])
            }
            try compareWithHost(device, inputs: [.float(dy, shape: shape), .float(x, shape: shape)],
                                outputs: [OpOutput(shape: shape)], "geluBackward \(variant) \(shape)") { backend, i, o in
                try backend.geluBackward(inputGradient: o[0], outputGradient: i[0], input: i[1])
            }
        }
    }

    /// Drop path's per-sample scaling: keep masks scaled by 1/keep (and zeros), out of place and in place.
    @Test(arguments: CLBackend.KernelVariant.allCases, shapes)
    func scaleRowsMatchesHost(variant: CLBackend.KernelVariant, shape: [Int]) throws {
        device.kernelVariant = variant
        let columns = shape.last!, rows = shape.reduce(1, *) / columns
        let x = values(shape, seed: 11)
        let factors = (0..<rows).map { $0 % 3 == 1 ? Float(0) : Float(1 / 0.9) }
        try compareWithHost(device, inputs: [.float(x, shape: [rows, columns]), .float(factors, shape: [rows])],
                            outputs: [OpOutput(shape: [rows, columns])], relative: 0, absolute: 0, "scaleRows \(shape)") { b, i, o in
            try b.scaleRows(output: o[0], input: i[0], factors: i[1])
        }
        try compareWithHost(device, inputs: [.float(factors, shape: [rows])],
                            outputs: [OpOutput(shape: [rows, columns], initial: x)], relative: 0, absolute: 0,
                            "scaleRows in place \(shape)") { b, i, o in
            try b.scaleRows(output: o[0], input: o[0], factors: i[0])
        }
        #expect(throws: BackendError.self) {
            try device.scaleRows(output: device.makeTensor(shape: [rows, columns]), input: device.makeTensor(shape: [rows, columns]),
                                 factors: device.makeTensor(shape: [rows + 1]))
        }
    }

    @Test(arguments: CLBackend.KernelVariant.allCases, shapes)
    func reluAddScaleAndBias(variant: CLBackend.KernelVariant, shape: [Int]) throws {
        device.kernelVariant = variant
        let x = values(shape, seed: 3), y = values(shape, seed: 4), dy = values(shape, seed: 5)
        let columns = shape.last!, bias = values([columns], seed: 6)
        try compareWithHost(device, inputs: [.float(x, shape: shape)], outputs: [OpOutput(shape: shape)],
                            "relu \(shape)") { b, i, o in try b.relu(output: o[0], input: i[0]) }
        try compareWithHost(device, inputs: [.float(dy, shape: shape), .float(x, shape: shape)],
                            outputs: [OpOutput(shape: shape)], "reluBackward \(shape)") { b, i, o in
            try b.reluBackward(inputGradient: o[0], outputGradient: i[0], output: i[1])
        }
        try compareWithHost(device, inputs: [.float(x, shape: shape), .float(y, shape: shape)],
                            outputs: [OpOutput(shape: shape)], "add \(shape)") { b, i, o in
            try b.add(output: o[0], i[0], i[1])
        }
        try compareWithHost(device, inputs: [], outputs: [OpOutput(shape: shape, initial: x)], "scale \(shape)") { b, _, o in
            try b.scale(o[0], by: -0.37)
        }
        try compareWithHost(device, inputs: [.float(bias, shape: [columns])], outputs: [OpOutput(shape: shape, initial: x)],
                            "addBias \(shape)") { b, i, o in try b.addBias(o[0], bias: i[0]) }
    }

    @Test(arguments: CLBackend.KernelVariant.allCases, [[130, 192], [16640, 64], [7, 33], [1, 5], [513, 3], [300, 13]])
    func sumRowsAccumulates(variant: CLBackend.KernelVariant, shape: [Int]) throws {
        device.kernelVariant = variant
        let x = values(shape, seed: 7), start = values([shape.last!], seed: 8)
        // Rows are summed in chunks of 256 then added: rounding differs from the host's Double sum.
        try compareWithHost(device, inputs: [.float(x, shape: shape)],
                            outputs: [OpOutput(shape: [shape.last!], initial: start)],
                            absolute: 1e-6 * Double(shape[0]) + 1e-5, "sumRows \(shape)") { b, i, o in
            try b.sumRows(output: o[0], input: i[0])
        }
    }

    @Test func inPlaceAddAndMismatchedCounts() throws {
        let x = try device.makeTensor([1, 2, 3] as [Float], shape: [3])
        try device.add(output: x, x, x)
        #expect(try device.download(x) == [2, 4, 6])
        let y = try device.makeTensor(shape: [4])
        #expect(throws: BackendError.self) { try device.add(output: x, x, y) }
        #expect(throws: BackendError.self) { try device.addBias(y.reshaped([2, 2]), bias: x) }
    }
}
