// softmax.cl: fused softmax cross-entropy with the loss scale (SPEC A.4: MoCo's ctr is
// 2*tau * CE(q.k^T / tau), so the launcher passes scale = 2*tau / R).
//
//   lse_r       = log sum_j exp(z[r, j])
//   loss[r]     = scale * (lse_r - z[r, label_r])
//   dz[r, j]    = scale * (exp(z[r, j] - lse_r) - [j == label_r])
//
// logits (R, M) row-major, labels (R) int32 (arange(R) + offset in the distributed case).
// Out-of-range labels produce a NaN loss (the host validates them before the launch).
// Variants (CPU_CLASS): one work-item per row, three passes over it as float8 vectors and a
// scalar tail, one exp per logit (P = exp(z - max) / sum, kept in dz between passes), no
// barriers (PoCL: 33-37 ms for 99840x65 rows with scalar passes, against 124-132 ms with
// work-group reductions); GPU: one work-group of GROUP work-items per row with local-memory
// reductions (tree_max, tree_sum: common.cl).
// Host reference: Sources/Tensors/HostBackend+Softmax.swift.

#ifndef GROUP
#define GROUP 128
#endif

#if CPU_CLASS
// Global (R).
__kernel void softmax_cross_entropy(__global float *loss, const long loss_offset, __global float *dz,
                                    const long dz_offset, __global const float *z, const long z_offset,
                                    __global const int *labels, const long labels_offset,
                                    const int rows, const int columns, const float scale) {
    const int r = get_global_id(0);
    if (r >= rows) return;
    __global const float *row = z + z_offset + (long)r * columns;
    __global float *grad = dz + dz_offset + (long)r * columns;
    // float8 vectors over the row (one vector exp per 8 logits) and a scalar tail.
    const int vectors = columns / 8 * 8;
    float8 maximum8 = (float8)(-INFINITY);
    for (int j = 0; j < vectors; j += 8) maximum8 = fmax(maximum8, vload8(0, row + j));
    float maximum = max8(maximum8);
    for (int j = vectors; j < columns; ++j) maximum = fmax(maximum, row[j]);
    // exp(z - max) is computed once, kept in dz, and scaled by 1/sum there: P = exp(z - max) / sum.
    float8 sum8v = (float8)(0.0f);
    for (int j = 0; j < vectors; j += 8) {
        const float8 e = exp(vload8(0, row + j) - maximum);
        sum8v += e;
        vstore8(e, 0, grad + j);
    }
    float sum = sum8(sum8v);
    for (int j = vectors; j < columns; ++j) {
        const float e = exp(row[j] - maximum);
        sum += e;
        grad[j] = e;
    }
    const float lse = maximum + log(sum);
    const int label = labels[labels_offset + r];
    const float factor = scale / sum;
    for (int j = 0; j < vectors; j += 8) vstore8(vload8(0, grad + j) * factor, 0, grad + j);
    for (int j = vectors; j < columns; ++j) grad[j] *= factor;
    const bool labelled = label >= 0 && label < columns;
    if (labelled) grad[label] = scale * (exp(row[label] - lse) - 1.0f);
    loss[loss_offset + r] = labelled ? scale * (lse - row[label]) : NAN;
}
#else
// Global (GROUP, R), local (GROUP, 1).
__kernel void softmax_cross_entropy(__global float *loss, const long loss_offset, __global float *dz,
                                    const long dz_offset, __global const float *z, const long z_offset,
                                    __global const int *labels, const long labels_offset,
                                    const int rows, const int columns, const float scale) {
    __local float2 scratch[GROUP];  // the reductions (common.cl) run on .x
    const int lane = get_local_id(0), r = get_group_id(1);
    __global const float *row = z + z_offset + (long)r * columns;
    __global float *grad = dz + dz_offset + (long)r * columns;

    float maximum = -INFINITY;
    for (int j = lane; j < columns; j += GROUP) maximum = fmax(maximum, row[j]);
    maximum = tree_max(scratch, (float2)(maximum, 0.0f), lane, GROUP, 1).x;

    float sum = 0.0f;
    for (int j = lane; j < columns; j += GROUP) sum += exp(row[j] - maximum);
    const float lse = maximum + log(tree_sum(scratch, (float2)(sum, 0.0f), lane, GROUP, 1).x);
    const int label = labels[labels_offset + r];
    for (int j = lane; j < columns; j += GROUP) grad[j] = scale * (exp(row[j] - lse) - (j == label ? 1.0f : 0.0f));
    if (lane == 0) loss[loss_offset + r] = (label >= 0 && label < columns) ? scale * (lse - row[label]) : NAN;
}
#endif

// Soft-target cross-entropy (mixup / cutmix / label smoothing, timm's SoftTargetCrossEntropy):
//   loss[r] = scale * sum_j t[r, j] * (lse_r - z[r, j])
//   dz[r, j] = scale * (T_r * softmax(z)[r, j] - t[r, j]),  T_r = sum_j t[r, j]  (1 for a distribution)
// targets (R, M) float. One work-item per row (the class count is small).  Global (R).
__kernel void soft_target_cross_entropy(__global float *loss, const long loss_offset, __global float *dz,
                                        const long dz_offset, __global const float *z, const long z_offset,
                                        __global const float *t, const long t_offset, const int rows,
                                        const int columns, const float scale) {
    const int r = get_global_id(0);
    if (r >= rows) return;
    __global const float *row = z + z_offset + (long)r * columns;
    __global const float *target = t + t_offset + (long)r * columns;
    __global float *grad = dz + dz_offset + (long)r * columns;
    float maximum = -INFINITY;
    for (int j = 0; j < columns; ++j) maximum = fmax(maximum, row[j]);
    float sum = 0.0f;
    for (int j = 0; j < columns; ++j) sum += exp(row[j] - maximum);
    const float lse = maximum + log(sum);
    float total = 0.0f, value = 0.0f;
    for (int j = 0; j < columns; ++j) {
        total += target[j];
        value += target[j] * (lse - row[j]);
    }
    for (int j = 0; j < columns; ++j) grad[j] = scale * (total * exp(row[j] - lse) - target[j]);
    loss[loss_offset + r] = scale * value;
}
