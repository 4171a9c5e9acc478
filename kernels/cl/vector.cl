// vector.cl: element-wise kernels on flat float32 buffers.
//
//   fill:  x[i] = value                 for i in [0, n)
//   axpy:  y[i] = y[i] + alpha * x[i]   for i in [0, n)
//
// Buffers are addressed as (base, offset in elements) so that tensor views need no sub-buffers
// (whose origins must be aligned to CL_DEVICE_MEM_BASE_ADDR_ALIGN). One work-item per element;
// the global size may be rounded up past n, so every kernel guards its index.
// Host reference: Sources/Tensors/HostBackend.swift (fill, axpy).

__kernel void fill(__global float *x, const long x_offset, const int n, const float value) {
    const int i = get_global_id(0);
    if (i < n) x[x_offset + i] = value;
}

__kernel void axpy(__global float *y, const long y_offset,
                   __global const float *x, const long x_offset,
                   const int n, const float alpha) {
    const int i = get_global_id(0);
    if (i < n) y[y_offset + i] += alpha * x[x_offset + i];
}

// fill_matrix: x[offset + b*stride + r*ld + c] = value for a rows x columns region of each of
// `batch` matrices (a strided C that must be cleared before a beta = 0 GEMM, for instance).
// Global size (columns, rows, batch).
__kernel void fill_matrix(__global float *x, const long x_offset, const int ld, const long stride,
                          const int rows, const int columns, const float value) {
    const int c = get_global_id(0), r = get_global_id(1), b = get_global_id(2);
    if (c < columns && r < rows) x[x_offset + b * stride + (long)r * ld + c] = value;
}
