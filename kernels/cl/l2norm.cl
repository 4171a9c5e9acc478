// l2norm.cl: row-wise L2 normalization, F.normalize(x, dim=1) with eps 1e-12 (SPEC A.4).
//
//   norm_r = |x_r|,  y_r = x_r / max(norm_r, eps)
//   dx_r   = (dy_r - y_r * <y_r, dy_r>) / norm_r      (norm_r > eps)
//          = dy_r / eps                                 (otherwise: y = x / eps is linear)
//
// (R, C) row-major; one work-item per row (R is the batch, C the 256-d embedding: a per-row loop
// is cheap and needs no barriers). Host reference: Sources/Tensors/HostBackend+L2Norm.swift.

#define NORMALIZE_EPS 1e-12f

__kernel void l2norm_forward(__global float *y, const long y_offset, __global float *norms, const long norms_offset,
                             __global const float *x, const long x_offset, const int rows, const int columns) {
    const int r = get_global_id(0);
    if (r >= rows) return;
    __global const float *in = x + x_offset + (long)r * columns;
    __global float *out = y + y_offset + (long)r * columns;
    float sum = 0.0f;
    for (int j = 0; j < columns; ++j) sum += in[j] * in[j];
    const float norm = sqrt(sum);
    const float denominator = fmax(norm, NORMALIZE_EPS);
    for (int j = 0; j < columns; ++j) out[j] = in[j] / denominator;
    norms[norms_offset + r] = norm;
}

__kernel void l2norm_backward(__global float *dx, const long dx_offset, __global const float *dy,
                              const long dy_offset, __global const float *y, const long y_offset,
                              __global const float *norms, const long norms_offset,
                              const int rows, const int columns) {
    const int r = get_global_id(0);
    if (r >= rows) return;
    __global const float *grad = dy + dy_offset + (long)r * columns;
    __global const float *out = y + y_offset + (long)r * columns;
    __global float *result = dx + dx_offset + (long)r * columns;
    const float norm = norms[norms_offset + r];
    if (!(norm > NORMALIZE_EPS)) {
        for (int j = 0; j < columns; ++j) result[j] = grad[j] / NORMALIZE_EPS;
        return;
    }
    float dot = 0.0f;
    for (int j = 0; j < columns; ++j) dot += out[j] * grad[j];
    for (int j = 0; j < columns; ++j) result[j] = (grad[j] - out[j] * dot) / norm;
}
