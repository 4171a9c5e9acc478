// patch_embed.cl: the ViT patch projection, Conv2d(CH, C, P, stride P) + flatten + transpose, as
// one kernel with no im2col buffer (SPEC A.2).
//
//   tokens[b, first + t, c] = bias[c] + sum_k W[c, k] * pixel(b, t, k)
//     t = row * (W/P) + col (row-major patches), k = ch * P*P + i * P + j,
//     pixel(b, t, k) = images[b, ch, row*P + i, col*P + j]
//   backward: dW[c, k] += sum_{b,t} dY[b, first + t, c] * pixel(b, t, k); db[c] += sum_{b,t} dY[...]
//
// images (B, CH, H, W); tokens (B, N, C); W (C, K) row-major; K = CH*P*P. Each work-item owns
// VW consecutive channels (a float VW vector): forward for one token, backward for one input k
// (k == K computes the bias gradient). The forward reads W transposed and zero-padded to CPAD
// columns (patch_pack_weight), so every vector load is whole.
// Host reference: Sources/Kernels/HostBackend+PatchEmbed.swift.

#ifndef VW
#define VW 8
#endif
#define CAT_(a, b) a##b
#define CAT(a, b) CAT_(a, b)
#define floatV CAT(float, VW)
#define vloadV CAT(vload, VW)

inline long pixel_index(const int b, const int t, const int k, const int channels, const int height,
                        const int width, const int patch) {
    const int columns = width / patch;
    const int row = t / columns, col = t % columns;
    const int channel = k / (patch * patch), within = k % (patch * patch);
    const int i = within / patch, j = within % patch;
    return (((long)b * channels + channel) * height + row * patch + i) * width + col * patch + j;
}

// packed[k, c] = W[c, k] for c < C, 0 up to CPAD.  Global (CPAD, K).
__kernel void patch_pack_weight(__global float *packed, __global const float *weight, const long weight_offset,
                                const int embed, const int padded, const int inputs) {
    const int c = get_global_id(0), k = get_global_id(1);
    if (c >= padded || k >= inputs) return;
    packed[(long)k * padded + c] = c < embed ? weight[weight_offset + (long)c * inputs + k] : 0.0f;
}

// Global (CPAD / VW, B * T).
__kernel void patch_embed(__global float *tokens, const long tokens_offset,
                          __global const float *images, const long images_offset,
                          __global const float *packed, __global const float *bias, const long bias_offset,
                          const int batch, const int channels, const int height, const int width,
                          const int patch, const int token_count, const int first_token, const int embed,
                          const int padded) {
    const int c0 = get_global_id(0) * VW, bt = get_global_id(1);
    const int patches = (height / patch) * (width / patch);
    if (c0 >= embed || bt >= batch * patches) return;
    const int b = bt / patches, t = bt % patches;
    const int inputs = channels * patch * patch;
    __global const float *image = images + images_offset;
    floatV acc = (floatV)(0.0f);
    for (int k = 0; k < inputs; ++k) {
        const float pixel = image[pixel_index(b, t, k, channels, height, width, patch)];
        acc = fma((floatV)(pixel), vloadV(0, packed + (long)k * padded + c0), acc);
    }
    float values[VW];
    CAT(vstore, VW)(acc, 0, values);
    __global float *row = tokens + tokens_offset + ((long)b * token_count + first_token + t) * embed;
    for (int e = 0; e < VW && c0 + e < embed; ++e) row[c0 + e] = values[e] + bias[bias_offset + c0 + e];
}

// Global (ceil(C / VW), K + 1); work-items with k == K accumulate the bias gradient.
__kernel void patch_embed_backward(__global float *weight_grad, const long weight_grad_offset,
                                   __global float *bias_grad, const long bias_grad_offset,
                                   __global const float *dy, const long dy_offset,
                                   __global const float *images, const long images_offset,
                                   const int batch, const int channels, const int height, const int width,
                                   const int patch, const int token_count, const int first_token, const int embed) {
    const int c0 = get_global_id(0) * VW, k = get_global_id(1);
    const int inputs = channels * patch * patch;
    const int patches = (height / patch) * (width / patch);
    if (c0 >= embed || k > inputs) return;
    const int lanes = min(VW, embed - c0);
    float acc[VW];
    for (int e = 0; e < VW; ++e) acc[e] = 0.0f;
    for (int b = 0; b < batch; ++b) {
        for (int t = 0; t < patches; ++t) {
            const float pixel = k < inputs
                ? images[images_offset + pixel_index(b, t, k, channels, height, width, patch)] : 1.0f;
            __global const float *row = dy + dy_offset + ((long)b * token_count + first_token + t) * embed + c0;
            for (int e = 0; e < lanes; ++e) acc[e] = fma(pixel, row[e], acc[e]);
        }
    }
    for (int e = 0; e < lanes; ++e) {
        if (k < inputs) weight_grad[weight_grad_offset + (long)(c0 + e) * inputs + k] += acc[e];
        else bias_grad[bias_grad_offset + c0 + e] += acc[e];
    }
}
