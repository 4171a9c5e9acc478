// knn.cl: the weighted kNN classifier of InstDisc (Wu et al. 2018, Sec. 3.4), the kNN monitor of
// MoCo v3: a running top-k of cosine similarities per query over a bank visited in tiles, then
// each query's k neighbours vote for their class with weight exp(s / T).
//
//   knn_topk_reset: values[i] = -inf, indices[i] = -1                    (empty heaps)
//   knn_topk:       for j in 0 ..< M (in order), skipping label[offset + j] < 0:
//                     if s[r, j] > values[r, 0]: replace the root by (s[r, j], offset + j), sift down
//   knn_vote:       total(c) = sum_{slots i with label[indices[r, i]] == c} exp(values[r, i] / T)
//                   predictions[r] = argmax_c total(c) over the classes present in the heap,
//                                    the smallest c among equal totals; -1 for an empty heap
//
// Layouts (row-major, each buffer with its element offset): similarities (R, M) float, the tile
// of bank columns offset ..< offset + M; values (R, k) float and indices (R, k) int, each row a
// binary min-heap on values (slot 0 the smallest kept, children of slot i at 2i + 1 and 2i + 2);
// bank labels (bank) int, negative for unfilled bank slots; predictions (R) int.
//
// Preconditions (checked by the launcher): k > 0, offset + M <= bank <= INT_MAX.
// The heap algorithm is the host's, step for step (Sources/Tensors/HostBackend+KNN.swift), so the
// kept pairs match it exactly, ties included: the root is replaced only by a strictly larger
// value and a sift-down moves to the smaller child, the left one when both are equal.
// Votes are summed per class in slot order, in double where the device has cl_khr_fp64 (as the
// host does), else in float. Labels outside [0, classes) do not vote (the host rejects them).
// Host reference: Sources/Tensors/HostBackend+KNN.swift.

#ifdef cl_khr_fp64
#pragma OPENCL EXTENSION cl_khr_fp64 : enable
typedef double vote_t;
#else
typedef float vote_t;
#endif

// Global (R * k).
__kernel void knn_topk_reset(__global float *values, const long values_offset, __global int *indices,
                             const long indices_offset, const int count) {
    const int i = get_global_id(0);
    if (i >= count) return;
    values[values_offset + i] = -INFINITY;
    indices[indices_offset + i] = -1;
}

// Global (R): one work-item per query row owns that row's heap.
__kernel void knn_topk(__global float *values, const long values_offset, __global int *indices,
                       const long indices_offset, __global const float *similarities, const long similarities_offset,
                       __global const int *labels, const long labels_offset, const int rows, const int k,
                       const int columns, const int column_offset) {
    const int r = get_global_id(0);
    if (r >= rows) return;
    __global float *heap_value = values + values_offset + (long)r * k;
    __global int *heap_index = indices + indices_offset + (long)r * k;
    __global const float *row = similarities + similarities_offset + (long)r * columns;
    __global const int *label = labels + labels_offset + column_offset;
    float minimum = heap_value[0];
    for (int j = 0; j < columns; ++j) {
        const float x = row[j];
        if (label[j] < 0 || !(x > minimum)) continue;
        // Sift the hole left by the root down to where x belongs.
        int hole = 0;
        for (;;) {
            const int left = 2 * hole + 1;
            if (left >= k) break;
            int child = left;
            float child_value = heap_value[left];
            if (left + 1 < k && heap_value[left + 1] < child_value) {
                child = left + 1;
                child_value = heap_value[child];
            }
            if (!(child_value < x)) break;
            heap_value[hole] = child_value;
            heap_index[hole] = heap_index[child];
            hole = child;
        }
        heap_value[hole] = x;
        heap_index[hole] = column_offset + j;
        minimum = heap_value[0];
    }
}

// Global (R). A class's total is formed at its first slot, summing its slots in slot order: the
// order of a per-class accumulation, without a per-class array. O(k^2) label compares, k exps.
__kernel void knn_vote(__global int *predictions, const long predictions_offset, __global const float *values,
                       const long values_offset, __global const int *indices, const long indices_offset,
                       __global const int *labels, const long labels_offset, const int rows, const int k,
                       const int bank, const int classes, const float temperature) {
    const int r = get_global_id(0);
    if (r >= rows) return;
    __global const float *value = values + values_offset + (long)r * k;
    __global const int *index = indices + indices_offset + (long)r * k;
    __global const int *label = labels + labels_offset;
    int best = -1;
    vote_t best_total = 0;
    for (int j = 0; j < k; ++j) {
        const int column = index[j];
        if (column < 0 || column >= bank) continue;
        const int c = label[column];
        if (c < 0 || c >= classes) continue;
        int seen = 0;
        for (int i = 0; i < j && !seen; ++i) {
            const int other = index[i];
            seen = other >= 0 && other < bank && label[other] == c;
        }
        if (seen) continue;
        vote_t total = 0;
        for (int i = j; i < k; ++i) {
            const int other = index[i];
            if (other >= 0 && other < bank && label[other] == c) {
                total += exp((vote_t)value[i] / (vote_t)temperature);
            }
        }
        if (best < 0 || total > best_total || (total == best_total && c < best)) {
            best = c;
            best_total = total;
        }
    }
    predictions[predictions_offset + r] = best;
}
