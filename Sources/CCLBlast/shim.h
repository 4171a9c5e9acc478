// CLBlast's C API (clblast_c.h), on top of the OpenCL shim's settings.
#ifndef MOCOV3_CCLBLAST_SHIM_H
#define MOCOV3_CCLBLAST_SHIM_H
#include "../COpenCL/shim.h"
#include <clblast_c.h>
#endif
