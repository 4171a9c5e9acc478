// common.cl: what several kernel families share, written once. KernelSources.source(family:)
// builds every program as `#line 1 "common.cl"`, this file, `#line 1 "<family>.cl"`, the family
// file, so a build log names the file an error is in and its own line number. It holds no
// kernels and is not a family of its own.
//
//   CPU_CLASS          the kernel variant: 1 (CPU-class devices: a work-item per row, per block of
//                      columns or per span of elements, no barriers) unless the launcher passes
//                      -DCPU_CLASS=0 for GPU-class devices (CLBackend.KernelVariant.buildOption,
//                      CLBackend+Attention.swift).
//   floatV, vloadV, vstoreV
//                      float vectors of the family's width VW (a tunable that gemm.cl and
//                      patch_embed.cl each default) and their loads and stores.
//   sum8, max8         the lanes of a float8 added (or maxed) in a fixed tree (CPU-class row loops).
//   tree_sum, tree_max local-memory tree reductions over the work-items that share one row or
//                      column of a work-group (the GPU variants of batchnorm.cl, layernorm.cl,
//                      softmax.cl).

#ifndef CPU_CLASS
#define CPU_CLASS 1
#endif

inline float sum8(const float8 v) {
    const float4 four = v.lo + v.hi;
    const float2 two = four.lo + four.hi;
    return two.x + two.y;
}

inline float max8(const float8 v) {
    const float4 four = fmax(v.lo, v.hi);
    const float2 two = fmax(four.lo, four.hi);
    return fmax(two.x, two.y);
}

#define CAT_(a, b) a##b
#define CAT(a, b) CAT_(a, b)
#define floatV CAT(float, VW)
#define vloadV CAT(vload, VW)
#define vstoreV CAT(vstore, VW)

// The reduction of `value` over `lanes` work-items (a power of two), returned to every one of them.
// Work-item `lane` (0 <= lane < lanes) owns slot scratch[lane * stride]: a work-group reducing
// several columns at once passes scratch + its column and stride = columns per work-group. Each
// step folds slot lane + width into slot lane, width halving from lanes / 2, so the order of the
// operations is fixed and the same on every device. Both work on float2 because the normalization
// kernels reduce two sums at once; a scalar reduction passes (value, 0) and takes .x.
// Barriers: every work-item of the work-group must make the call, with no early return before it
// (PoCL 3.1 crashed on one, uniform as it was, and hung on barriers under a uniform `if`). The
// trailing barrier lets the caller reuse `scratch` straight away.
inline float2 tree_sum(__local float2 *scratch, const float2 value, const int lane, const int lanes,
                       const int stride) {
    scratch[lane * stride] = value;
    barrier(CLK_LOCAL_MEM_FENCE);
    for (int width = lanes / 2; width > 0; width >>= 1) {
        if (lane < width) scratch[lane * stride] += scratch[(lane + width) * stride];
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    const float2 total = scratch[0];
    barrier(CLK_LOCAL_MEM_FENCE);
    return total;
}

// As tree_sum with fmax in place of +.
inline float2 tree_max(__local float2 *scratch, const float2 value, const int lane, const int lanes,
                       const int stride) {
    scratch[lane * stride] = value;
    barrier(CLK_LOCAL_MEM_FENCE);
    for (int width = lanes / 2; width > 0; width >>= 1) {
        if (lane < width) scratch[lane * stride] = fmax(scratch[lane * stride], scratch[(lane + width) * stride]);
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    const float2 total = scratch[0];
    barrier(CLK_LOCAL_MEM_FENCE);
    return total;
}
