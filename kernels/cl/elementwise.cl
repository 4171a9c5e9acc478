// elementwise.cl: the point-wise and broadcast ops of a ViT training step.
//
//   gelu_forward:   y = x * Phi(x),  Phi(x) = (1 + erf(x / sqrt 2)) / 2     (exact GELU, nn.GELU();
//                   8 elements per work-item)
//   gelu_backward:  dx = dy * (Phi(x) + x * phi(x)),  phi(x) = exp(-x^2/2) / sqrt(2 pi)
//   relu / relu_backward (mask from the output), add (residual), scale
//   add_bias:       x[r, c] += bias[c]                         global (C, R)
//   scale_rows:     y[r, c] = factor[r] * x[r, c]  (drop path)  global (C, R)
//   sum_rows_partial / sum_rows_finish: out[c] += sum_r x[r, c] (bias gradients), in two passes
//
// Buffers are (base, offset in elements); counts fit in int. Host reference:
// Sources/Tensors/HostBackend+Elementwise.swift.
//
// Tunables: CPU_CLASS (1 on CPU-class devices). PoCL's erf costs ~10 ns per element and does not
// vectorize, while exp costs ~0.5 ns, so CPU-class devices evaluate Phi through erfc's Chebyshev
// fit (Numerical Recipes' erfcc, fractional error < 1.2e-7 everywhere, i.e. ~2 ulp), which needs
// one exp; GPUs call the built-in erf.

#ifndef SUM_ROWS_CHUNK
#define SUM_ROWS_CHUNK 256
#endif

#define INV_SQRT2 0.70710678118654752f
#define INV_SQRT_2PI 0.39894228040143268f

// GELU runs on float8 vectors: one work-item per 8 elements (a partial last vector is gathered
// and scattered lane by lane), so PoCL emits AVX code instead of scalar erf/exp calls.
#if CPU_CLASS
// erfc(z) for z >= 0 with relative error < 1.2e-7.
inline float8 erfc_nonnegative(const float8 z) {
    const float8 t = 1.0f / (1.0f + 0.5f * z);
    const float8 p = -1.26551223f + t * (1.00002368f + t * (0.37409196f + t * (0.09678418f +
                     t * (-0.18628806f + t * (0.27886807f + t * (-1.13520398f + t * (1.48851587f +
                     t * (-0.82215223f + t * 0.17087277f))))))));
    return t * exp(-z * z + p);
}
// Phi(x) = erfc(-x/sqrt2)/2: for x < 0 directly (no cancellation in the tail), else 1 - Phi(-x).
inline float8 cumulative_normal(const float8 x) {
    const float8 tail = 0.5f * erfc_nonnegative(fabs(x) * INV_SQRT2);
    return select(1.0f - tail, tail, isless(x, 0.0f));
}
#else
inline float8 cumulative_normal(const float8 x) { return 0.5f * (1.0f + erf(x * INV_SQRT2)); }
#endif

inline float8 load8(__global const float *p, const int count) {
    if (count >= 8) return vload8(0, p);
    float values[8] = {0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f};
    for (int e = 0; e < count; ++e) values[e] = p[e];
    return vload8(0, values);
}

inline void store8(const float8 v, __global float *p, const int count) {
    if (count >= 8) { vstore8(v, 0, p); return; }
    float values[8];
    vstore8(v, 0, values);
    for (int e = 0; e < count; ++e) p[e] = values[e];
}

// Global (ceil(n / 8)).
__kernel void gelu_forward(__global float *y, const long y_offset, __global const float *x, const long x_offset,
                           const int n) {
    const int i = get_global_id(0) * 8;
    if (i >= n) return;
    const float8 v = load8(x + x_offset + i, n - i);
    store8(v * cumulative_normal(v), y + y_offset + i, n - i);
}

// Global (ceil(n / 8)).
__kernel void gelu_backward(__global float *dx, const long dx_offset, __global const float *dy,
                            const long dy_offset, __global const float *x, const long x_offset, const int n) {
    const int i = get_global_id(0) * 8;
    if (i >= n) return;
    const float8 v = load8(x + x_offset + i, n - i);
    const float8 derivative = cumulative_normal(v) + v * INV_SQRT_2PI * exp(-0.5f * v * v);
    store8(load8(dy + dy_offset + i, n - i) * derivative, dx + dx_offset + i, n - i);
}

__kernel void relu(__global float *y, const long y_offset, __global const float *x, const long x_offset,
                   const int n) {
    const int i = get_global_id(0);
    if (i < n) y[y_offset + i] = fmax(x[x_offset + i], 0.0f);
}

__kernel void relu_backward(__global float *dx, const long dx_offset, __global const float *dy,
                            const long dy_offset, __global const float *y, const long y_offset, const int n) {
    const int i = get_global_id(0);
    if (i < n) dx[dx_offset + i] = y[y_offset + i] > 0.0f ? dy[dy_offset + i] : 0.0f;
}

__kernel void add(__global float *z, const long z_offset, __global const float *x, const long x_offset,
                  __global const float *y, const long y_offset, const int n) {
    const int i = get_global_id(0);
    if (i < n) z[z_offset + i] = x[x_offset + i] + y[y_offset + i];
}

__kernel void scale(__global float *x, const long x_offset, const int n, const float factor) {
    const int i = get_global_id(0);
    if (i < n) x[x_offset + i] *= factor;
}

// Drop path (stochastic depth): y[r, i] = factor[r] * x[r, i] for x (R, C); y may be x.
// Global (C, R).
__kernel void scale_rows(__global float *y, const long y_offset, __global const float *x, const long x_offset,
                         __global const float *factor, const long factor_offset, const int rows, const int columns) {
    const int c = get_global_id(0), r = get_global_id(1);
    if (c < columns && r < rows) {
        const long i = (long)r * columns + c;
        y[y_offset + i] = factor[factor_offset + r] * x[x_offset + i];
    }
}

__kernel void add_bias(__global float *x, const long x_offset, __global const float *bias, const long bias_offset,
                       const int rows, const int columns) {
    const int c = get_global_id(0), r = get_global_id(1);
    if (c < columns && r < rows) x[x_offset + (long)r * columns + c] += bias[bias_offset + c];
}

// Pass 1: partial[chunk, c] = sum of SUM_ROWS_CHUNK rows.  Global (C, chunks).
__kernel void sum_rows_partial(__global float *partial, __global const float *x, const long x_offset,
                               const int rows, const int columns) {
    const int c = get_global_id(0), chunk = get_global_id(1);
    if (c >= columns) return;
    const int begin = chunk * SUM_ROWS_CHUNK, end = min(rows, begin + SUM_ROWS_CHUNK);
    float sum = 0.0f;
    for (int r = begin; r < end; ++r) sum += x[x_offset + (long)r * columns + c];
    partial[(long)chunk * columns + c] = sum;
}

// Pass 2: out[c] += sum over chunks.  Global (C).
__kernel void sum_rows_finish(__global float *out, const long out_offset, __global const float *partial,
                              const int chunks, const int columns) {
    const int c = get_global_id(0);
    if (c >= columns) return;
    float sum = 0.0f;
    for (int k = 0; k < chunks; ++k) sum += partial[(long)k * columns + c];
    out[out_offset + c] += sum;
}
