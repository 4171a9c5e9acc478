// libpng's simplified API (png_image_*): the image-folder reader decodes PNG files from memory
// and the tests write them, without libpng's setjmp-based error handling.
#ifndef MOCOV3_CPNG_SHIM_H
#define MOCOV3_CPNG_SHIM_H
#include <png.h>
#endif
