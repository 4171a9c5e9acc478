// OpenBLAS's CBLAS interface plus the two OpenBLAS extensions the host backend uses to check
// the core it detected (see Kernels/OpenBLASCore.swift) and to report its thread count.
#ifndef MOCOV3_COPENBLAS_SHIM_H
#define MOCOV3_COPENBLAS_SHIM_H
#include <cblas.h>
char *openblas_get_corename(void);
int openblas_get_num_threads(void);
#endif
