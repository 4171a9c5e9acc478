// libjpeg-turbo's TurboJPEG API: the image-folder reader decodes JPEG files with
// tjDecompressHeader3 + tjDecompress2 (and the tests write them with tjCompress2).
#ifndef MOCOV3_CTURBOJPEG_SHIM_H
#define MOCOV3_CTURBOJPEG_SHIM_H
#include <turbojpeg.h>
#endif
