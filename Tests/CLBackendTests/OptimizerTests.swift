import CLBackend
import Tensors
import Testing
import TestSupport

/// kernels/cl/reduce.cl and kernels/cl/optimizer.cl against the host backend, on a parameter
/// layout like a model's: tensors of many sizes (one longer than a 4096-element chunk), 1-D ones
/// that LARS does not adapt, and frozen gaps that no optimizer may touch.
@Suite(.enabled(if: TestDevices.hasOpenCL, TestDevices.skipReason), .serialized)
struct OptimizerTests {
    static let table = SegmentTable([
        .init(offset: 0, count: 192 * 48),            // patch projection weight
        .init(offset: 9216, count: 192, adapted: false),  // its bias
        .init(offset: 9408 + 13, count: 1, adapted: false), // a scalar after a frozen gap
        .init(offset: 9500, count: 4097),             // crosses a chunk boundary
        .init(offset: 13_597, count: 7, adapted: false),
        .init(offset: 20_000, count: 3),              // after a large frozen gap
    ])
    static let length = 20_011
    let device: CLBackend

    init() throws { device = try TestDevices.backend() }

    func values(seed: UInt64, range: ClosedRange<Float> = -1...1) -> [Float] {
        var generator = SplitMix64(seed: seed)
        return randomValues(Self.length, in: range, using: &generator)
    }

    @Test func squaredNormsPerSegment() throws {
        try compareWithHost(device, inputs: [.float(values(seed: 1), shape: [Self.length])],
                            outputs: [OpOutput(shape: [Self.table.count])], "squaredNorms") { b, i, o in
            try b.squaredNorms(output: o[0], input: i[0], segments: Self.table)
        }
    }

    @Test func adamwThreeStepsMatchHostAndSkipFrozenElements() throws {
        let parameters = values(seed: 2), moments = values(seed: 3, range: 0...0.01)
        let outputs = [OpOutput(shape: [Self.length], initial: parameters),
                       OpOutput(shape: [Self.length], initial: values(seed: 4, range: -0.01...0.01)),
                       OpOutput(shape: [Self.length], initial: moments)]
        let expected = try compareWithHost(device, inputs: (5...7).map { .float(values(seed: $0), shape: [Self.length]) },
                                           outputs: outputs, relative: 1e-5, absolute: 1e-6, "adamw") { b, i, o in
            for step in 1...3 {
                try b.adamw(parameters: o[0], gradients: i[step - 1], firstMoment: o[1], secondMoment: o[2],
                            segments: Self.table,
                            step: AdamWStep(learningRate: 1e-3 * Double(step), weightDecay: 0.1, step: step))
            }
        }
        let trained = Set(Self.table.segments.flatMap { $0.offset..<($0.offset + $0.count) })
        let frozenChanged = (0..<Self.length).filter { !trained.contains($0) && expected[0][$0] != parameters[$0] }
        #expect(frozenChanged.isEmpty, "frozen elements changed: \(frozenChanged.prefix(5))")
    }

    @Test func larsMatchesHost() throws {
        let outputs = [OpOutput(shape: [Self.length], initial: values(seed: 8)),
                       OpOutput(shape: [Self.length], initial: values(seed: 9)),
                       OpOutput(shape: [Self.length], initial: values(seed: 10, range: -0.1...0.1))]
        // Per-segment norms are float partial sums on the device and Double on the host.
        try compareWithHost(device, inputs: [], outputs: outputs, relative: 1e-4, absolute: 1e-6, "lars") { b, _, o in
            for _ in 0..<2 {
                try b.lars(parameters: o[0], gradients: o[1], momentumBuffer: o[2], segments: Self.table,
                           step: LARSStep(learningRate: 0.6, weightDecay: 1e-6))
            }
        }
    }

    @Test func sgdTwoStepsMatchHostAndSkipFrozenElements() throws {
        let parameters = values(seed: 13)
        let outputs = [OpOutput(shape: [Self.length], initial: parameters),
                       OpOutput(shape: [Self.length], initial: values(seed: 14, range: -0.1...0.1)),
                       OpOutput(shape: [Self.length], initial: values(seed: 15)),
                       OpOutput(shape: [Self.length], initial: values(seed: 16))]
        // Outputs: parameters, momentum buffer, and each step's gradients (overwritten with g + wd·p).
        let expected = try compareWithHost(device, inputs: [], outputs: outputs, relative: 1e-5, absolute: 1e-6,
                                           "sgd") { b, _, o in
            for step in 0..<2 {
                try b.sgd(parameters: o[0], gradients: o[2 + step], momentumBuffer: o[1], segments: Self.table,
                          step: SGDStep(learningRate: 0.1 * Double(step + 1), weightDecay: 1e-3, momentum: 0.9))
            }
        }
        let trained = Set(Self.table.segments.flatMap { $0.offset..<($0.offset + $0.count) })
        let frozenChanged = (0..<Self.length).filter { !trained.contains($0) && expected[0][$0] != parameters[$0] }
        #expect(frozenChanged.isEmpty, "frozen elements changed: \(frozenChanged.prefix(5))")
    }

    @Test func lambTwoStepsMatchHost() throws {
        var parameters = values(seed: 17)
        // An adapted segment of zero parameters: ‖p‖ = 0 takes the ratio-1 branch on the first step.
        let zeroed = Self.table.segments[5]
        for i in zeroed.offset..<(zeroed.offset + zeroed.count) { parameters[i] = 0 }
        let outputs = [OpOutput(shape: [Self.length], initial: parameters),
                       OpOutput(shape: [Self.length], initial: values(seed: 18, range: -0.01...0.01)),
                       OpOutput(shape: [Self.length], initial: values(seed: 19, range: 1e-4...1e-2)),
                       OpOutput(shape: [Self.length], initial: values(seed: 20)),
                       OpOutput(shape: [Self.length], initial: values(seed: 21))]
        // Outputs: parameters, both moments, and each step's gradients (overwritten with u). Per-segment
        // norms are float partial sums on the device and Double on the host.
        let expected = try compareWithHost(device, inputs: [], outputs: outputs, relative: 1e-4, absolute: 1e-6,
                                           "lamb") { b, _, o in
            for step in 1...2 {
                try b.lamb(parameters: o[0], gradients: o[2 + step], firstMoment: o[1], secondMoment: o[2],
                           segments: Self.table,
                           step: LAMBStep(learningRate: 0.01 * Double(step), weightDecay: 0.02, step: step))
            }
        }
        let trained = Set(Self.table.segments.flatMap { $0.offset..<($0.offset + $0.count) })
        let frozenChanged = (0..<Self.length).filter { !trained.contains($0) && expected[0][$0] != parameters[$0] }
        #expect(frozenChanged.isEmpty, "frozen elements changed: \(frozenChanged.prefix(5))")
    }

    @Test func momentumUpdateMatchesHost() throws {
        try compareWithHost(device, inputs: [.float(values(seed: 11), shape: [Self.length])],
                            outputs: [OpOutput(shape: [Self.length], initial: values(seed: 12))],
                            relative: 1e-6, absolute: 1e-7, "momentumUpdate") { b, i, o in
            try b.momentumUpdate(target: o[0], source: i[0], momentum: 0.996)
        }
    }
}

/// The optimizer references against values computed by hand from the formulas in SPEC A.6.
@Suite struct OptimizerReferenceTests {
    @Test func adamwFirstStepByHand() throws {
        // p = 1, g = 0.5, lr = 0.1, wd = 0.1: p ← 0.99; m = 0.05; v = 0.00025;
        // step size = 0.1 / (1 − 0.9) = 1; denominator = √0.00025 / √0.001 + 1e-8 = 0.5;
        // p ← 0.99 − 0.05 / 0.5 = 0.89.
        let host = HostBackend()
        let p = try host.makeTensor([1] as [Float], shape: [1]), g = try host.makeTensor([0.5] as [Float], shape: [1])
        let m = try host.makeTensor([0] as [Float], shape: [1]), v = try host.makeTensor([0] as [Float], shape: [1])
        try host.adamw(parameters: p, gradients: g, firstMoment: m, secondMoment: v,
                       segments: SegmentTable([.init(offset: 0, count: 1)]),
                       step: AdamWStep(learningRate: 0.1, weightDecay: 0.1, step: 1))
        expectClose(try host.download(p), [0.89], relative: 1e-6, absolute: 1e-7, "p")
        expectClose(try host.download(m), [0.05], relative: 1e-6, absolute: 1e-7, "m")
        expectClose(try host.download(v), [0.00025], relative: 1e-6, absolute: 1e-9, "v")
    }

    @Test func larsTrustRatioByHand() throws {
        // p = (3, 4), |p| = 5; g = (0, 2), |g| = 2, wd = 0: factor = 0.001·5/2 = 0.0025;
        // μ = (0, 0.005); p ← p − 0.5·μ = (3, 3.9975). The 1-D bias (adapted: false) gets g as is.
        let host = HostBackend()
        let p = try host.makeTensor([3, 4, 1] as [Float], shape: [3])
        let g = try host.makeTensor([0, 2, 0.25] as [Float], shape: [3])
        let mu = try host.makeTensor([0, 0, 0] as [Float], shape: [3])
        try host.lars(parameters: p, gradients: g, momentumBuffer: mu,
                      segments: SegmentTable([.init(offset: 0, count: 2), .init(offset: 2, count: 1, adapted: false)]),
                      step: LARSStep(learningRate: 0.5, weightDecay: 0))
        expectClose(try host.download(mu), [0, 0.005, 0.25], relative: 1e-6, absolute: 1e-8, "momentum buffer")
        expectClose(try host.download(p), [3, 3.9975, 0.875], relative: 1e-6, absolute: 1e-7, "parameters")
    }

    @Test func contiguousRunsMergeNeighbours() {
        let table = SegmentTable([.init(offset: 10, count: 5), .init(offset: 0, count: 10), .init(offset: 20, count: 1)])
        #expect(table.contiguousRuns.map { [$0.offset, $0.count] } == [[0, 15], [20, 1]])
        #expect(table.extent == 21)
    }
}
