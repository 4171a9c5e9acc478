import CLBackend
import Tensors
import Testing
import TestSupport

/// OpenCL GEMM (both providers) against the host backend on random operands: ViT shapes, odd
/// shapes that are not multiples of the register tile or vector width, every transpose
/// combination, alpha/beta, padded leading dimensions and offsets, strided batches. C's written
/// region starts as NaN when beta = 0; padding and a canary tail must survive.
@Suite(.enabled(if: TestDevices.hasOpenCL, TestDevices.skipReason), .serialized)
struct CLGEMMTests {
    static let kernelCases: [GEMMCase] =
        GEMMCase.allTransposes([(130, 576, 192), (1, 1, 1), (7, 33, 65), (65, 197, 33), (197, 65, 7), (33, 1, 197),
                                (1, 197, 65), (130, 192, 768)])
        + GEMMCase.allTransposes([(33, 17, 9), (65, 50, 1)], alpha: 0.5, beta: 0.25, padding: 3)
        + GEMMCase.allTransposes([(65, 65, 32)], batch: 6)
        + GEMMCase.allTransposes([(197, 32, 197)], batch: 2, alpha: -1, beta: 1, padding: 5)
        // Long K takes the split-K path (K ≥ 2 × 512): partial products, then a reduction.
        + GEMMCase.allTransposes([(37, 40, 1500)], alpha: 0.5, beta: 0.25, padding: 3)
        + [GEMMCase(m: 20, n: 24, k: 1100, transposeA: true, transposeB: false, batch: 2),
           GEMMCase(m: 192, n: 64, k: 4160, transposeA: true, transposeB: false)]

    /// CLBlast compiles each routine family once per process (15–30 s cold on PoCL), so these
    /// cases reuse few variants: the direct GEMM, the indirect one, and the strided-batched one.
    static let clblastCases: [GEMMCase] =
        GEMMCase.allTransposes([(7, 33, 65)])
        + [GEMMCase(m: 130, n: 576, k: 192, transposeA: false, transposeB: true),
           GEMMCase(m: 33, n: 17, k: 9, transposeA: true, transposeB: false, alpha: 0.5, beta: 0.25, padding: 3),
           GEMMCase(m: 65, n: 65, k: 32, transposeA: false, transposeB: true, batch: 6),
           GEMMCase(m: 65, n: 32, k: 65, transposeA: false, transposeB: false, batch: 6, alpha: 1, beta: 0.5, padding: 2)]

    let kernelBackend: CLBackend
    let clblastBackend: CLBackend
    let host = HostBackend()

    init() throws {
        kernelBackend = try TestDevices.backend(provider: .kernel)
        clblastBackend = try TestDevices.backend(provider: .clblast)
    }

    func check(_ testCase: GEMMCase, on backend: CLBackend, sourceLocation: SourceLocation = #_sourceLocation) throws {
        let operands = testCase.operands(seed: 23)
        let expected = try testCase.run(on: host, operands: operands)
        let actual = try testCase.run(on: backend, operands: operands)
        expectClose(testCase.written(actual), testCase.written(expected),
                    absolute: gemmAbsoluteTolerance(k: testCase.shape.k),
                    "\(backend.gemmProvider) \(testCase)", sourceLocation: sourceLocation)
        testCase.expectPaddingUntouched(actual, before: operands.c, sourceLocation: sourceLocation)
    }

    @Test(arguments: kernelCases)
    func handWrittenKernelMatchesHost(_ testCase: GEMMCase) throws {
        try check(testCase, on: kernelBackend)
    }

    @Test(arguments: clblastCases)
    func clblastMatchesHost(_ testCase: GEMMCase) throws {
        try check(testCase, on: clblastBackend)
    }

    @Test func kZeroScalesC() throws {
        for backend in [kernelBackend, clblastBackend] {
            let c = try backend.makeTensor((0..<12).map(Float.init), shape: [12])
            let empty = try backend.makeTensor(shape: [1])
            try backend.gemm(GEMMShape(m: 3, n: 4, k: 0), alpha: 1, a: empty, b: empty, beta: 2, c: c)
            #expect(try backend.download(c) == (0..<12).map { Float($0) * 2 }, "\(backend.gemmProvider)")
        }
    }

    @Test func steadyStateAllocatesNothing() throws {
        let testCase = GEMMCase(m: 65, n: 96, k: 48, transposeA: false, transposeB: true)
        let operands = testCase.operands(seed: 5)
        let a = try kernelBackend.makeTensor(operands.a, shape: [operands.a.count])
        let b = try kernelBackend.makeTensor(operands.b, shape: [operands.b.count])
        let c = try kernelBackend.makeTensor(shape: [operands.c.count])
        try kernelBackend.gemm(testCase.shape, alpha: 1, a: a, b: b, beta: 0, c: c)
        let before = kernelBackend.pool.statistics.driverAllocations
        for _ in 0..<3 { try kernelBackend.gemm(testCase.shape, alpha: 1, a: a, b: b, beta: 0, c: c) }
        try kernelBackend.synchronize()
        #expect(kernelBackend.pool.statistics.driverAllocations == before)
    }

    @Test func rejectsHostTensors() throws {
        let hostTensor = try host.makeTensor(shape: [16])
        let deviceTensor = try kernelBackend.makeTensor(shape: [16])
        let error = #expect(throws: BackendError.self) {
            try kernelBackend.gemm(GEMMShape(m: 4, n: 4, k: 4), alpha: 1, a: hostTensor, b: deviceTensor, beta: 0,
                                   c: deviceTensor)
        }
        #expect("\(error!)".contains("another device"))
    }
}
