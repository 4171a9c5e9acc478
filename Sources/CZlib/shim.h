// zlib's gzip file interface: the IDX reader opens .gz and plain files through gzopen/gzread,
// which pass uncompressed files through unchanged.
#ifndef MOCOV3_CZLIB_SHIM_H
#define MOCOV3_CZLIB_SHIM_H
#include <zlib.h>
#endif
