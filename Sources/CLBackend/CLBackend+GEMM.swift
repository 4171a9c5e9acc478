import CCLBlast
import COpenCL
import Foundation
import Tensors

// GEMM on OpenCL: one entry point, two providers (see GEMMProvider).
// Host reference: HostBackend.gemm (cblas_sgemm).
extension CLBackend {
    /// Work-items per group along the row tiles of gemm_blocked: they share one K×TN slice of B'.
    static let gemmRowGroup = 32
    /// K per split in split-K mode (see gemm.cl): 512 measured best of 128–1024 here.
    static let defaultSplitChunk = 512

    public func gemm(_ shape: GEMMShape, alpha: Float, a: Tensor, b: Tensor, beta: Float, c: Tensor) throws {
        try checkOperands("gemm", a, b, c)
        try shape.validate(a: a, b: b, c: c)
        guard shape.m > 0, shape.n > 0 else { return }
        for value in [shape.m, shape.n, shape.k, shape.lda, shape.ldb, shape.ldc] { _ = try int32Count(value, "gemm") }
        // CLBlast rejects K = 0 (C = beta·C); the hand-written kernel handles it.
        if gemmProvider == .clblast && shape.k > 0 {
            try clblastGEMM(shape, alpha: alpha, a: a, b: b, beta: beta, c: c)
        } else {
            try blockedGEMM(shape, alpha: alpha, a: a, b: b, beta: beta, c: c)
        }
    }

    /// kernels/cl/gemm.cl: pack op(B) into a zero-padded K×NPAD scratch tensor, then the blocked kernel.
    func blockedGEMM(_ shape: GEMMShape, alpha: Float, a: Tensor, b: Tensor, beta: Float, c: Tensor) throws {
        let tile = gemmTile
        let npad = (shape.n + tile.columns - 1) / tile.columns * tile.columns
        let options = tile.buildOptions
        // A pooled scratch buffer: after the first step of a run, this allocates nothing.
        let packed = try makeTensor(shape: [shape.batch, max(shape.k, 1), npad])
        if shape.k > 0 {
            try launch(kernel("gemm_pack_b", family: "gemm", options: options), label: "gemm_pack_b",
                       global: [npad, shape.k, shape.batch],
                       [.buffer(packed), .int(Int32(npad)), .operand(b), .int(Int32(shape.ldb)),
                        .long(Int64(shape.strideB)), .int(shape.transposeB ? 1 : 0), .int(Int32(shape.n)),
                        .int(Int32(shape.k))])
        }
        let rowTiles = (shape.m + tile.rows - 1) / tile.rows
        let group = min(Self.gemmRowGroup, rowTiles)
        let splits = Self.kSplits(k: shape.k, chunk: gemmSplitChunk)
        let chunk = (shape.k + splits - 1) / splits
        // With split-K, the blocked kernel writes dense per-split partial products instead of C.
        let partial = splits > 1 ? try makeTensor(shape: [shape.batch * splits, shape.m, shape.n]) : nil
        let target: [KernelArgument] = partial.map {
            [.buffer($0), .long(Int64($0.offset)), .int(Int32(shape.n)), .long(Int64(shape.m * shape.n))]
        } ?? [.operand(c), .int(Int32(shape.ldc)), .long(Int64(shape.strideC))]
        try launch(kernel("gemm_blocked", family: "gemm", options: options), label: "gemm_blocked",
                   global: [npad / tile.columns, rowTiles, shape.batch * splits], local: [1, group, 1],
                   target + [
                    .operand(a), .int(Int32(shape.lda)), .long(Int64(shape.strideA)),
                    .int(shape.transposeA ? 1 : 0), .buffer(packed), .int(Int32(npad)),
                    .int(Int32(shape.m)), .int(Int32(shape.n)), .int(Int32(shape.k)), .float(alpha),
                    .float(partial == nil ? beta : 0), .int(Int32(splits)), .int(Int32(max(chunk, 1)))])
        if let partial {
            try launch(kernel("gemm_reduce_splits", family: "gemm", options: options), label: "gemm_reduce_splits",
                       global: [shape.n, shape.m, shape.batch],
                       [.operand(c), .int(Int32(shape.ldc)), .long(Int64(shape.strideC)),
                        .buffer(partial), .int(Int32(splits)), .int(Int32(shape.m)), .int(Int32(shape.n)),
                        .float(beta)])
        }
    }

    /// How many K chunks the hand-written GEMM splits a product into: chunks of about
    /// `chunk` once K reaches twice that (the weight gradients, K = B·N tokens).
    static func kSplits(k: Int, chunk: Int) -> Int {
        return k >= 2 * chunk ? (k + chunk - 1) / chunk : 1
    }

    /// CLBlast: `CLBlastSgemmWithTempBuffer` (its scratch comes from our pool, so steady-state
    /// training allocates nothing) or `CLBlastSgemmStridedBatched`.
    func clblastGEMM(_ shape: GEMMShape, alpha: Float, a: Tensor, b: Tensor, beta: Float, c: Tensor) throws {
        let layout = CLBlastLayoutRowMajor
        let transposeA = shape.transposeA ? CLBlastTransposeYes : CLBlastTransposeNo
        let transposeB = shape.transposeB ? CLBlastTransposeYes : CLBlastTransposeNo
        if beta == 0 {
            // CLBlast computes beta·C even when beta is 0, so a NaN already in C would survive;
            // BLAS semantics (and our other provider) never read C then.
            try zeroMatrix(c, rows: shape.m, columns: shape.n, ld: shape.ldc, batch: shape.batch, stride: shape.strideC)
        }
        var status: CLBlastStatusCode
        var queue: cl_command_queue? = self.queue
        if shape.batch == 1 {
            var temporaryBytes = 0
            status = CLBlastSGemmTempBufferSize(layout, transposeA, transposeB, shape.m, shape.n, shape.k,
                                                a.offset, shape.lda, b.offset, shape.ldb, c.offset, shape.ldc,
                                                &queue, &temporaryBytes)
            try check(status.rawValue, "CLBlastSGemmTempBufferSize(\(shape))")
            let temporary = try makeTensor(shape: [max(temporaryBytes / 4, 1)])
            status = recordingEvent("clblast_sgemm") { event in
                CLBlastSgemmWithTempBuffer(layout, transposeA, transposeB, shape.m, shape.n, shape.k, alpha,
                                           memory(a), a.offset, shape.lda, memory(b), b.offset, shape.ldb, beta,
                                           memory(c), c.offset, shape.ldc, &queue, event, memory(temporary))
            }
            try check(status.rawValue, "CLBlastSgemmWithTempBuffer(\(shape))")
        } else {
            status = recordingEvent("clblast_sgemm_batched") { event in
                CLBlastSgemmStridedBatched(layout, transposeA, transposeB, shape.m, shape.n, shape.k, alpha,
                                           memory(a), a.offset, shape.lda, shape.strideA,
                                           memory(b), b.offset, shape.ldb, shape.strideB, beta,
                                           memory(c), c.offset, shape.ldc, shape.strideC, shape.batch,
                                           &queue, event)
            }
            try check(status.rawValue, "CLBlastSgemmStridedBatched(\(shape))")
        }
    }

    /// Zeroes the rows×columns region of each batch of a strided matrix (vector.cl `fill_matrix`).
    func zeroMatrix(_ c: Tensor, rows: Int, columns: Int, ld: Int, batch: Int, stride: Int) throws {
        try launch(kernel("fill_matrix", family: "vector"), label: "fill_matrix", global: [columns, rows, batch],
                   [.operand(c), .int(Int32(ld)), .long(Int64(stride)), .int(Int32(rows)),
                    .int(Int32(columns)), .float(0)])
    }
}
