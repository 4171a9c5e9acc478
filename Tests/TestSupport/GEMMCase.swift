import Tensors
import Testing

/// One GEMM test: sizes, transposes, scalars and padding (leading dimensions wider than the rows
/// and operands placed at an offset inside their tensors), with seeded random operands.
public struct GEMMCase: CustomTestStringConvertible, Sendable {
    public let shape: GEMMShape
    public let alpha: Float
    public let beta: Float
    public let offsets: (a: Int, b: Int, c: Int)

    /// - Parameter padding: extra elements added to every leading dimension (and offsets of
    ///   3, 5, 7 elements) when non-zero.
    public init(m: Int, n: Int, k: Int, transposeA: Bool, transposeB: Bool, batch: Int = 1,
                alpha: Float = 1, beta: Float = 0, padding: Int = 0) {
        var shape = GEMMShape(m: m, n: n, k: k, transposeA: transposeA, transposeB: transposeB, batch: batch)
        if padding > 0 {
            shape.lda += padding
            shape.ldb += padding
            shape.ldc += padding
            shape.strideA = shape.storedA.rows * shape.lda + padding
            shape.strideB = shape.storedB.rows * shape.ldb + padding
            shape.strideC = m * shape.ldc + padding
        }
        self.shape = shape
        self.alpha = alpha
        self.beta = beta
        offsets = padding > 0 ? (3, 5, 7) : (0, 0, 0)
    }

    /// Elements after C's last row that must survive the GEMM.
    public static let canaryCount = 16

    /// Elements each operand's tensor holds (offset + span, plus the canary tail for C).
    public var sizes: (a: Int, b: Int, c: Int) {
        func span(_ rows: Int, _ ld: Int, _ stride: Int) -> Int { (shape.batch - 1) * stride + rows * ld }
        return (offsets.a + span(shape.storedA.rows, shape.lda, shape.strideA),
                offsets.b + span(shape.storedB.rows, shape.ldb, shape.strideB),
                offsets.c + span(shape.m, shape.ldc, shape.strideC) + Self.canaryCount)
    }

    /// Random A and B in [-1, 1]. C is random everywhere, except that its written region is
    /// poisoned with NaN when beta = 0 (C must not be read then, and every element must be written).
    public func operands(seed: UInt64) -> (a: [Float], b: [Float], c: [Float]) {
        var generator = SplitMix64(seed: seed)
        let a = randomValues(sizes.a, using: &generator)
        let b = randomValues(sizes.b, using: &generator)
        var c = randomValues(sizes.c, using: &generator)
        if beta == 0 { for index in writtenIndices { c[index] = .nan } }
        return (a, b, c)
    }

    /// Runs the case on `backend` and returns all of C (including untouched padding).
    public func run(on backend: any Backend, operands: (a: [Float], b: [Float], c: [Float])) throws -> [Float] {
        let a = try backend.makeTensor(operands.a, shape: [operands.a.count])
        let b = try backend.makeTensor(operands.b, shape: [operands.b.count])
        let c = try backend.makeTensor(operands.c, shape: [operands.c.count])
        try backend.gemm(shape, alpha: alpha, a: a.view(offset: offsets.a, shape: [sizes.a - offsets.a]),
                         b: b.view(offset: offsets.b, shape: [sizes.b - offsets.b]), beta: beta,
                         c: c.view(offset: offsets.c, shape: [sizes.c - offsets.c]))
        return try backend.download(c)
    }

    /// Indices of C the GEMM writes, in row-major batch order.
    public var writtenIndices: [Int] {
        (0..<shape.batch).flatMap { batch in
            (0..<shape.m).flatMap { row in
                let start = offsets.c + batch * shape.strideC + row * shape.ldc
                return start..<(start + shape.n)
            }
        }
    }

    /// The elements of C the GEMM writes (padding and offsets excluded), for comparison.
    public func written(_ c: [Float]) -> [Float] { writtenIndices.map { c[$0] } }

    /// Records a failure if any element of C outside the written region changed (padding between
    /// rows and batches, the offset head, the tail).
    public func expectPaddingUntouched(_ after: [Float], before: [Float],
                                       sourceLocation: SourceLocation = #_sourceLocation) {
        var outside = Set(before.indices)
        outside.subtract(writtenIndices)
        let changed = outside.filter { !(after[$0] == before[$0] || (after[$0].isNaN && before[$0].isNaN)) }
        if let first = changed.min() {
            Issue.record("\(self): \(changed.count) element(s) outside C's region changed, first at \(first)",
                         sourceLocation: sourceLocation)
        }
    }

    public var testDescription: String {
        "\(shape) alpha=\(alpha) beta=\(beta)" + (offsets.a > 0 ? " padded" : "")
    }

    /// Every transpose combination for each (m, n, k).
    public static func allTransposes(_ sizes: [(Int, Int, Int)], batch: Int = 1, alpha: Float = 1, beta: Float = 0,
                                     padding: Int = 0) -> [GEMMCase] {
        sizes.flatMap { m, n, k in
            [(false, false), (false, true), (true, false), (true, true)].map { ta, tb in
                GEMMCase(m: m, n: n, k: k, transposeA: ta, transposeB: tb, batch: batch, alpha: alpha, beta: beta,
                         padding: padding)
            }
        }
    }
}
