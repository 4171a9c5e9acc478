// layernorm.cl: LayerNorm over the last dimension of x (R, C) (SPEC A.2: every ViT LayerNorm,
// eps 1e-6; formula as in the torch.nn.LayerNorm docs, biased variance).
//
//   forward:   mean[r] = sum_c x[r,c] / C,   var[r] = sum_c (x[r,c] - mean[r])^2 / C
//              rstd[r] = 1 / sqrt(var[r] + eps),   y[r,c] = (x[r,c] - mean[r]) * rstd[r] * w[c] + b[c]
//   backward:  xhat = (x - mean) * rstd,   g = dy * w
//              dx[r,c] = rstd[r] * (g - sum_c g / C - xhat * sum_c (g * xhat) / C)   (overwritten)
//              dw[c] += sum_r dy * xhat,   db[c] += sum_r dy                      (accumulated)
//
// Layouts: x, y, dy, dx dense (R, C) row-major; mean, rstd (R); w, b, dw, db (C). Every buffer is
// addressed as (base, offset in elements). Preconditions: C >= 1, R * C < 2^31.
//
// Variance: the mean is taken of x - x[r,0] and the row is then centred on that shifted mean,
// so x = 100 + U(-1,1) keeps its digits (a float mean of 100 is off by up to 4e-6, an E[x^2] -
// E[x]^2 formula by far more); the variance is the exact second pass sum (x - mean)^2.
//
// Variants (CPU_CLASS, from the device class; tests build both on PoCL):
//   CPU_CLASS=1  one work-item per row, no barriers, no local memory, the row walked as float8
//                vectors plus a scalar tail (the kernels in the CPU_CLASS block below; PoCL:
//                7 ms against 28-33 ms for the forward with 128-wide work-groups and barriers,
//                then about 2x faster again with the vectors). The parameter stage sums 16
//                adjacent columns (a cache line) per work-item as one float16.
//   CPU_CLASS=0  one work-group of GROUP work-items per row, strided over C, with local-memory
//                tree reductions (tree_sum, common.cl).
// The parameter gradients are column sums over up to R = 16640 rows (B*N tokens), in two stages
// for parallelism and a deterministic order (no atomics): layernorm_backward_params_partial sums
// blocks of rows_per_block rows into partial (2, blocks, C), layernorm_backward_params_reduce
// adds the blocks into dw and db. On GPUs the first stage also splits each block over
// COLUMN_LANES work-items per column, reduced in local memory.
//
// Tunables (GPU variant only; powers of two): GROUP (work-items per row), COLUMN_GROUP (columns
// per work-group) and COLUMN_LANES (work-items per column) of the params stage.
// Host reference: Sources/Tensors/HostBackend+LayerNorm.swift (LayerNormReference).

#ifndef GROUP
#define GROUP 128
#endif
#ifndef COLUMN_GROUP
#define COLUMN_GROUP 32
#endif
#ifndef COLUMN_LANES
#define COLUMN_LANES 8
#endif

#if !CPU_CLASS
// GPU: the work-items sharing one row, this one's index among them, and the row.
#define ROW_LANES GROUP
#define ROW_LANE ((int)get_local_id(0))
#define ROW_INDEX ((int)get_group_id(0))
// Every group is a real row (global = R * GROUP). No early return: PoCL 3.1 crashed on one before
// the barriers of row_sum, uniform as it is, whenever some lanes of the row had no columns.
#define ROW_GUARD(r, rows) 0

// The sum of `value` over the ROW_LANES work-items of one row; every one of them gets it. The
// trailing barrier lets the caller reuse `scratch` straight away.
float2 row_sum(const float2 value, __local float2 *scratch) {
    return tree_sum(scratch, value, ROW_LANE, GROUP, 1);
}
#endif

// CPU: global (R), one row per work-item, float8 over the columns. GPU: global (R * GROUP), local
// (GROUP).
__kernel void layernorm_forward(__global float *y, const long y_offset,
                                __global float *mean, const long mean_offset,
                                __global float *rstd, const long rstd_offset,
                                __global const float *x, const long x_offset,
                                __global const float *w, const long w_offset,
                                __global const float *b, const long b_offset,
                                const int rows, const int columns, const float epsilon) {
#if CPU_CLASS
    const int r = get_global_id(0);
    if (r >= rows) return;
    __global const float *xr = x + x_offset + (long)r * columns;
    __global float *yr = y + y_offset + (long)r * columns;
    w += w_offset;
    b += b_offset;
    const int vectors = columns / 8 * 8;
    // The shifted mean and the exact second pass, as the header explains.
    const float shift = xr[0];
    float8 sum8v = (float8)(0.0f);
    for (int c = 0; c < vectors; c += 8) sum8v += vload8(0, xr + c) - shift;
    float sum = sum8(sum8v);
    for (int c = vectors; c < columns; ++c) sum += xr[c] - shift;
    const float shifted_mean = sum / columns;
    float8 squares8 = (float8)(0.0f);
    for (int c = 0; c < vectors; c += 8) {
        const float8 d = (vload8(0, xr + c) - shift) - shifted_mean;
        squares8 = fma(d, d, squares8);
    }
    float squares = sum8(squares8);
    for (int c = vectors; c < columns; ++c) {
        const float d = (xr[c] - shift) - shifted_mean;
        squares = fma(d, d, squares);
    }
    const float s = 1.0f / sqrt(squares / columns + epsilon);
    for (int c = 0; c < vectors; c += 8) {
        const float8 xhat = ((vload8(0, xr + c) - shift) - shifted_mean) * s;
        vstore8(fma(xhat, vload8(0, w + c), vload8(0, b + c)), 0, yr + c);
    }
    for (int c = vectors; c < columns; ++c) yr[c] = fma(((xr[c] - shift) - shifted_mean) * s, w[c], b[c]);
    mean[mean_offset + r] = shift + shifted_mean;
    rstd[rstd_offset + r] = s;
#else
    __local float2 scratch[ROW_LANES];
    const int r = ROW_INDEX;
    if (ROW_GUARD(r, rows)) return;
    __global const float *xr = x + x_offset + (long)r * columns;
    __global float *yr = y + y_offset + (long)r * columns;

    const float shift = xr[0];
    float sum = 0.0f;
    for (int c = ROW_LANE; c < columns; c += ROW_LANES) sum += xr[c] - shift;
    // x - shift is exact for values within a factor of two of each other (Sterbenz), so the
    // centred values below lose nothing to the magnitude of the mean.
    const float shifted_mean = row_sum((float2)(sum, 0.0f), scratch).x / columns;
    float squares = 0.0f;
    for (int c = ROW_LANE; c < columns; c += ROW_LANES) {
        const float d = (xr[c] - shift) - shifted_mean;
        squares = fma(d, d, squares);
    }
    const float s = 1.0f / sqrt(row_sum((float2)(squares, 0.0f), scratch).x / columns + epsilon);
    for (int c = ROW_LANE; c < columns; c += ROW_LANES) {
        const float xhat = ((xr[c] - shift) - shifted_mean) * s;
        yr[c] = fma(xhat, w[w_offset + c], b[b_offset + c]);
    }
    if (ROW_LANE == 0) {
        mean[mean_offset + r] = shift + shifted_mean;
        rstd[rstd_offset + r] = s;
    }
#endif
}

// dx only; dw and db come from the two params kernels. Launch shapes as layernorm_forward.
__kernel void layernorm_backward_input(__global float *dx, const long dx_offset,
                                       __global const float *dy, const long dy_offset,
                                       __global const float *x, const long x_offset,
                                       __global const float *mean, const long mean_offset,
                                       __global const float *rstd, const long rstd_offset,
                                       __global const float *w, const long w_offset,
                                       const int rows, const int columns) {
#if CPU_CLASS
    const int r = get_global_id(0);
    if (r >= rows) return;
    __global const float *xr = x + x_offset + (long)r * columns;
    __global const float *dyr = dy + dy_offset + (long)r * columns;
    __global float *dxr = dx + dx_offset + (long)r * columns;
    w += w_offset;
    const float m = mean[mean_offset + r], s = rstd[rstd_offset + r];
    const int vectors = columns / 8 * 8;
    float8 g8 = (float8)(0.0f), gx8 = (float8)(0.0f);   // sum g, sum g * xhat
    for (int c = 0; c < vectors; c += 8) {
        const float8 xhat = (vload8(0, xr + c) - m) * s;
        const float8 g = vload8(0, dyr + c) * vload8(0, w + c);
        g8 += g;
        gx8 += g * xhat;
    }
    float2 sums = (float2)(sum8(g8), sum8(gx8));
    for (int c = vectors; c < columns; ++c) {
        const float xhat = (xr[c] - m) * s;
        const float g = dyr[c] * w[c];
        sums += (float2)(g, g * xhat);
    }
    const float2 means = sums / columns;
    for (int c = 0; c < vectors; c += 8) {
        const float8 xhat = (vload8(0, xr + c) - m) * s;
        const float8 g = vload8(0, dyr + c) * vload8(0, w + c);
        vstore8(s * (g - means.x - xhat * means.y), 0, dxr + c);
    }
    for (int c = vectors; c < columns; ++c) {
        const float xhat = (xr[c] - m) * s;
        dxr[c] = s * (dyr[c] * w[c] - means.x - xhat * means.y);
    }
#else
    __local float2 scratch[ROW_LANES];
    const int r = ROW_INDEX;
    if (ROW_GUARD(r, rows)) return;
    __global const float *xr = x + x_offset + (long)r * columns;
    __global const float *dyr = dy + dy_offset + (long)r * columns;
    __global float *dxr = dx + dx_offset + (long)r * columns;
    const float m = mean[mean_offset + r], s = rstd[rstd_offset + r];

    float2 sums = (float2)(0.0f);  // (sum g, sum g * xhat)
    for (int c = ROW_LANE; c < columns; c += ROW_LANES) {
        const float xhat = (xr[c] - m) * s;
        const float g = dyr[c] * w[w_offset + c];
        sums += (float2)(g, g * xhat);
    }
    const float2 means = row_sum(sums, scratch) / columns;
    for (int c = ROW_LANE; c < columns; c += ROW_LANES) {
        const float xhat = (xr[c] - m) * s;
        const float g = dyr[c] * w[w_offset + c];
        dxr[c] = s * (g - means.x - xhat * means.y);
    }
#endif
}

// partial[0][block][c] = sum dy * xhat and partial[1][block][c] = sum dy over the rows
// [block * rows_per_block, min(R, (block + 1) * rows_per_block)).
// CPU: global (ceil(C / 16), blocks), 16 adjacent columns per work-item, each column's rows in
// order. GPU: global (roundup(C, COLUMN_GROUP), blocks * COLUMN_LANES), local (COLUMN_GROUP,
// COLUMN_LANES).
__kernel void layernorm_backward_params_partial(__global float *partial,
                                                __global const float *dy, const long dy_offset,
                                                __global const float *x, const long x_offset,
                                                __global const float *mean, const long mean_offset,
                                                __global const float *rstd, const long rstd_offset,
                                                const int rows, const int columns, const int rows_per_block,
                                                const int blocks) {
#if CPU_CLASS
    const int c = get_global_id(0) * 16, block = get_global_id(1);
    if (c >= columns || block >= blocks) return;
    const int first = block * rows_per_block, end = min(rows, first + rows_per_block);
    if (c + 16 <= columns) {
        float16 dw16 = (float16)(0.0f), db16 = (float16)(0.0f);
        for (int r = first; r < end; ++r) {
            const long index = (long)r * columns + c;
            const float16 g = vload16(0, dy + dy_offset + index);
            dw16 += g * (vload16(0, x + x_offset + index) - mean[mean_offset + r]) * rstd[rstd_offset + r];
            db16 += g;
        }
        vstore16(dw16, 0, partial + (long)block * columns + c);
        vstore16(db16, 0, partial + (long)(blocks + block) * columns + c);
        return;
    }
    for (int e = c; e < columns; ++e) {
        float2 sums = (float2)(0.0f);
        for (int r = first; r < end; ++r) {
            const long index = (long)r * columns + e;
            const float g = dy[dy_offset + index];
            sums += (float2)(g * (x[x_offset + index] - mean[mean_offset + r]) * rstd[rstd_offset + r], g);
        }
        partial[(long)block * columns + e] = sums.x;
        partial[(long)(blocks + block) * columns + e] = sums.y;
    }
#else
    const int c = get_global_id(0);
    __local float2 scratch[COLUMN_LANES * COLUMN_GROUP];
    const int block = get_group_id(1), lane = get_local_id(1), lanes = COLUMN_LANES;
    const int first = block * rows_per_block;
    const int end = min(rows, first + rows_per_block);
    float2 sums = (float2)(0.0f);  // (sum dy * xhat, sum dy)
    if (c < columns && block < blocks) {
        for (int r = first + lane; r < end; r += lanes) {
            const long index = (long)r * columns + c;
            const float g = dy[dy_offset + index];
            sums += (float2)(g * (x[x_offset + index] - mean[mean_offset + r]) * rstd[rstd_offset + r], g);
        }
    }
    // Tree over the lanes of each column (lane l of column c owns scratch[l * COLUMN_GROUP + c]);
    // idle columns of the last block take part in the barriers.
    sums = tree_sum(scratch + get_local_id(0), sums, lane, COLUMN_LANES, COLUMN_GROUP);
    if (lane != 0) return;
    if (c < columns && block < blocks) {
        partial[(long)block * columns + c] = sums.x;
        partial[(long)(blocks + block) * columns + c] = sums.y;
    }
#endif
}

// dw[c] += sum over blocks of partial[0][.][c], db[c] += the same of partial[1]. Global (C), both variants.
__kernel void layernorm_backward_params_reduce(__global float *dw, const long dw_offset,
                                               __global float *db, const long db_offset,
                                               __global const float *partial, const int blocks,
                                               const int columns) {
    const int c = get_global_id(0);
    if (c >= columns) return;
    float2 sums = (float2)(0.0f);
    for (int block = 0; block < blocks; ++block) {
        sums += (float2)(partial[(long)block * columns + c], partial[(long)(blocks + block) * columns + c]);
    }
    dw[dw_offset + c] += sums.x;
    db[db_offset + c] += sums.y;
}
