// patch_embed.cl: the ViT patch projection, Conv2d(CH, C, P, stride P) + flatten + transpose, as
// one kernel with no im2col buffer (SPEC A.2).
//
//   tokens[b, first + t, c] = bias[c] + sum_k W[c, k] * pixel(b, t, k)
//     t = row * (W/P) + col (row-major patches), k = ch * P*P + i * P + j,
//     pixel(b, t, k) = images[b, ch, row*P + i, col*P + j]
//   backward: dW[c, k] += sum_{b,t} dY[b, first + t, c] * pixel(b, t, k); db[c] += sum_{b,t} dY[...]
//
// images (B, CH, H, W); tokens (B, N, C); W (C, K) row-major; K = CH*P*P. The forward keeps a
// TOKENS x (VW*VECS) register tile per work-item and reads W transposed and zero-padded to CPAD
// columns (patch_pack_weight, CPAD a multiple of VW*VECS), so every vector load is whole. The
// backward gives each work-item one input k (k == K: the bias gradient) and VW channels.
// Tunables: VW (vector width), VECS (vectors per token), TOKENS (tokens per work-item).
// Host reference: Sources/Tensors/HostBackend+PatchEmbed.swift.

#ifndef VW
#define VW 8
#endif
#ifndef VECS
#define VECS 2
#endif
#ifndef TOKENS
#define TOKENS 4
#endif
// floatV, vloadV, vstoreV: common.cl.

// packed[k, c] = W[c, k] for c < C, 0 up to CPAD.  Global (CPAD, K).
__kernel void patch_pack_weight(__global float *packed, __global const float *weight, const long weight_offset,
                                const int embed, const int padded, const int inputs) {
    const int c = get_global_id(0), k = get_global_id(1);
    if (c >= padded || k >= inputs) return;
    packed[(long)k * padded + c] = c < embed ? weight[weight_offset + (long)c * inputs + k] : 0.0f;
}

// Global (CPAD / (VW * VECS), ceil(B * T / TOKENS)). Each work-item keeps a TOKENS x (VW * VECS)
// tile of outputs in registers (like gemm.cl): every pixel it loads feeds VW * VECS channels and
// every weight vector TOKENS tokens. Pixels are walked channel, row, column with pointer steps:
// recomputing the (channel, i, j) index per element cost more than the arithmetic.
__kernel void patch_embed_forward(__global float *tokens, const long tokens_offset,
                                  __global const float *images, const long images_offset,
                                  __global const float *packed, __global const float *bias, const long bias_offset,
                                  const int batch, const int channels, const int height, const int width,
                                  const int patch, const int token_count, const int first_token, const int embed,
                                  const int padded) {
    const int c0 = get_global_id(0) * VW * VECS, bt0 = get_global_id(1) * TOKENS;
    const int columns = width / patch, patches = (height / patch) * columns, total = batch * patches;
    if (c0 >= embed || bt0 >= total) return;

    // Top-left pixel of each token's patch (tokens past the end repeat the last one, unstored).
    __global const float *origin[TOKENS];
    for (int r = 0; r < TOKENS; ++r) {
        const int bt = min(bt0 + r, total - 1), b = bt / patches, t = bt % patches;
        origin[r] = images + images_offset + (long)b * channels * height * width
                  + (long)(t / columns) * patch * width + (t % columns) * patch;
    }
    floatV acc[TOKENS][VECS];
    for (int r = 0; r < TOKENS; ++r)
        for (int v = 0; v < VECS; ++v) acc[r][v] = (floatV)(0.0f);

    __global const float *w = packed + c0;
    const long plane = (long)height * width;
    for (int ch = 0; ch < channels; ++ch) {
        for (int i = 0; i < patch; ++i) {
            const long line = ch * plane + (long)i * width;
            for (int j = 0; j < patch; ++j) {
                floatV wv[VECS];
                for (int v = 0; v < VECS; ++v) wv[v] = vloadV(0, w + v * VW);
                for (int r = 0; r < TOKENS; ++r) {
                    const floatV pixel = (floatV)(origin[r][line + j]);
                    for (int v = 0; v < VECS; ++v) acc[r][v] = fma(pixel, wv[v], acc[r][v]);
                }
                w += padded;
            }
        }
    }
    for (int r = 0; r < TOKENS && bt0 + r < total; ++r) {
        const int bt = bt0 + r, b = bt / patches, t = bt % patches;
        __global float *row = tokens + tokens_offset + ((long)b * token_count + first_token + t) * embed;
        for (int v = 0; v < VECS; ++v) {
            float values[VW];
            vstoreV(acc[r][v], 0, values);
            for (int e = 0; e < VW && c0 + v * VW + e < embed; ++e)
                row[c0 + v * VW + e] = values[e] + bias[bias_offset + c0 + v * VW + e];
        }
    }
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
    const int columns = width / patch, rows = height / patch;
    // Offset of input k inside a patch: channel plane, row i, column j (computed once).
    const int channel = k / (patch * patch), within = k % (patch * patch);
    const long inner = (long)channel * height * width + (long)(within / patch) * width + within % patch;
    float acc[VW];
    for (int e = 0; e < VW; ++e) acc[e] = 0.0f;
    for (int b = 0; b < batch; ++b) {
        __global const float *image = images + images_offset + (long)b * channels * height * width + inner;
        __global const float *grad = dy + dy_offset + ((long)b * token_count + first_token) * embed + c0;
        for (int pr = 0; pr < rows; ++pr) {
            for (int pc = 0; pc < columns; ++pc) {
                const float pixel = k < inputs ? image[(long)pr * patch * width + pc * patch] : 1.0f;
                for (int e = 0; e < lanes; ++e) acc[e] = fma(pixel, grad[e], acc[e]);
                grad += embed;
            }
        }
    }
    for (int e = 0; e < lanes; ++e) {
        if (k < inputs) weight_grad[weight_grad_offset + (long)(c0 + e) * inputs + k] += acc[e];
        else bias_grad[bias_grad_offset + c0 + e] += acc[e];
    }
}
