// reduce.cl: per-segment sums of squares over a flat buffer (gradient norms for the monitor and
// for LARS).
//
//   out[s] = sum_{i in segment s} x[i]^2
//
// The host splits every segment into chunks of at most CHUNK elements (a chunk table built once
// per segment table and cached on the device):
//   chunk_segment[c] (int), chunk_begin[c] (long, element index), chunk_count[c] (int)
//   segment_first_chunk[s], segment_chunks[s] (int)
// Pass 1 sums each chunk (one work-item each: no barriers, which PoCL executes slowly); pass 2
// adds a segment's chunks in order, so the result does not depend on scheduling.
// Host reference: Sources/Tensors/HostBackend+Reduce.swift.

__kernel void squared_norms_partial(__global float *partial, __global const float *x, const long x_offset,
                                    __global const long *chunk_begin, __global const int *chunk_count,
                                    const int chunks) {
    const int c = get_global_id(0);
    if (c >= chunks) return;
    __global const float *p = x + x_offset + chunk_begin[c];
    float sum = 0.0f;
    for (int i = 0; i < chunk_count[c]; ++i) sum += p[i] * p[i];
    partial[c] = sum;
}

__kernel void squared_norms_finish(__global float *out, const long out_offset, __global const float *partial,
                                   __global const int *segment_first_chunk, __global const int *segment_chunks,
                                   const int segments) {
    const int s = get_global_id(0);
    if (s >= segments) return;
    float sum = 0.0f;
    for (int c = 0; c < segment_chunks[s]; ++c) sum += partial[segment_first_chunk[s] + c];
    out[out_offset + s] = sum;
}
