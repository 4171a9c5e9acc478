// elementwise.cl: the point-wise and broadcast ops of a ViT training step.
//
//   gelu_forward:   y = x * Phi(x),  Phi(x) = (1 + erf(x / sqrt 2)) / 2     (exact GELU, nn.GELU(),
//                   on float8 vectors)
//   gelu_backward:  dx = dy * (Phi(x) + x * phi(x)),  phi(x) = exp(-x^2/2) / sqrt(2 pi)
//   relu / relu_backward (mask from the output), add (residual), scale
//   add_bias:       x[r, c] += bias[c]
//   scale_rows:     y[r, c] = factor[r] * x[r, c]  (drop path)
//   sum_rows_partial / sum_rows_finish: out[c] += sum_r x[r, c] (bias gradients), in two passes
//
// Buffers are (base, offset in elements); counts fit in int. Host reference:
// Sources/Tensors/HostBackend+Elementwise.swift.
//
// Work per work-item: GPUs run one element (one float8 for GELU; add_bias and scale_rows over a
// (C, R) grid) per work-item. CPU-class devices run a SPAN of consecutive elements per work-item
// (for add_bias and scale_rows, rows_per_item whole rows, an argument from the launcher), walked as
// float8 vectors plus a scalar tail: PoCL's cost per work-group then stops mattering (one
// work-item per element ran at 4-6 GB/s of memcpy's 22).
//
// Tunables: CPU_CLASS (1 on CPU-class devices). PoCL's erf costs ~10 ns per element and does not
// vectorize, while exp costs ~0.5 ns, so CPU-class devices evaluate Phi through erfc's Chebyshev
// fit (Numerical Recipes' erfcc, fractional error < 1.2e-7 everywhere, i.e. ~2 ulp), which needs
// one exp; GPUs call the built-in erf.

#ifndef SUM_ROWS_CHUNK
#define SUM_ROWS_CHUNK 256
#endif

// Elements per work-item of the point-wise kernels: CLBackend.pointwiseSpan, the launcher's -DSPAN.
#ifndef SPAN
#error "elementwise.cl needs -DSPAN=<elements per work-item>"
#endif

// The work-item's elements [begin, end) of n, SPAN per work-item.
#define SPAN_RANGE(n) \
    const long begin = (long)get_global_id(0) * SPAN, end = min((long)(n), begin + SPAN)

// `body8(i)` on the float8 at i while 8 fit, then `body1(i)` on single elements.
#define SPAN_LOOP(body8, body1) { \
    long i = begin; \
    for (; i + 8 <= end; i += 8) { body8; } \
    for (; i < end; ++i) { body1; } }

#define INV_SQRT2 0.70710678118654752f
#define INV_SQRT_2PI 0.39894228040143268f

// GELU runs on float8 vectors (a partial last vector is gathered and scattered lane by lane), so
// PoCL emits AVX code instead of scalar erf/exp calls: one per work-item on GPUs, a span of them
// on CPU-class devices.
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

// Elements per work-item of GELU: a span, and at least one float8.
#define GELU_SPAN (SPAN >= 8 ? SPAN : 8)

// Global (ceil(n / GELU_SPAN)).
__kernel void gelu_forward(__global float *y, const long y_offset, __global const float *x, const long x_offset,
                           const int n) {
    const long first = (long)get_global_id(0) * GELU_SPAN, last = min((long)n, first + GELU_SPAN);
    for (long i = first; i < last; i += 8) {
        const float8 v = load8(x + x_offset + i, (int)(last - i));
        store8(v * cumulative_normal(v), y + y_offset + i, (int)(last - i));
    }
}

// Global (ceil(n / GELU_SPAN)).
__kernel void gelu_backward(__global float *dx, const long dx_offset, __global const float *dy,
                            const long dy_offset, __global const float *x, const long x_offset, const int n) {
    const long first = (long)get_global_id(0) * GELU_SPAN, last = min((long)n, first + GELU_SPAN);
    for (long i = first; i < last; i += 8) {
        const float8 v = load8(x + x_offset + i, (int)(last - i));
        const float8 derivative = cumulative_normal(v) + v * INV_SQRT_2PI * exp(-0.5f * v * v);
        store8(load8(dy + dy_offset + i, (int)(last - i)) * derivative, dx + dx_offset + i, (int)(last - i));
    }
}

// Global (ceil(n / SPAN)) for relu, relu_backward, add and scale.
__kernel void relu(__global float *y, const long y_offset, __global const float *x, const long x_offset,
                   const int n) {
    SPAN_RANGE(n);
    x += x_offset;
    y += y_offset;
    SPAN_LOOP(vstore8(fmax(vload8(0, x + i), 0.0f), 0, y + i), y[i] = fmax(x[i], 0.0f))
}

__kernel void relu_backward(__global float *dx, const long dx_offset, __global const float *dy,
                            const long dy_offset, __global const float *y, const long y_offset, const int n) {
    SPAN_RANGE(n);
    dx += dx_offset;
    dy += dy_offset;
    y += y_offset;
    SPAN_LOOP(vstore8(select((float8)(0.0f), vload8(0, dy + i), isgreater(vload8(0, y + i), 0.0f)), 0, dx + i),
              dx[i] = y[i] > 0.0f ? dy[i] : 0.0f)
}

__kernel void add(__global float *z, const long z_offset, __global const float *x, const long x_offset,
                  __global const float *y, const long y_offset, const int n) {
    SPAN_RANGE(n);
    z += z_offset;
    x += x_offset;
    y += y_offset;
    SPAN_LOOP(vstore8(vload8(0, x + i) + vload8(0, y + i), 0, z + i), z[i] = x[i] + y[i])
}

__kernel void scale(__global float *x, const long x_offset, const int n, const float factor) {
    SPAN_RANGE(n);
    x += x_offset;
    SPAN_LOOP(vstore8(vload8(0, x + i) * factor, 0, x + i), x[i] *= factor)
}

// Drop path (stochastic depth): y[r, i] = factor[r] * x[r, i] for x (R, C); y may be x.
// GPUs: global (C, R). CPU-class: global (ceil(R / rows_per_item)), whole rows per work-item.
__kernel void scale_rows(__global float *y, const long y_offset, __global const float *x, const long x_offset,
                         __global const float *factor, const long factor_offset, const int rows, const int columns,
                         const int rows_per_item) {
#if CPU_CLASS
    const int first = get_global_id(0) * rows_per_item, last = min(rows, first + rows_per_item);
    for (int r = first; r < last; ++r) {
        __global const float *in = x + x_offset + (long)r * columns;
        __global float *out = y + y_offset + (long)r * columns;
        const float f = factor[factor_offset + r];
        int c = 0;
        for (; c + 8 <= columns; c += 8) vstore8(f * vload8(0, in + c), 0, out + c);
        for (; c < columns; ++c) out[c] = f * in[c];
    }
#else
    const int c = get_global_id(0), r = get_global_id(1);
    if (c < columns && r < rows) {
        const long i = (long)r * columns + c;
        y[y_offset + i] = factor[factor_offset + r] * x[x_offset + i];
    }
#endif
}

// GPUs: global (C, R). CPU-class: global (ceil(R / rows_per_item)), whole rows per work-item.
__kernel void add_bias(__global float *x, const long x_offset, __global const float *bias, const long bias_offset,
                       const int rows, const int columns, const int rows_per_item) {
#if CPU_CLASS
    const int first = get_global_id(0) * rows_per_item, last = min(rows, first + rows_per_item);
    __global const float *b = bias + bias_offset;
    for (int r = first; r < last; ++r) {
        __global float *line = x + x_offset + (long)r * columns;
        int c = 0;
        for (; c + 8 <= columns; c += 8) vstore8(vload8(0, line + c) + vload8(0, b + c), 0, line + c);
        for (; c < columns; ++c) line[c] += b[c];
    }
#else
    const int c = get_global_id(0), r = get_global_id(1);
    if (c < columns && r < rows) x[x_offset + (long)r * columns + c] += bias[bias_offset + c];
#endif
}

// Pass 1: partial[chunk, c] = sum of SUM_ROWS_CHUNK rows, each column's rows added in order.
// GPUs: global (C, chunks), a column per work-item. CPU-class: global (ceil(C / 16), chunks), 16
// adjacent columns (a cache line) per work-item as one float16 (the same sums, so the same bits).
__kernel void sum_rows_partial(__global float *partial, __global const float *x, const long x_offset,
                               const int rows, const int columns) {
    const int chunk = get_global_id(1);
    const int begin = chunk * SUM_ROWS_CHUNK, end = min(rows, begin + SUM_ROWS_CHUNK);
#if CPU_CLASS
    const int c = get_global_id(0) * 16;
    if (c >= columns) return;
    __global const float *column = x + x_offset + c;
    if (c + 16 <= columns) {
        float16 sum = (float16)(0.0f);
        for (int r = begin; r < end; ++r) sum += vload16(0, column + (long)r * columns);
        vstore16(sum, 0, partial + (long)chunk * columns + c);
        return;
    }
    for (int e = 0; e < columns - c; ++e) {
        float sum = 0.0f;
        for (int r = begin; r < end; ++r) sum += column[(long)r * columns + e];
        partial[(long)chunk * columns + c + e] = sum;
    }
#else
    const int c = get_global_id(0);
    if (c >= columns) return;
    float sum = 0.0f;
    for (int r = begin; r < end; ++r) sum += x[x_offset + (long)r * columns + c];
    partial[(long)chunk * columns + c] = sum;
#endif
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
