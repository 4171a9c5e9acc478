// attention.cl: fused multi-head attention, forward and backward, never storing the N x N matrix.
//
//   S_ij = D^-1/2 (Q_i · K_j)     P_i = softmax_j(S_i)     O_i = Σ_j P_ij V_j
//   lse_i = log Σ_j exp(S_ij)                                   (saved for the backward)
//   Δ_i = dO_i · O_i      P_ij = exp(S_ij − lse_i) (recomputed)   dP_ij = dO_i · V_j
//   dS_ij = P_ij (dP_ij − Δ_i)   dQ_i = D^-1/2 Σ_j dS_ij K_j   dK_j = D^-1/2 Σ_i dS_ij Q_i
//   dV_j = Σ_i P_ij dO_i
// as timm's Attention (qkv Linear, reshape(B, N, 3, H, D), softmax(q·kᵀ·scale)·v). The forward
// is FlashAttention's online softmax (Dao et al. 2022, Algorithm 1; Milakov & Gimelshein 2018):
// a running max m and sum l, rescaled once per tile of keys; the backward is its Algorithm 2
// split into a query-row pass (dQ) and a key-row pass (dK, dV) so no atomics are needed.
//
// Layouts (row-major, every offset in elements, so tensor views need no sub-buffers):
//   qkv, qkv gradient (B, N, 3C): (b, n, s*C + h*D + d), s = 0 Q, 1 K, 2 V
//   output, output gradient (B, N, C): (b, n, h*D + d), heads concatenated
//   lse, delta (B, H, N)
// Global size (roundup(N, local), H, B), one work-item per query row (key row for the dK/dV
// pass; the CPU-class forward with D <= 32: QUERY_ROWS = 2 query rows, roundup(ceil(N / 2), local));
// rows past N compute a copy of row N-1 and store nothing, so the tiled variant's barriers are
// reached by every work-item.
//
// Variants (build option CPU_CLASS, from the device class):
//   1  each work-item streams the other side's rows straight from global memory: no local memory
//      and no barriers, which cost ~4x on PoCL; the rows of one (b, h) stay in L1/L2.
//   0  the work-group stages TILE rows at a time in local memory and every work-item reads them
//      there (GPUs: one global read per tile instead of one per work-item).
// Tunables: HEAD_DIM (D, required: per-row vectors live in private registers), TILE (rows per
// step of the inner loop; 8 keeps the CPU's tail waste small, 32 amortizes GPU barriers).
// Preconditions: N >= 1; local size along dimension 0 >= 1 (any).
// Host reference: Sources/Tensors/HostBackend+Attention.swift (AttentionReference).

#ifndef HEAD_DIM
#error "attention.cl needs -DHEAD_DIM=<head dimension>"
#endif
#ifndef TILE
#if CPU_CLASS
#define TILE 8
#else
#define TILE 32
#endif
#endif

// Where the inner loops read streamed rows from. ROW(src, tile, t) is the t-th row of the current
// step (first row j0, row stride ld in global memory, HEAD_DIM in a tile); AT does the same for a
// per-row scalar (lse, delta). Callers only use t with j0 + t < n.
#if CPU_CLASS
#define STREAM __global
#define ROW(src, tile, t) ((src) + (long)(j0 + (t)) * ld)
#define AT(src, tile, t) ((src)[j0 + (t)])
#else
#define STREAM __local
#define ROW(src, tile, t) ((tile) + (t) * HEAD_DIM)
#define AT(src, tile, t) ((tile)[t])
#endif

// Four partial sums: vector FMAs on CPUs and a shorter dependency chain everywhere.
inline float dot_row(const float *x, const STREAM float *y) {
    float4 sum4 = (float4)(0.0f);
#pragma unroll
    for (int d = 0; d + 4 <= HEAD_DIM; d += 4) sum4 = fma(vload4(0, x + d), vload4(0, y + d), sum4);
    float sum = (sum4.x + sum4.y) + (sum4.z + sum4.w);
#pragma unroll
    for (int d = HEAD_DIM / 4 * 4; d < HEAD_DIM; ++d) sum = fma(x[d], y[d], sum);
    return sum;
}

inline void axpy_row(float *acc, const float a, const STREAM float *y) {
#pragma unroll
    for (int d = 0; d < HEAD_DIM; ++d) acc[d] = fma(a, y[d], acc[d]);
}

inline void load_row(float *x, __global const float *src) {
#pragma unroll
    for (int d = 0; d < HEAD_DIM; ++d) x[d] = src[d];
}

#if !CPU_CLASS
// Copies rows first .. first+count-1 (stride ld) into a dense count x HEAD_DIM tile; count <= TILE.
inline void stage_rows(__local float *tile, __global const float *src, const int ld, const int first,
                       const int count) {
    for (int e = get_local_id(0); e < count * HEAD_DIM; e += get_local_size(0))
        tile[e] = src[(long)(first + e / HEAD_DIM) * ld + e % HEAD_DIM];
}

inline void stage_scalars(__local float *tile, __global const float *src, const int first, const int count) {
    for (int e = get_local_id(0); e < count; e += get_local_size(0)) tile[e] = src[first + e];
}
#endif

// The arguments of attention_forward, and of both backward passes, in either form below.
#define FORWARD_ARGUMENTS \
    __global float *output, const long output_offset, __global float *lse, const long lse_offset, \
    __global const float *qkv, const long qkv_offset, const int n, const int heads, const int width, \
    const float scale
#define BACKWARD_ARGUMENTS \
    __global float *qkv_gradient, const long qkv_gradient_offset, \
    __global const float *output_gradient, const long output_gradient_offset, \
    __global const float *qkv, const long qkv_offset, __global const float *lse, const long lse_offset, \
    __global const float *delta, const long delta_offset, const int n, const int heads, const int width, \
    const float scale

// VECTOR_ROWS: CPU-class devices with D a multiple of 8 run the kernels at the end of this file
// instead of these three (same names and arguments; the forward may take QUERY_ROWS rows each).
#if CPU_CLASS && HEAD_DIM % 8 == 0
#define VECTOR_ROWS 1
#else
#define VECTOR_ROWS 0
#endif

#if !VECTOR_ROWS
// output (B, N, C) and lse (B, H, N) from qkv (B, N, 3C); scale = D^-1/2.
__kernel void attention_forward(FORWARD_ARGUMENTS) {
    const int i = get_global_id(0), h = get_global_id(1), b = get_global_id(2);
    const int row = min(i, n - 1);
    const int ld = 3 * width;
    __global const float *queries = qkv + qkv_offset + (long)b * n * ld + h * HEAD_DIM;
    __global const float *keys = queries + width, *values = queries + 2 * width;
#if !CPU_CLASS
    __local float key_tile[TILE * HEAD_DIM], value_tile[TILE * HEAD_DIM];
#endif

    float q[HEAD_DIM], acc[HEAD_DIM];
    load_row(q, queries + (long)row * ld);
#pragma unroll
    for (int d = 0; d < HEAD_DIM; ++d) acc[d] = 0.0f;
    // m starts at -inf so the first tile's correction exp(m - m_new) is exactly 0.
    float m = -INFINITY, l = 0.0f;

    for (int j0 = 0; j0 < n; j0 += TILE) {
        const int count = min(TILE, n - j0);
#if !CPU_CLASS
        barrier(CLK_LOCAL_MEM_FENCE);
        stage_rows(key_tile, keys, ld, j0, count);
        stage_rows(value_tile, values, ld, j0, count);
        barrier(CLK_LOCAL_MEM_FENCE);
#endif
        // t < count is uniform across the work-group: a branch, not divergence.
        float s[TILE];
        float tile_max = -INFINITY;
#pragma unroll
        for (int t = 0; t < TILE; ++t) {
            s[t] = -INFINITY;
            if (t < count) s[t] = dot_row(q, ROW(keys, key_tile, t)) * scale;
            tile_max = fmax(tile_max, s[t]);
        }
        const float m_new = fmax(m, tile_max);
        const float correction = exp(m - m_new);
        l *= correction;
#pragma unroll
        for (int d = 0; d < HEAD_DIM; ++d) acc[d] *= correction;
#pragma unroll
        for (int t = 0; t < TILE; ++t) {
            if (t < count) {
                const float p = exp(s[t] - m_new);
                l += p;
                axpy_row(acc, p, ROW(values, value_tile, t));
            }
        }
        m = m_new;
    }

    if (i < n) {
        __global float *out = output + output_offset + ((long)b * n + i) * width + h * HEAD_DIM;
        const float inverse = 1.0f / l;
#pragma unroll
        for (int d = 0; d < HEAD_DIM; ++d) out[d] = acc[d] * inverse;
        // The only log of the row (expensive on PoCL); l >= 1 because the max term is exp(0).
        lse[lse_offset + ((long)b * heads + h) * n + i] = m + log(l);
    }
}

#endif  // !VECTOR_ROWS

// delta[b, h, i] = dO_i · O_i. Global size (N, H, B); the tiled variant does not need it tiled.
__kernel void attention_backward_delta(__global float *delta, const long delta_offset,
                                       __global const float *output_gradient, const long output_gradient_offset,
                                       __global const float *output, const long output_offset,
                                       const int n, const int heads, const int width) {
    const int i = get_global_id(0), h = get_global_id(1), b = get_global_id(2);
    if (i >= n) return;
    const long at = ((long)b * n + i) * width + h * HEAD_DIM;
    __global const float *gradient = output_gradient + output_gradient_offset + at, *out = output + output_offset + at;
    float sum = 0.0f;
    for (int d = 0; d < HEAD_DIM; ++d) sum = fma(gradient[d], out[d], sum);
    delta[delta_offset + ((long)b * heads + h) * n + i] = sum;
}

#if !VECTOR_ROWS
// dQ rows of qkv_gradient, one work-item per query row, streaming K and V.
__kernel void attention_backward_query(BACKWARD_ARGUMENTS) {
    const int i = get_global_id(0), h = get_global_id(1), b = get_global_id(2);
    const int row = min(i, n - 1);
    const int ld = 3 * width;
    __global const float *queries = qkv + qkv_offset + (long)b * n * ld + h * HEAD_DIM;
    __global const float *keys = queries + width, *values = queries + 2 * width;
    const long statistic = ((long)b * heads + h) * n + row;
    const float row_lse = lse[lse_offset + statistic], row_delta = delta[delta_offset + statistic];
#if !CPU_CLASS
    __local float key_tile[TILE * HEAD_DIM], value_tile[TILE * HEAD_DIM];
#endif

    float q[HEAD_DIM], gradient[HEAD_DIM], dq[HEAD_DIM];
    load_row(q, queries + (long)row * ld);
    load_row(gradient, output_gradient + output_gradient_offset + ((long)b * n + row) * width + h * HEAD_DIM);
#pragma unroll
    for (int d = 0; d < HEAD_DIM; ++d) dq[d] = 0.0f;

    for (int j0 = 0; j0 < n; j0 += TILE) {
        const int count = min(TILE, n - j0);
#if !CPU_CLASS
        barrier(CLK_LOCAL_MEM_FENCE);
        stage_rows(key_tile, keys, ld, j0, count);
        stage_rows(value_tile, values, ld, j0, count);
        barrier(CLK_LOCAL_MEM_FENCE);
#endif
#pragma unroll
        for (int t = 0; t < TILE; ++t) {
            if (t < count) {
                const STREAM float *key = ROW(keys, key_tile, t);
                const float p = exp(dot_row(q, key) * scale - row_lse);
                const float dp = dot_row(gradient, ROW(values, value_tile, t));
                axpy_row(dq, p * (dp - row_delta), key);
            }
        }
    }

    if (i < n) {
        __global float *target = qkv_gradient + qkv_gradient_offset + ((long)b * n + i) * ld + h * HEAD_DIM;
#pragma unroll
        for (int d = 0; d < HEAD_DIM; ++d) target[d] = dq[d] * scale;
    }
}

// dK and dV rows of qkv_gradient, one work-item per key row, streaming Q, dO, lse and delta.
__kernel void attention_backward_key(BACKWARD_ARGUMENTS) {
    const int j = get_global_id(0), h = get_global_id(1), b = get_global_id(2);
    const int row = min(j, n - 1);
    const int ld = 3 * width;
    __global const float *queries = qkv + qkv_offset + (long)b * n * ld + h * HEAD_DIM;
    __global const float *gradients = output_gradient + output_gradient_offset + (long)b * n * width + h * HEAD_DIM;
    __global const float *row_lses = lse + lse_offset + ((long)b * heads + h) * n;
    __global const float *row_deltas = delta + delta_offset + ((long)b * heads + h) * n;
#if !CPU_CLASS
    __local float query_tile[TILE * HEAD_DIM], gradient_tile[TILE * HEAD_DIM];
    __local float lse_tile[TILE], delta_tile[TILE];
#endif

    float k[HEAD_DIM], v[HEAD_DIM], dk[HEAD_DIM], dv[HEAD_DIM];
    load_row(k, queries + width + (long)row * ld);
    load_row(v, queries + 2 * width + (long)row * ld);
#pragma unroll
    for (int d = 0; d < HEAD_DIM; ++d) dk[d] = dv[d] = 0.0f;

    for (int j0 = 0; j0 < n; j0 += TILE) {
        const int count = min(TILE, n - j0);
#if CPU_CLASS
        // dO rows have stride C, not 3C: ROW uses ld, so step them by hand.
        #define GRADIENT_ROW(t) (gradients + (long)(j0 + (t)) * width)
#else
        #define GRADIENT_ROW(t) (gradient_tile + (t) * HEAD_DIM)
        barrier(CLK_LOCAL_MEM_FENCE);
        stage_rows(query_tile, queries, ld, j0, count);
        stage_rows(gradient_tile, gradients, width, j0, count);
        stage_scalars(lse_tile, row_lses, j0, count);
        stage_scalars(delta_tile, row_deltas, j0, count);
        barrier(CLK_LOCAL_MEM_FENCE);
#endif
#pragma unroll
        for (int t = 0; t < TILE; ++t) {
            if (t < count) {
                const STREAM float *query = ROW(queries, query_tile, t);
                const STREAM float *gradient = GRADIENT_ROW(t);
                const float p = exp(dot_row(k, query) * scale - AT(row_lses, lse_tile, t));
                axpy_row(dv, p, gradient);
                const float dp = dot_row(v, gradient);
                axpy_row(dk, p * (dp - AT(row_deltas, delta_tile, t)), query);
            }
        }
        #undef GRADIENT_ROW
    }

    if (j < n) {
        __global float *target = qkv_gradient + qkv_gradient_offset + ((long)b * n + j) * ld + h * HEAD_DIM;
#pragma unroll
        for (int d = 0; d < HEAD_DIM; ++d) {
            target[width + d] = dk[d] * scale;
            target[2 * width + d] = dv[d];
        }
    }
}
#endif  // !VECTOR_ROWS

#if VECTOR_ROWS
// The CPU-class kernels for D = 8k: every row of D floats held as D/8 float8 vectors (AVX
// registers, or L1 where they spill), the other side's rows streamed 8 at a time: 8 dot products,
// then one vector exp for their 8 probabilities, then the 8 rows' axpys. The same math, order of
// keys and online softmax as the kernels above; only the sums inside a dot product (8 lanes, then
// a fixed tree) and of the 8 probabilities (a tree) are grouped differently.
#define LANES (HEAD_DIM / 8)

inline void load_lanes(float8 *x, __global const float *src) {
#pragma unroll
    for (int d = 0; d < LANES; ++d) x[d] = vload8(d, src);
}

inline float dot_lanes(const float8 *x, __global const float *y) {
    float8 sum = x[0] * vload8(0, y);
#pragma unroll
    for (int d = 1; d < LANES; ++d) sum = fma(x[d], vload8(d, y), sum);
    return sum8(sum);
}

inline void axpy_lanes(float8 *acc, const float a, __global const float *y) {
    const float8 a8 = (float8)(a);
#pragma unroll
    for (int d = 0; d < LANES; ++d) acc[d] = fma(a8, vload8(d, y), acc[d]);
}

// QUERY_ROWS (1 or 2, from the launcher) query rows per work-item share every K and V row they
// load; global (ceil(N / QUERY_ROWS), H, B). A second row past N repeats row N-1, stores nothing.
#ifndef QUERY_ROWS
#define QUERY_ROWS 1
#endif

__kernel void attention_forward(FORWARD_ARGUMENTS) {
    const int i0 = get_global_id(0) * QUERY_ROWS, h = get_global_id(1), b = get_global_id(2);
    if (i0 >= n) return;   // no barriers here
    const int ld = 3 * width;
    __global const float *queries = qkv + qkv_offset + (long)b * n * ld + h * HEAD_DIM;
    __global const float *keys = queries + width, *values = queries + 2 * width;
    float8 q[QUERY_ROWS][LANES], acc[QUERY_ROWS][LANES];
    float m[QUERY_ROWS], l[QUERY_ROWS];
#pragma unroll
    for (int u = 0; u < QUERY_ROWS; ++u) {
        load_lanes(q[u], queries + (long)min(i0 + u, n - 1) * ld);
#pragma unroll
        for (int d = 0; d < LANES; ++d) acc[u][d] = (float8)(0.0f);
        m[u] = -INFINITY;
        l[u] = 0.0f;
    }
    for (int j0 = 0; j0 < n; j0 += 8) {
        const int count = min(8, n - j0);
        float s[QUERY_ROWS][8];
#pragma unroll
        for (int t = 0; t < 8; ++t) {
            if (t < count) {
                float8 key[LANES];
                load_lanes(key, keys + (long)(j0 + t) * ld);
#pragma unroll
                for (int u = 0; u < QUERY_ROWS; ++u) {
                    float8 sum = q[u][0] * key[0];
#pragma unroll
                    for (int d = 1; d < LANES; ++d) sum = fma(q[u][d], key[d], sum);
                    s[u][t] = sum8(sum) * scale;
                }
            } else {
#pragma unroll
                for (int u = 0; u < QUERY_ROWS; ++u) s[u][t] = -INFINITY;
            }
        }
        float p[QUERY_ROWS][8];
#pragma unroll
        for (int u = 0; u < QUERY_ROWS; ++u) {
            const float8 scores = vload8(0, s[u]);
            const float m_new = fmax(m[u], max8(scores));
            const float correction = exp(m[u] - m_new);
            const float8 p8 = exp(scores - m_new);   // exactly 0 past count
            l[u] = l[u] * correction + sum8(p8);
            const float8 correction8 = (float8)(correction);
#pragma unroll
            for (int d = 0; d < LANES; ++d) acc[u][d] *= correction8;
            vstore8(p8, 0, p[u]);
            m[u] = m_new;
        }
        for (int t = 0; t < count; ++t) {
            float8 value[LANES];
            load_lanes(value, values + (long)(j0 + t) * ld);
#pragma unroll
            for (int u = 0; u < QUERY_ROWS; ++u) {
                const float8 weight = (float8)(p[u][t]);
#pragma unroll
                for (int d = 0; d < LANES; ++d) acc[u][d] = fma(weight, value[d], acc[u][d]);
            }
        }
    }
#pragma unroll
    for (int u = 0; u < QUERY_ROWS; ++u) {
        const int i = i0 + u;
        if (i < n) {
            __global float *out = output + output_offset + ((long)b * n + i) * width + h * HEAD_DIM;
            const float8 inverse = (float8)(1.0f / l[u]);
#pragma unroll
            for (int d = 0; d < LANES; ++d) vstore8(acc[u][d] * inverse, d, out);
            lse[lse_offset + ((long)b * heads + h) * n + i] = m[u] + log(l[u]);
        }
    }
}

__kernel void attention_backward_query(BACKWARD_ARGUMENTS) {
    const int i = get_global_id(0), h = get_global_id(1), b = get_global_id(2);
    if (i >= n) return;
    const int ld = 3 * width;
    __global const float *queries = qkv + qkv_offset + (long)b * n * ld + h * HEAD_DIM;
    __global const float *keys = queries + width, *values = queries + 2 * width;
    const long statistic = ((long)b * heads + h) * n + i;
    const float row_lse = lse[lse_offset + statistic], row_delta = delta[delta_offset + statistic];
    float8 q[LANES], gradient[LANES], dq[LANES];
    load_lanes(q, queries + (long)i * ld);
    load_lanes(gradient, output_gradient + output_gradient_offset + ((long)b * n + i) * width + h * HEAD_DIM);
#pragma unroll
    for (int d = 0; d < LANES; ++d) dq[d] = (float8)(0.0f);
    for (int j0 = 0; j0 < n; j0 += 8) {
        const int count = min(8, n - j0);
        float s[8], dp[8];
#pragma unroll
        for (int t = 0; t < 8; ++t) {
            s[t] = t < count ? dot_lanes(q, keys + (long)(j0 + t) * ld) : 0.0f;
            dp[t] = t < count ? dot_lanes(gradient, values + (long)(j0 + t) * ld) : 0.0f;
        }
        const float8 p8 = exp(vload8(0, s) * scale - row_lse);
        float ds[8];
        vstore8(p8 * (vload8(0, dp) - row_delta), 0, ds);
        for (int t = 0; t < count; ++t) axpy_lanes(dq, ds[t], keys + (long)(j0 + t) * ld);
    }
    __global float *target = qkv_gradient + qkv_gradient_offset + ((long)b * n + i) * ld + h * HEAD_DIM;
    const float8 scale8 = (float8)(scale);
#pragma unroll
    for (int d = 0; d < LANES; ++d) vstore8(dq[d] * scale8, d, target);
}

__kernel void attention_backward_key(BACKWARD_ARGUMENTS) {
    const int j = get_global_id(0), h = get_global_id(1), b = get_global_id(2);
    if (j >= n) return;
    const int ld = 3 * width;
    __global const float *queries = qkv + qkv_offset + (long)b * n * ld + h * HEAD_DIM;
    __global const float *gradients = output_gradient + output_gradient_offset + (long)b * n * width + h * HEAD_DIM;
    __global const float *row_lses = lse + lse_offset + ((long)b * heads + h) * n;
    __global const float *row_deltas = delta + delta_offset + ((long)b * heads + h) * n;
    float8 k[LANES], v[LANES], dk[LANES], dv[LANES];
    load_lanes(k, queries + width + (long)j * ld);
    load_lanes(v, queries + 2 * width + (long)j * ld);
#pragma unroll
    for (int d = 0; d < LANES; ++d) dk[d] = dv[d] = (float8)(0.0f);
    for (int i0 = 0; i0 < n; i0 += 8) {
        const int count = min(8, n - i0);
        float s[8], dp[8], row_lse[8], row_delta[8];
#pragma unroll
        for (int t = 0; t < 8; ++t) {
            const bool live = t < count;
            s[t] = live ? dot_lanes(k, queries + (long)(i0 + t) * ld) : 0.0f;
            dp[t] = live ? dot_lanes(v, gradients + (long)(i0 + t) * width) : 0.0f;
            row_lse[t] = live ? row_lses[i0 + t] : 0.0f;
            row_delta[t] = live ? row_deltas[i0 + t] : 0.0f;
        }
        const float8 p8 = exp(vload8(0, s) * scale - vload8(0, row_lse));
        float p[8], ds[8];
        vstore8(p8, 0, p);
        vstore8(p8 * (vload8(0, dp) - vload8(0, row_delta)), 0, ds);
        for (int t = 0; t < count; ++t) {
            axpy_lanes(dv, p[t], gradients + (long)(i0 + t) * width);
            axpy_lanes(dk, ds[t], queries + (long)(i0 + t) * ld);
        }
    }
    __global float *target = qkv_gradient + qkv_gradient_offset + ((long)b * n + j) * ld + h * HEAD_DIM;
    const float8 scale8 = (float8)(scale);
#pragma unroll
    for (int d = 0; d < LANES; ++d) {
        vstore8(dk[d] * scale8, d, target + width);
        vstore8(dv[d], d, target + 2 * width);
    }
}
#endif  // VECTOR_ROWS
