// GELU forward and backward for the host backend (see host_kernels.h). The arithmetic mirrors
// Tensors/HostBackend+Elementwise.swift's FastGELU line by line: Numerical Recipes' erfc
// Chebyshev fit with a Cephes-style exponential, in plain float operations and bit tricks so
// the loops vectorize at any width. Multiply-adds are never fused (the Swift code does not fuse
// them), so the AVX-512, AVX2 and baseline builds agree bit for bit with it.
#include "host_kernels.h"

#include <stdint.h>
#include <string.h>

#pragma clang fp contract(off)

static inline float bits_to_float(uint32_t bits) {
    float value;
    memcpy(&value, &bits, sizeof value);
    return value;
}

static inline uint32_t float_to_bits(float value) {
    uint32_t bits;
    memcpy(&bits, &value, sizeof bits);
    return bits;
}

// Swift's max(x, y) is `y >= x ? y : x` and min(x, y) `y < x ? y : x`: NaN stays NaN.
static inline float swift_max(float x, float y) { return y >= x ? y : x; }
static inline float swift_min(float x, float y) { return y < x ? y : x; }

// exp(a) for a <= 88, 0 below -87 (FastGELU.exponential).
static inline float exponential(float a) {
    const float shifter = 12582912.0f;  // 1.5 * 2^23
    float clamped = swift_min(swift_max(a, -87.0f), 88.0f);
    float shifted = clamped * 1.44269504088896341f + shifter;
    float k = shifted - shifter;
    float r = (clamped - k * 0.693359375f) + k * 2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    float e = p * (r * r) + r + 1.0f;
    float scale = bits_to_float((float_to_bits(shifted) - float_to_bits(shifter) + 127u) << 23);
    return a < -87.0f ? 0.0f : e * scale;
}

// erfc(z) for z >= 0 (FastGELU.erfcNonnegative).
static inline float erfc_nonnegative(float z) {
    float t = 1.0f / (1.0f + 0.5f * z);
    float p = 0.17087277f;
    p = p * t - 0.82215223f;
    p = p * t + 1.48851587f;
    p = p * t - 1.13520398f;
    p = p * t + 0.27886807f;
    p = p * t - 0.18628806f;
    p = p * t + 0.09678418f;
    p = p * t + 0.37409196f;
    p = p * t + 1.00002368f;
    p = p * t - 1.26551223f;
    return t * exponential(-z * z + p);
}

// The standard normal CDF (FastGELU.cumulativeNormal).
static inline float cumulative_normal(float x) {
    float tail = 0.5f * erfc_nonnegative(__builtin_fabsf(x) * 0.70710678118654752f);
    return x < 0.0f ? tail : 1.0f - tail;
}

#define GELU_LOOPS(suffix, attributes)                                                          \
    attributes static void gelu_forward_##suffix(float *y, const float *x, long n) {           \
        for (long i = 0; i < n; i++) {                                                          \
            float v = x[i];                                                                     \
            y[i] = v * cumulative_normal(v);                                                    \
        }                                                                                       \
    }                                                                                           \
    attributes static void gelu_backward_##suffix(float *dx, const float *dy, const float *x,   \
                                                  long n) {                                     \
        for (long i = 0; i < n; i++) {                                                          \
            float v = x[i];                                                                     \
            float derivative = cumulative_normal(v) + v * 0.39894228040143268f                  \
                * exponential(-0.5f * v * v);                                                   \
            dx[i] = dy[i] * derivative;                                                         \
        }                                                                                       \
    }

#if defined(__x86_64__)
GELU_LOOPS(avx512, __attribute__((target("avx512f"))))
GELU_LOOPS(avx2, __attribute__((target("avx2"))))
#endif
GELU_LOOPS(baseline, )

typedef void (*forward_loop)(float *, const float *, long);
typedef void (*backward_loop)(float *, const float *, const float *, long);

struct loops {
    forward_loop forward;
    backward_loop backward;
    const char *isa;
};

// The widest variant this CPU runs, or with `isa` that one (found = 0 when the CPU lacks it).
static struct loops choose(const char *isa, int *found) {
    *found = 1;
#if defined(__x86_64__)
    __builtin_cpu_init();
    if ((!isa || strcmp(isa, "avx512f") == 0) && __builtin_cpu_supports("avx512f"))
        return (struct loops){gelu_forward_avx512, gelu_backward_avx512, "avx512f"};
    if ((!isa || strcmp(isa, "avx2") == 0) && __builtin_cpu_supports("avx2"))
        return (struct loops){gelu_forward_avx2, gelu_backward_avx2, "avx2"};
#endif
    if (isa && strcmp(isa, "baseline") != 0) *found = 0;
    return (struct loops){gelu_forward_baseline, gelu_backward_baseline, "baseline"};
}

// Chosen on first use; every thread that races there computes and stores the same pointers.
static forward_loop chosen_forward;
static backward_loop chosen_backward;
static const char *chosen_isa;

static void store(struct loops loops) {
    __atomic_store_n(&chosen_forward, loops.forward, __ATOMIC_RELAXED);
    __atomic_store_n(&chosen_backward, loops.backward, __ATOMIC_RELAXED);
    __atomic_store_n(&chosen_isa, loops.isa, __ATOMIC_RELEASE);
}

static void ensure_chosen(void) {
    if (__atomic_load_n(&chosen_isa, __ATOMIC_ACQUIRE) != 0) return;
    int found;
    store(choose(NULL, &found));
}

int mocov3_host_kernels_use(const char *isa) {
    int found;
    struct loops loops = choose(isa, &found);
    if (found) store(loops);
    return found;
}

void mocov3_gelu_forward(float *y, const float *x, long n) {
    ensure_chosen();
    __atomic_load_n(&chosen_forward, __ATOMIC_RELAXED)(y, x, n);
}

void mocov3_gelu_backward(float *dx, const float *dy, const float *x, long n) {
    ensure_chosen();
    __atomic_load_n(&chosen_backward, __ATOMIC_RELAXED)(dx, dy, x, n);
}

const char *mocov3_host_kernels_isa(void) {
    ensure_chosen();
    return chosen_isa;
}
