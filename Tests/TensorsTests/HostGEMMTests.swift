import Tensors
import Testing
import TestSupport

/// The host GEMM (OpenBLAS) against a naive Double loop: it is the reference for every OpenCL
/// GEMM, so it is checked independently first.
@Suite struct HostGEMMTests {
    static let cases: [GEMMCase] =
        GEMMCase.allTransposes([(1, 1, 1), (7, 33, 65), (65, 65, 32), (130, 192, 64)])
        + GEMMCase.allTransposes([(33, 17, 9)], alpha: 0.5, beta: 0.25, padding: 3)
        + GEMMCase.allTransposes([(65, 32, 65)], batch: 3, alpha: 1.5, beta: -1, padding: 2)

    @Test(arguments: cases)
    func matchesNaiveReference(_ testCase: GEMMCase) throws {
        let host = HostBackend()
        let operands = testCase.operands(seed: 11)
        let actual = try testCase.run(on: host, operands: operands)
        let expected = referenceGEMM(testCase.shape, alpha: testCase.alpha, a: operands.a, b: operands.b,
                                     beta: testCase.beta, c: operands.c, offsets: testCase.offsets)
        expectClose(testCase.written(actual), testCase.written(expected),
                    absolute: gemmAbsoluteTolerance(k: testCase.shape.k), testCase.testDescription)
        testCase.expectPaddingUntouched(actual, before: operands.c)
    }

    @Test func kZeroScalesC() throws {
        let host = HostBackend()
        let shape = GEMMShape(m: 3, n: 4, k: 0)
        let c = try host.makeTensor((0..<12).map(Float.init), shape: [12])
        let empty = try host.makeTensor(shape: [1])
        try host.gemm(shape, alpha: 1, a: empty, b: empty, beta: 2, c: c)
        #expect(try host.download(c) == (0..<12).map { Float($0) * 2 })
    }

    @Test func rejectsOperandsOutsideTheirTensors() throws {
        let host = HostBackend()
        let a = try host.makeTensor(shape: [10]), b = try host.makeTensor(shape: [12]), c = try host.makeTensor(shape: [12])
        #expect(throws: BackendError.self) {
            try host.gemm(GEMMShape(m: 3, n: 4, k: 4), alpha: 1, a: a, b: b, beta: 0, c: c)
        }
        var shape = GEMMShape(m: 3, n: 4, k: 3)
        shape.lda = 2
        let error = #expect(throws: BackendError.self) {
            try host.gemm(shape, alpha: 1, a: c, b: c, beta: 0, c: c)
        }
        #expect("\(error!)".contains("lda = 2"))
    }

    @Test func rejectsTensorsOfAnotherBackend() throws {
        let host = HostBackend(), other = HostBackend()
        let mine = try host.makeTensor(shape: [4]), theirs = try other.makeTensor(shape: [4])
        let error = #expect(throws: BackendError.self) { try host.axpy(alpha: 1, x: theirs, y: mine) }
        #expect("\(error!)".contains("another device"))
    }
}
