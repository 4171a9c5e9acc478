// optimizer.cl: parameter updates over flat buffers (all parameters live in one buffer, their
// gradients and optimizer state in buffers of the same layout).
//
//   adamw (torch.optim.AdamW, single-tensor path, in its order of operations):
//     p *= decay                       decay = 1 - lr*wd
//     m += (1 - beta1) * (g - m)       (torch: m.lerp_(g, 1 - beta1))
//     v  = beta2 * v + (1 - beta2) * g^2   (1 - beta formed in double on the host, as torch does)
//     p -= step_size * m / (sqrt(v) / bc2_root + eps)   step_size = lr / (1 - beta1^t), bc2_root = sqrt(1 - beta2^t)
//   lars (moco-v3 moco/optimizer.py; SPEC A.6), three passes over the chunk table of reduce.cl:
//     lars_decay_norms: for adapted segments g += wd * p, then per-chunk sums of p^2 and g^2
//     lars_factors:     factor[s] = eta * |p| / |g| (1 when not adapted or either norm is 0)
//     lars_update:      mu = momentum * mu + factor * g;  p -= lr * mu
//   momentum_update (the momentum encoder): xi = xi * m + theta * (1 - m)   (SPEC A.5)
//   sgd (torch.optim.SGD, momentum, no dampening or Nesterov; pointwise per contiguous run):
//     g += wd * p;  b = momentum * b + g;  p -= lr * b      (g is left holding g + wd * p)
//   lamb (You et al. 2020, Algorithm 2), three passes over the chunk table like lars:
//     lamb_moments_norms: m = beta1 * m + (1 - beta1) * g;  v = beta2 * v + (1 - beta2) * g^2
//                         u = (m / bc1) / (sqrt(v / bc2) + eps) [+ wd * p if adapted], written into g,
//                         then per-chunk sums of p^2 and u^2 (adapted segments only)
//                         bc1 = 1 - beta1^t, bc2 = 1 - beta2^t (formed in double on the host)
//     lamb_factors:       ratio[s] = |p| / |u| (1 when not adapted or either norm is 0)
//     lamb_update:        p -= lr * ratio * u
//
// The scalars of AdamW are computed on the host in double, as PyTorch does.
// Host reference: Sources/Tensors/HostBackend+Optimizer.swift.

// Global (count): one run of contiguous trainable elements starting at `begin`.
__kernel void adamw(__global float *p, const long p_offset, __global const float *g, const long g_offset,
                    __global float *m, const long m_offset, __global float *v, const long v_offset,
                    const long begin, const int count, const float decay, const float one_minus_beta1,
                    const float beta2, const float one_minus_beta2, const float step_size, const float bc2_root,
                    const float eps) {
    const int i = get_global_id(0);
    if (i >= count) return;
    const long k = begin + i;
    const float grad = g[g_offset + k];
    float param = p[p_offset + k] * decay;
    float first = m[m_offset + k];
    first += one_minus_beta1 * (grad - first);
    const float second = v[v_offset + k] * beta2 + one_minus_beta2 * grad * grad;
    param -= step_size * first / (sqrt(second) / bc2_root + eps);
    p[p_offset + k] = param;
    m[m_offset + k] = first;
    v[v_offset + k] = second;
}

__kernel void lars_decay_norms(__global float *partial_p, __global float *partial_g,
                               __global const float *p, const long p_offset, __global float *g, const long g_offset,
                               __global const int *chunk_segment, __global const long *chunk_begin,
                               __global const int *chunk_count, __global const int *segment_adapted,
                               const int chunks, const float weight_decay) {
    const int c = get_global_id(0);
    if (c >= chunks) return;
    const long begin = chunk_begin[c];
    const int adapted = segment_adapted[chunk_segment[c]];
    float sum_p = 0.0f, sum_g = 0.0f;
    if (adapted) {
        for (int i = 0; i < chunk_count[c]; ++i) {
            const float param = p[p_offset + begin + i];
            const float grad = g[g_offset + begin + i] + weight_decay * param;
            g[g_offset + begin + i] = grad;
            sum_p += param * param;
            sum_g += grad * grad;
        }
    }
    partial_p[c] = sum_p;
    partial_g[c] = sum_g;
}

__kernel void lars_factors(__global float *factor, __global const float *partial_p, __global const float *partial_g,
                           __global const int *segment_first_chunk, __global const int *segment_chunks,
                           __global const int *segment_adapted, const int segments, const float trust) {
    const int s = get_global_id(0);
    if (s >= segments) return;
    float sum_p = 0.0f, sum_g = 0.0f;
    for (int c = 0; c < segment_chunks[s]; ++c) {
        sum_p += partial_p[segment_first_chunk[s] + c];
        sum_g += partial_g[segment_first_chunk[s] + c];
    }
    factor[s] = (segment_adapted[s] && sum_p > 0.0f && sum_g > 0.0f) ? trust * sqrt(sum_p) / sqrt(sum_g) : 1.0f;
}

__kernel void lars_update(__global float *p, const long p_offset, __global const float *g, const long g_offset,
                          __global float *mu, const long mu_offset, __global const float *factor,
                          __global const int *chunk_segment, __global const long *chunk_begin,
                          __global const int *chunk_count, const int chunks, const float momentum,
                          const float learning_rate) {
    const int c = get_global_id(0);
    if (c >= chunks) return;
    const long begin = chunk_begin[c];
    const float f = factor[chunk_segment[c]];
    for (int i = 0; i < chunk_count[c]; ++i) {
        const float velocity = momentum * mu[mu_offset + begin + i] + f * g[g_offset + begin + i];
        mu[mu_offset + begin + i] = velocity;
        p[p_offset + begin + i] -= learning_rate * velocity;
    }
}

__kernel void momentum_update(__global float *xi, const long xi_offset, __global const float *theta,
                              const long theta_offset, const int n, const float m) {
    const int i = get_global_id(0);
    if (i < n) xi[xi_offset + i] = xi[xi_offset + i] * m + theta[theta_offset + i] * (1.0f - m);
}

// Global (count): one run of contiguous trainable elements starting at `begin`.
__kernel void sgd(__global float *p, const long p_offset, __global float *g, const long g_offset,
                  __global float *b, const long b_offset, const long begin, const int count,
                  const float weight_decay, const float momentum, const float learning_rate) {
    const int i = get_global_id(0);
    if (i >= count) return;
    const long k = begin + i;
    const float param = p[p_offset + k];
    const float grad = g[g_offset + k] + weight_decay * param;
    const float velocity = momentum * b[b_offset + k] + grad;
    g[g_offset + k] = grad;
    b[b_offset + k] = velocity;
    p[p_offset + k] = param - learning_rate * velocity;
}

// Global (chunks): one work-item per chunk of the chunk table (reduce.cl).
__kernel void lamb_moments_norms(__global float *partial_p, __global float *partial_u,
                                 __global const float *p, const long p_offset, __global float *g, const long g_offset,
                                 __global float *m, const long m_offset, __global float *v, const long v_offset,
                                 __global const int *chunk_segment, __global const long *chunk_begin,
                                 __global const int *chunk_count, __global const int *segment_adapted,
                                 const int chunks, const float beta1, const float one_minus_beta1, const float beta2,
                                 const float one_minus_beta2, const float bc1, const float bc2, const float eps,
                                 const float weight_decay) {
    const int c = get_global_id(0);
    if (c >= chunks) return;
    const long begin = chunk_begin[c];
    const int adapted = segment_adapted[chunk_segment[c]];
    float sum_p = 0.0f, sum_u = 0.0f;
    for (int i = 0; i < chunk_count[c]; ++i) {
        const long k = begin + i;
        const float grad = g[g_offset + k];
        const float first = beta1 * m[m_offset + k] + one_minus_beta1 * grad;
        const float second = beta2 * v[v_offset + k] + one_minus_beta2 * grad * grad;
        m[m_offset + k] = first;
        v[v_offset + k] = second;
        float update = (first / bc1) / (sqrt(second / bc2) + eps);
        if (adapted) {
            const float param = p[p_offset + k];
            update += weight_decay * param;
            sum_p += param * param;
            sum_u += update * update;
        }
        g[g_offset + k] = update;
    }
    partial_p[c] = sum_p;
    partial_u[c] = sum_u;
}

// Global (segments).
__kernel void lamb_factors(__global float *ratio, __global const float *partial_p, __global const float *partial_u,
                           __global const int *segment_first_chunk, __global const int *segment_chunks,
                           __global const int *segment_adapted, const int segments) {
    const int s = get_global_id(0);
    if (s >= segments) return;
    float sum_p = 0.0f, sum_u = 0.0f;
    for (int c = 0; c < segment_chunks[s]; ++c) {
        sum_p += partial_p[segment_first_chunk[s] + c];
        sum_u += partial_u[segment_first_chunk[s] + c];
    }
    ratio[s] = (segment_adapted[s] && sum_p > 0.0f && sum_u > 0.0f) ? sqrt(sum_p) / sqrt(sum_u) : 1.0f;
}

// Global (chunks).
__kernel void lamb_update(__global float *p, const long p_offset, __global const float *g, const long g_offset,
                          __global const float *ratio, __global const int *chunk_segment,
                          __global const long *chunk_begin, __global const int *chunk_count, const int chunks,
                          const float learning_rate) {
    const int c = get_global_id(0);
    if (c >= chunks) return;
    const long begin = chunk_begin[c];
    const float lr_ratio = learning_rate * ratio[chunk_segment[c]];
    for (int i = 0; i < chunk_count[c]; ++i) p[p_offset + begin + i] -= lr_ratio * g[g_offset + begin + i];
}
