// The OpenCL C API, nothing more. OpenCL 1.2 is the target so the same binary runs on every
// vendor's driver (Apple's stops at 1.2); newer entry points are not used.
#ifndef MOCOV3_COPENCL_SHIM_H
#define MOCOV3_COPENCL_SHIM_H
#define CL_TARGET_OPENCL_VERSION 120
#define CL_USE_DEPRECATED_OPENCL_1_2_APIS
#include <CL/cl.h>
#endif
