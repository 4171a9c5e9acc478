/// The sizes of one (strided-batched) row-major GEMM `C = alpha · op(A) · op(B) + beta · C`.
///
/// `op(A)` is M×K and `op(B)` is K×N. With `transposeA`, A is stored K×M (so `op(A) = Aᵀ`), and
/// likewise for B. Leading dimensions are row strides in elements; batch `i` adds `i · strideA`
/// (and so on) to each operand's offset. This is exactly cblas/CLBlast `RowMajor` semantics.
public struct GEMMShape: Equatable, CustomStringConvertible, Sendable {
    public var transposeA: Bool
    public var transposeB: Bool
    public var m: Int
    public var n: Int
    public var k: Int
    public var lda: Int
    public var ldb: Int
    public var ldc: Int
    public var batch: Int
    public var strideA: Int
    public var strideB: Int
    public var strideC: Int

    /// A GEMM on densely packed operands: leading dimensions equal the stored row lengths and
    /// batches are laid end to end.
    public init(m: Int, n: Int, k: Int, transposeA: Bool = false, transposeB: Bool = false, batch: Int = 1) {
        self.transposeA = transposeA
        self.transposeB = transposeB
        self.m = m
        self.n = n
        self.k = k
        // BLAS requires ld ≥ max(1, stored columns), even for empty operands.
        lda = max(transposeA ? m : k, 1)
        ldb = max(transposeB ? k : n, 1)
        ldc = max(n, 1)
        self.batch = batch
        strideA = m * k
        strideB = k * n
        strideC = m * n
    }

    /// Stored rows and columns of A and B.
    public var storedA: (rows: Int, columns: Int) { transposeA ? (k, m) : (m, k) }
    public var storedB: (rows: Int, columns: Int) { transposeB ? (n, k) : (k, n) }

    /// Floating-point operations (2·M·N·K per batch).
    public var flops: Double { 2 * Double(m) * Double(n) * Double(k) * Double(batch) }

    public var description: String {
        "\(transposeA ? "T" : "N")\(transposeB ? "T" : "N") M=\(m) N=\(n) K=\(k)"
            + (batch > 1 ? " batch=\(batch)" : "")
    }

    /// Elements an operand of `rows`×`columns` with leading dimension `ld` spans, over all batches.
    private func extent(rows: Int, columns: Int, ld: Int, stride: Int) -> Int {
        guard rows > 0, columns > 0, batch > 0 else { return 0 }
        return (batch - 1) * stride + (rows - 1) * ld + columns
    }

    /// Throws ``BackendError/invalidArgument(operation:reason:)`` unless the sizes are valid and
    /// every operand lies inside its tensor.
    public func validate(a: Tensor, b: Tensor, c: Tensor) throws {
        func fail(_ reason: String) -> BackendError { .invalidArgument(operation: "gemm \(self)", reason: reason) }
        guard m >= 0, n >= 0, k >= 0, batch >= 1 else { throw fail("sizes must be non-negative and batch ≥ 1") }
        guard strideA >= 0, strideB >= 0, strideC >= 0 else { throw fail("strides must be non-negative") }
        let checks: [(String, (rows: Int, columns: Int), Int, Int, Tensor)] = [
            ("A", storedA, lda, strideA, a), ("B", storedB, ldb, strideB, b), ("C", (m, n), ldc, strideC, c),
        ]
        for (label, stored, ld, stride, tensor) in checks {
            guard ld >= max(stored.columns, 1) else {
                throw fail("ld\(label.lowercased()) = \(ld) is smaller than the \(stored.columns) stored columns of \(label)")
            }
            let needed = extent(rows: stored.rows, columns: stored.columns, ld: ld, stride: stride)
            guard needed <= tensor.capacity else {
                throw fail("\(label) spans \(needed) elements but its tensor holds only \(tensor.capacity) from its offset")
            }
        }
    }
}
