#ifndef MOCOV3_HOST_KERNELS_H
#define MOCOV3_HOST_KERNELS_H

/// Host loops compiled three times (AVX-512F, AVX2, the baseline) and picked once by the CPU
/// they run on: the Swift targets are built for the baseline x86-64 (SSE2, 4 floats a
/// vector), which left GELU at ~20 % of a host training step. Each computes exactly what the
/// Swift reference in Tensors (`FastGELU`) computes, operation for operation and without
/// contracted multiply-adds, so every variant gives the same bits.

/// y[i] = GELU(x[i]) for i < n.
void mocov3_gelu_forward(float *y, const float *x, long n);
/// dx[i] = dy[i] · GELU'(x[i]) for i < n.
void mocov3_gelu_backward(float *dx, const float *dy, const float *x, long n);
/// The instruction set the loops above run with: "avx512f", "avx2" or "baseline".
const char *mocov3_host_kernels_isa(void);
/// Runs the loops with `isa` from now on if this CPU has it (1), else changes nothing (0);
/// NULL goes back to the CPU's widest. For tests: every variant gives the same bits.
int mocov3_host_kernels_use(const char *isa);

#endif
