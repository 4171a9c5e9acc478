// batchnorm.cl: BatchNorm1d over the batch dimension of x (R, C), exactly as torch.nn.BatchNorm1d
// (SPEC A.3: the MoCo heads, eps 1e-5, momentum 0.1; the last BN of each head has no affine).
//
//   training:  mean[c] = sum_r x[r,c] / R,   var[c] = sum_r (x[r,c] - mean[c])^2 / R   (biased)
//              running_mean = (1 - momentum) * running_mean + momentum * mean
//              running_var  = (1 - momentum) * running_var  + momentum * var * R / (R - 1)  (unbiased)
//   eval:      mean = running_mean, var = running_var; no update
//   both:      rstd = 1 / sqrt(var + eps),   y = (x - mean) * rstd * gamma + beta
//              saved_mean = mean, saved_rstd = rstd
//   backward (training mode): xhat = (x - mean) * rstd
//              dx = (gamma * rstd / R) * (R * dy - sum_r dy - xhat * sum_r dy * xhat)   (overwritten)
//              dgamma += sum_r dy * xhat,   dbeta += sum_r dy                            (accumulated)
//
// Layouts: x, y, dy, dx dense (R, C) row-major; every other buffer (C). Buffers are addressed as
// (base, offset in elements). Without affine (has_weight / has_bias 0) gamma = 1 and beta = 0, and
// the launcher passes some other valid buffer in their place (a null cl_mem is not portable).
// Preconditions: R >= 2 in training mode (the launcher throws, as PyTorch does), R * C < 2^31.
//
// Variance: as in layernorm.cl, the column is centred on the mean of x - x[0,c] (exact
// differences), then the exact second pass sum (x - mean)^2; no E[x^2] - E[x]^2.
//
// Variants (CPU_CLASS, from the device class; tests build both on PoCL):
//   CPU_CLASS=1  one work-item per 16 adjacent columns (a cache line) as one float16, looping
//                over the rows, no barriers (the last work-item's partial vector is gathered and
//                scattered lane by lane). Each column's sums run over the rows in order, as with
//                one column per work-item, so the bits are those of that (slower) form.
//   CPU_CLASS=0  one work-group per COLUMN_GROUP columns, COLUMN_LANES work-items per column
//                splitting the rows, with a local-memory tree reduction over the lanes
//                (tree_sum, common.cl).
// Tunables (GPU variant only; powers of two): COLUMN_GROUP, COLUMN_LANES.
// Host reference: Sources/Tensors/HostBackend+BatchNorm.swift (BatchNormReference).

#ifndef COLUMN_GROUP
#define COLUMN_GROUP 32
#endif
#ifndef COLUMN_LANES
#define COLUMN_LANES 8
#endif

#if CPU_CLASS
// count (1..16) adjacent floats from p as a float16 (zeros past count), and back.
inline float16 load_columns(__global const float *p, const int count) {
    if (count == 16) return vload16(0, p);
    float values[16] = {0.0f};
    for (int e = 0; e < count; ++e) values[e] = p[e];
    return vload16(0, values);
}

inline void store_columns(const float16 v, __global float *p, const int count) {
    if (count == 16) { vstore16(v, 0, p); return; }
    float values[16];
    vstore16(v, 0, values);
    for (int e = 0; e < count; ++e) p[e] = values[e];
}
#else
#define LANES COLUMN_LANES
#define LANE ((int)get_local_id(1))

// The sum of `value` over the LANES work-items of one column; every one of them gets it. The
// trailing barrier lets the caller reuse `scratch` straight away.
float2 column_sum(const float2 value, __local float2 *scratch) {
    // Lane l of column c owns scratch[l * COLUMN_GROUP + c] (tree_sum, common.cl).
    return tree_sum(scratch + get_local_id(0), value, LANE, COLUMN_LANES, COLUMN_GROUP);
}
#endif

// CPU: global (ceil(C / 16)). GPU: global (roundup(C, COLUMN_GROUP), COLUMN_LANES), local
// (COLUMN_GROUP, COLUMN_LANES).
__kernel void batchnorm_forward(__global float *y, const long y_offset,
                                __global float *saved_mean, const long saved_mean_offset,
                                __global float *saved_rstd, const long saved_rstd_offset,
                                __global const float *x, const long x_offset,
                                __global const float *w, const long w_offset, const int has_weight,
                                __global const float *b, const long b_offset, const int has_bias,
                                __global float *running_mean, const long running_mean_offset,
                                __global float *running_var, const long running_var_offset,
                                const int rows, const int columns, const float momentum, const float epsilon,
                                const int training) {
#if CPU_CLASS
    const int c = get_global_id(0) * 16;
    if (c >= columns) return;
    const int count = min(16, columns - c);
    __global const float *xc = x + x_offset + c;  // element (r, c + e) at xc[r * columns + e]
    __global float *yc = y + y_offset + c;
    float16 shift = (float16)(0.0f), shifted_mean, s;
    if (training) {
        shift = load_columns(xc, count);
        float16 sum = (float16)(0.0f);
        for (int r = 0; r < rows; ++r) sum += load_columns(xc + (long)r * columns, count) - shift;
        shifted_mean = sum / rows;
        float16 squares = (float16)(0.0f);
        for (int r = 0; r < rows; ++r) {
            const float16 d = (load_columns(xc + (long)r * columns, count) - shift) - shifted_mean;
            squares = fma(d, d, squares);
        }
        const float16 variance = squares / rows;
        s = 1.0f / sqrt(variance + epsilon);
        const float16 unbiased = variance * rows / (rows - 1);
        __global float *rm = running_mean + running_mean_offset + c, *rv = running_var + running_var_offset + c;
        store_columns((1.0f - momentum) * load_columns(rm, count) + momentum * (shift + shifted_mean), rm, count);
        store_columns((1.0f - momentum) * load_columns(rv, count) + momentum * unbiased, rv, count);
    } else {
        shifted_mean = load_columns(running_mean + running_mean_offset + c, count);
        s = 1.0f / sqrt(load_columns(running_var + running_var_offset + c, count) + epsilon);
    }
    store_columns(shift + shifted_mean, saved_mean + saved_mean_offset + c, count);
    store_columns(s, saved_rstd + saved_rstd_offset + c, count);
    const float16 gamma = has_weight ? load_columns(w + w_offset + c, count) : (float16)(1.0f);
    const float16 beta = has_bias ? load_columns(b + b_offset + c, count) : (float16)(0.0f);
    for (int r = 0; r < rows; ++r) {
        const long index = (long)r * columns;
        store_columns(fma(((load_columns(xc + index, count) - shift) - shifted_mean) * s, gamma, beta), yc + index,
                      count);
    }
#else
    __local float2 scratch[COLUMN_LANES * COLUMN_GROUP];
    const int c = get_global_id(0);
    // Columns past C in the last GPU work-group still take part in the barriers.
    const bool active = c < columns;
    __global const float *xc = x + x_offset + c;  // element (r, c) at xc[r * columns]
    __global float *yc = y + y_offset + c;

    // The reductions run in both modes (on zeros in eval mode): PoCL 3.1 hung on barriers inside
    // `if (training)`, uniform as that branch is. In eval mode shift = 0 and shifted_mean is the
    // running mean, so (x - shift) - shifted_mean = x - mean either way.
    const bool batch_statistics = training && active;
    const float shift = batch_statistics ? xc[0] : 0.0f;
    float sum = 0.0f;
    if (batch_statistics) for (int r = LANE; r < rows; r += LANES) sum += xc[(long)r * columns] - shift;
    float shifted_mean = column_sum((float2)(sum, 0.0f), scratch).x / rows;
    float squares = 0.0f;
    if (batch_statistics) {
        for (int r = LANE; r < rows; r += LANES) {
            const float d = (xc[(long)r * columns] - shift) - shifted_mean;
            squares = fma(d, d, squares);
        }
    }
    const float variance = column_sum((float2)(squares, 0.0f), scratch).x / rows;
    float s = 0.0f;
    if (training) {
        s = 1.0f / sqrt(variance + epsilon);
        if (active && LANE == 0) {
            const float m = shift + shifted_mean;
            const float unbiased = variance * rows / (rows - 1);
            running_mean[running_mean_offset + c] = (1.0f - momentum) * running_mean[running_mean_offset + c] + momentum * m;
            running_var[running_var_offset + c] = (1.0f - momentum) * running_var[running_var_offset + c] + momentum * unbiased;
        }
    } else if (active) {
        shifted_mean = running_mean[running_mean_offset + c];
        s = 1.0f / sqrt(running_var[running_var_offset + c] + epsilon);
    }
    if (!active) return;
    if (LANE == 0) {
        saved_mean[saved_mean_offset + c] = shift + shifted_mean;
        saved_rstd[saved_rstd_offset + c] = s;
    }
    const float gamma = has_weight ? w[w_offset + c] : 1.0f;
    const float beta = has_bias ? b[b_offset + c] : 0.0f;
    for (int r = LANE; r < rows; r += LANES) {
        const long index = (long)r * columns;
        yc[index] = fma(((xc[index] - shift) - shifted_mean) * s, gamma, beta);
    }
#endif
}

// Launch shapes as batchnorm_forward. dw / db are updated only when has_dw / has_db.
__kernel void batchnorm_backward(__global float *dx, const long dx_offset,
                                 __global float *dw, const long dw_offset, const int has_dw,
                                 __global float *db, const long db_offset, const int has_db,
                                 __global const float *dy, const long dy_offset,
                                 __global const float *x, const long x_offset,
                                 __global const float *saved_mean, const long saved_mean_offset,
                                 __global const float *saved_rstd, const long saved_rstd_offset,
                                 __global const float *w, const long w_offset, const int has_weight,
                                 const int rows, const int columns) {
#if CPU_CLASS
    const int c = get_global_id(0) * 16;
    if (c >= columns) return;
    const int count = min(16, columns - c);
    __global const float *xc = x + x_offset + c;
    __global const float *dyc = dy + dy_offset + c;
    __global float *dxc = dx + dx_offset + c;
    const float16 m = load_columns(saved_mean + saved_mean_offset + c, count);
    const float16 s = load_columns(saved_rstd + saved_rstd_offset + c, count);
    float16 sum_dy = (float16)(0.0f), sum_dy_xhat = (float16)(0.0f);
    for (int r = 0; r < rows; ++r) {
        const long index = (long)r * columns;
        const float16 g = load_columns(dyc + index, count);
        sum_dy += g;
        sum_dy_xhat += g * (load_columns(xc + index, count) - m) * s;
    }
    if (has_dw) store_columns(load_columns(dw + dw_offset + c, count) + sum_dy_xhat, dw + dw_offset + c, count);
    if (has_db) store_columns(load_columns(db + db_offset + c, count) + sum_dy, db + db_offset + c, count);
    const float16 gamma = has_weight ? load_columns(w + w_offset + c, count) : (float16)(1.0f);
    const float16 k = gamma * s / rows;
    for (int r = 0; r < rows; ++r) {
        const long index = (long)r * columns;
        store_columns(k * (rows * load_columns(dyc + index, count) - sum_dy - (load_columns(xc + index, count) - m) * s
                           * sum_dy_xhat), dxc + index, count);
    }
#else
    __local float2 scratch[COLUMN_LANES * COLUMN_GROUP];
    const int c = get_global_id(0);
    const bool active = c < columns;
    __global const float *xc = x + x_offset + c;
    __global const float *dyc = dy + dy_offset + c;
    __global float *dxc = dx + dx_offset + c;
    const float m = active ? saved_mean[saved_mean_offset + c] : 0.0f;
    const float s = active ? saved_rstd[saved_rstd_offset + c] : 0.0f;

    float2 sums = (float2)(0.0f);  // (sum dy, sum dy * xhat)
    if (active) {
        for (int r = LANE; r < rows; r += LANES) {
            const long index = (long)r * columns;
            const float g = dyc[index];
            sums += (float2)(g, g * (xc[index] - m) * s);
        }
    }
    sums = column_sum(sums, scratch);
    if (!active) return;
    if (LANE == 0) {
        if (has_dw) dw[dw_offset + c] += sums.y;
        if (has_db) db[db_offset + c] += sums.x;
    }
    const float gamma = has_weight ? w[w_offset + c] : 1.0f;
    const float k = gamma * s / rows;
    for (int r = LANE; r < rows; r += LANES) {
        const long index = (long)r * columns;
        dxc[index] = k * (rows * dyc[index] - sums.x - (xc[index] - m) * s * sums.y);
    }
#endif
}
