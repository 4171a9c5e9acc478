// gemm.cl: register-blocked SGEMM for CPU-class OpenCL devices (PoCL, Intel CPU runtime).
//
//   C[b] = alpha * op(A[b]) * B'[b] + beta * C[b]      (row-major, b in [0, batch))
//
// op(A) is M x K: A stored M x K (lda >= K) or, with TRANSPOSE_A, K x M (lda >= M).
// B' is K x NPAD, dense, made by gemm_pack_b from the caller's B in any orientation; columns
// N..NPAD-1 are zero, so the main kernel loads whole vectors without bounds checks.
//
// Why this shape (measured on PoCL 3.1, see bench/RESULTS.md): on CPUs, each work-item keeps a
// ROWS x (VW*VECS) tile of C in vector registers and streams K, with no local memory and no
// barriers. Work-groups run along the row tiles of one column tile, so the group's K x (VW*VECS)
// slice of B' stays in L1 while each work-item streams its own rows of A. GPU-style tiling with
// local memory and barriers ran ~50x slower on PoCL; GPUs use CLBlast instead.
//
// Tunables (build options), chosen from CL_DEVICE_PREFERRED_VECTOR_WIDTH_FLOAT by the launcher:
//   VW    vector width (4, 8 or 16)
//   VECS  vectors per row of the tile        (tile width  TN = VW * VECS)
//   ROWS  rows of C per work-item            (tile height)
// Preconditions: NPAD % (VW*VECS) == 0; offsets and strides in elements.
// Split-K (launcher-chosen for long K): see gemm_blocked and gemm_reduce_splits.
// Host reference: Sources/Tensors/HostBackend.swift (cblas_sgemm).

#ifndef VW
#define VW 8
#endif
#ifndef VECS
#define VECS 3
#endif
#ifndef ROWS
#define ROWS 4
#endif

// floatV, vloadV, vstoreV: common.cl.
#define TN (VW * VECS)

// B'[b][k][j] = op(B)[b][k][j] for j < N, 0 for N <= j < npad.  Global size (npad, K, batch).
__kernel void gemm_pack_b(__global float *packed, const int npad,
                          __global const float *b, const long b_offset, const int ldb, const long stride_b,
                          const int transpose_b, const int n, const int k) {
    const int j = get_global_id(0), kk = get_global_id(1), batch = get_global_id(2);
    if (j >= npad || kk >= k) return;
    __global const float *src = b + b_offset + batch * stride_b;
    float value = 0.0f;
    if (j < n) value = transpose_b ? src[(long)j * ldb + kk] : src[(long)kk * ldb + j];
    packed[((long)batch * k + kk) * npad + j] = value;
}

// Global size (npad / TN, roundup(ceil(M / ROWS), local1), batch * splits).
//
// Split-K: with splits > 1, work-item z = batch * splits + split covers K range
// [split * k_chunk, min(K, (split + 1) * k_chunk)) and the launcher points C at a dense partial
// buffer (ldc = N, stride_c = M * N, beta = 0) that gemm_reduce_splits sums. A long K (the weight
// gradients, K = B*N tokens) otherwise streams a K x TN slice of B' far larger than L2 once per
// work-item; a chunk of it stays in L1/L2 for the whole work-group.
__kernel void gemm_blocked(__global float *c, const long c_offset, const int ldc, const long stride_c,
                           __global const float *a, const long a_offset, const int lda, const long stride_a,
                           const int transpose_a,
                           __global const float *packed, const int npad,
                           const int m, const int n, const int k, const float alpha, const float beta,
                           const int splits, const int k_chunk) {
    const int column0 = get_global_id(0) * TN;
    const int row0 = get_global_id(1) * ROWS;
    const int z = get_global_id(2);
    const int batch = z / splits, split = z % splits;
    if (row0 >= m) return;
    const int k_begin = split * k_chunk;
    const int k_end = min(k, k_begin + k_chunk);

    __global const float *ab = a + a_offset + batch * stride_a;
    __global const float *bb = packed + (long)batch * k * npad + column0;

    // Rows past M are clamped for loading (always in bounds) and never stored.
    int rows[ROWS];
#pragma unroll
    for (int r = 0; r < ROWS; ++r) rows[r] = min(row0 + r, m - 1);

    floatV acc[ROWS][VECS];
#pragma unroll
    for (int r = 0; r < ROWS; ++r)
#pragma unroll
        for (int v = 0; v < VECS; ++v) acc[r][v] = (floatV)(0.0f);

    // A element (row, kk): a[row * lda + kk], or a[kk * lda + row] when A is stored transposed.
    const long row_step = transpose_a ? 1 : lda;
    const long k_step = transpose_a ? lda : 1;
    for (int kk = k_begin; kk < k_end; ++kk) {
        floatV bv[VECS];
#pragma unroll
        for (int v = 0; v < VECS; ++v) bv[v] = vloadV(0, bb + (long)kk * npad + v * VW);
#pragma unroll
        for (int r = 0; r < ROWS; ++r) {
            const floatV av = (floatV)(ab[rows[r] * row_step + kk * k_step]);
#pragma unroll
            for (int v = 0; v < VECS; ++v) acc[r][v] = fma(av, bv[v], acc[r][v]);
        }
    }

    __global float *cb = c + c_offset + z * stride_c;
#pragma unroll
    for (int r = 0; r < ROWS; ++r) {
        const int row = row0 + r;
        if (row >= m) break;
        __global float *line = cb + (long)row * ldc + column0;
#pragma unroll
        for (int v = 0; v < VECS; ++v) {
            const int column = column0 + v * VW;
            if (column + VW <= n) {
                floatV result = alpha * acc[r][v];
                // beta == 0 must not read C: it may hold NaN (BLAS semantics).
                if (beta != 0.0f) result += beta * vloadV(0, line + v * VW);
                vstoreV(result, 0, line + v * VW);
            } else if (column < n) {
                float values[VW];
                vstoreV(acc[r][v], 0, values);
                for (int e = 0; e < n - column; ++e) {
                    float result = alpha * values[e];
                    if (beta != 0.0f) result += beta * line[v * VW + e];
                    line[v * VW + e] = result;
                }
            }
        }
    }
}

// C[b] = sum over s of partial[b * splits + s] + beta * C[b], for split-K gemm_blocked.
// partial is dense (M x N per slice). Global size (N, M, batch).
__kernel void gemm_reduce_splits(__global float *c, const long c_offset, const int ldc, const long stride_c,
                                 __global const float *partial, const int splits,
                                 const int m, const int n, const float beta) {
    const int column = get_global_id(0), row = get_global_id(1), batch = get_global_id(2);
    if (column >= n || row >= m) return;
    __global const float *p = partial + (long)batch * splits * m * n + (long)row * n + column;
    float sum = 0.0f;
    for (int s = 0; s < splits; ++s) sum += p[(long)s * m * n];
    __global float *target = c + c_offset + batch * stride_c + (long)row * ldc + column;
    *target = beta != 0.0f ? sum + beta * *target : sum;
}
