#!/usr/bin/env bash
# Writes dist/mocov3-cl-<version>-linux-x86_64.tar.gz: a self-contained mocov3-cl for a Linux
# machine without Swift or our Debian packages (a cluster node, a rented GPU box):
#
#   mocov3-cl-<version>-linux-x86_64/
#     mocov3-cl              launcher: puts lib/ first on the library path, runs bin/mocov3-cl
#     bin/mocov3-cl          Swift's runtime linked statically; it also carries the benchmarks
#                            (`mocov3-cl bench-gemm|bench-ops`, hidden subcommands)
#     lib/                   the shared libraries those need beyond glibc: the OpenCL ICD loader,
#                            CLBlast, OpenBLAS (+ libgfortran, libquadmath), libjpeg-turbo, libpng,
#                            zlib, libstdc++, libgcc_s
#     bench/gpu.sh           the GPU check (devices, selftest, kernel rates, steps, PyTorch CUDA)
#     tools/bench_torch_step.py, tools/golden.py   the PyTorch baseline (needs torch there)
#     BUNDLE.txt             what it holds, what it needs (glibc version), how to run it
#
# The GPU's own OpenCL driver is not bundled: the loader finds it through /etc/OpenCL/vendors
# (or OCL_ICD_VENDORS), as any OpenCL program does.
#
#   scripts/bundle.sh            # builds in .build-bundle (release, --static-swift-stdlib)
set -euo pipefail
cd "$(dirname "$0")/.."
command -v swift >/dev/null || export PATH="/opt/swift/usr/bin:$PATH"

scratch=.build-bundle
swift build -c release --static-swift-stdlib --scratch-path "$scratch" --product mocov3-cl >/dev/null
bin_dir="$(swift build -c release --static-swift-stdlib --scratch-path "$scratch" --show-bin-path)"

version="$("$bin_dir/mocov3-cl" --version)"
arch="$(uname -m)"
name="mocov3-cl-$version-linux-$arch"
stage="dist/$name"
rm -rf "$stage" "dist/$name.tar.gz"
mkdir -p "$stage/bin" "$stage/lib" "$stage/bench" "$stage/tools"
cp "$bin_dir/mocov3-cl" "$stage/bin/"
strip "$stage/bin/mocov3-cl"      # symbols and debug info: 61 MiB instead of 100+

# glibc's own libraries stay the target's (they must match its dynamic loader); everything else
# the binaries load, directly or through another library, is copied (symlinks resolved).
is_glibc() {
    case "$1" in
        linux-vdso.so.*|ld-linux-*.so.*|libc.so.*|libm.so.*|libpthread.so.*|libdl.so.*|librt.so.*|libutil.so.*|libresolv.so.*) return 0 ;;
        *) return 1 ;;
    esac
}
for program in "$stage"/bin/*; do
    ldd "$program" | while read -r soname arrow path _; do
        [ "$arrow" = "=>" ] || continue
        is_glibc "$soname" && continue
        if [ "$path" = "not" ]; then echo "bundle: $program needs $soname, which is not installed (run scripts/setup.sh)" >&2; exit 1; fi
        [ -e "$stage/lib/$soname" ] || cp -L "$path" "$stage/lib/$soname"
    done
done
chmod 644 "$stage"/lib/*.so*
# Debian 12's libstdc++ alone needs glibc 2.36 (arc4random); everything else runs on 2.35
# (Ubuntu 22.04, common on GPU machines), whose own libstdc++ (GCC 12) serves as well. It goes
# in lib/cxx, which the launcher uses only on glibc ≥ 2.36 or where the system has none.
mkdir -p "$stage/lib/cxx"
[ -e "$stage/lib/libstdc++.so.6" ] && mv "$stage/lib/libstdc++.so.6" "$stage/lib/cxx/"

cat >"$stage/mocov3-cl" <<'LAUNCHER'
#!/bin/sh
# Runs the bundled mocov3-cl with the bundled libraries ahead of the system's; lib/cxx (Debian
# 12's libstdc++) only where glibc is 2.36 or newer or the system has no libstdc++.
here="$(cd "$(dirname "$0")" && pwd)"
libs="$here/lib"
glibc="$(getconf GNU_LIBC_VERSION 2>/dev/null | cut -d' ' -f2)"
if printf '2.36\n%s\n' "${glibc:-0}" | sort -V -C || ! /sbin/ldconfig -p 2>/dev/null | grep -q 'libstdc++.so.6 '; then
    libs="$here/lib/cxx:$libs"
fi
LD_LIBRARY_PATH="$libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" exec "$here/bin/mocov3-cl" "$@"
LAUNCHER
chmod 755 "$stage/mocov3-cl"
cp bench/gpu.sh "$stage/bench/"
cp tools/bench_torch_step.py tools/golden.py "$stage/tools/"   # the PyTorch baseline and the model it times

# The newest glibc symbol version the bundled files need (lib/cxx aside): the oldest glibc it runs on.
newest_glibc() { objdump -T "$@" 2>/dev/null | grep -o 'GLIBC_[0-9.]*' | sort -uV | tail -1 | sed 's/GLIBC_//'; }
glibc="$(newest_glibc "$stage"/bin/* "$stage"/lib/*.so*)"
cxx_glibc="$(newest_glibc "$stage"/lib/cxx/*)"
cat >"$stage/BUNDLE.txt" <<TEXT
mocov3-cl $version for Linux $arch, built $(date -u +%Y-%m-%d) on $(. /etc/os-release && echo "$PRETTY_NAME").

Needs: glibc $glibc or newer (ldd --version), and for GPUs the vendor's OpenCL driver (an ICD
file in /etc/OpenCL/vendors, e.g. nvidia.icd from the NVIDIA driver). Nothing else: Swift's
runtime is linked in and lib/ holds every other library. lib/cxx holds a libstdc++ that needs
glibc $cxx_glibc; on an older glibc the launcher uses the system's libstdc++.so.6 instead.

  ./mocov3-cl devices                      # what --device accepts
  ./mocov3-cl selftest --device gpu0       # every op and a MoCo step against the host: trust the driver
  ./mocov3-cl pretrain --device gpu0 --data /path/to/imagenet   # (image folder, CIFAR binary, or Fashion-MNIST)
  bench/gpu.sh                             # the GPU benchmark, one results file (see its header)

Libraries in lib/: $(cd "$stage/lib" && ls -d *.so* | tr '\n' ' ')lib/cxx: $(ls "$stage/lib/cxx" | tr '\n' ' ')
TEXT

tar -C dist -czf "dist/$name.tar.gz" "$name"
echo "bundle: dist/$name.tar.gz ($(du -h "dist/$name.tar.gz" | cut -f1); needs glibc ≥ $glibc)"
