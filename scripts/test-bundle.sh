#!/usr/bin/env bash
# The bundle as a user gets it (scripts/bundle.sh): unpacked into a fresh folder and run with no
# Swift on the PATH and the build folder moved out of reach. Checks that
#   - every library ldd resolves lies in the bundle or is glibc's, and none is missing;
#   - `devices` lists the host and the OpenCL CPU device (PoCL);
#   - a short `pretrain` (a CIFAR-100-format folder made here, 1 epoch) trains and checkpoints;
#   - an unwritable --output and a full disk (a real tmpfs, where one can be mounted) end with
#     errors that name the path and the errno in words, and the last checkpoint still loads;
#   - `selftest --device cpu0` passes at the real and odd sizes;
#   - a kernel broken through MOCOV3_KERNEL_DIR makes `selftest` fail, naming the op;
#   - `bench/gpu.sh --dry-run` runs end to end on cpu0 and writes its results file, with the
#     kernel table of `step --profile`.
# Run by scripts/test.sh after the Swift tests; on its own: scripts/test-bundle.sh
set -euo pipefail
cd "$(dirname "$0")/.."
checkout="$PWD"
fail() { echo "test-bundle: FAILED: $*" >&2; exit 1; }

scripts/bundle.sh
tarball="$(ls -t dist/mocov3-cl-*-linux-*.tar.gz | head -1)"
work="$(mktemp -d)"
hidden="$checkout/.build-bundle.hidden-by-test"
restore() {
    mountpoint -q "$work/small" 2>/dev/null && umount "$work/small"
    [ -d "$hidden" ] && mv "$hidden" "$checkout/.build-bundle"
    rm -rf "$work"
}
trap restore EXIT
tar -C "$work" -xzf "$tarball"
bundle="$(ls -d "$work"/mocov3-cl-*)"
mv "$checkout/.build-bundle" "$hidden"     # nothing may reach into the build folder
# A user's environment: system paths only (no Swift toolchain), PoCL's cache in the work folder.
run() {
    env -i HOME="$work" PATH=/usr/local/bin:/usr/bin:/bin POCL_CACHE_DIR="${POCL_CACHE_DIR:-$checkout/.pocl-cache}" \
        MOCOV3_KERNEL_CACHE_DIR="$work/kernel-cache" ${OPENBLAS_CORETYPE:+OPENBLAS_CORETYPE=$OPENBLAS_CORETYPE} "$@"
}
run sh -c 'command -v swift' >/dev/null && fail "swift is on the user PATH of the test"
cd "$work"

echo "test-bundle: ldd"
for file in "$bundle"/bin/* "$bundle"/lib/*.so* "$bundle"/lib/cxx/*; do
    LD_LIBRARY_PATH="$bundle/lib/cxx:$bundle/lib" ldd "$file" | while read -r soname arrow path _; do
        case "$soname" in linux-vdso.so.*|/*ld-linux*) continue ;; esac
        [ "$arrow" = "=>" ] || continue
        [ "$path" = "not" ] && fail "$(basename "$file") needs $soname, which resolves nowhere"
        case "$path" in
            "$bundle"/lib/*) ;;
            */libc.so.6|*/libm.so.6|*/libpthread.so.0|*/libdl.so.2|*/librt.so.1|*/ld-linux-x86-64.so.2) ;;
            *) fail "$(basename "$file") loads $soname from $path, outside the bundle and glibc" ;;
        esac
    done
done

echo "test-bundle: devices"
devices="$(run "$bundle/mocov3-cl" devices)"
echo "$devices"
grep -q '^host ' <<<"$devices" || fail "devices does not list host"
grep -q '^cpu0 ' <<<"$devices" || fail "devices does not list cpu0 (PoCL)"

echo "test-bundle: pretrain"
python3 "$checkout/tools/tiny_cifar.py" "$work/data"
run "$bundle/mocov3-cl" pretrain --device host --data "$work/data" --output "$work/run" --epochs 1 -b 64 \
    --image-size 32 --patch-size 8 --embed-dim 64 --depth 2 --heads 2 --moco-mlp-dim 128 --moco-dim 64 \
    --knn-bank 128 -j 2 >"$work/pretrain.log" 2>&1 || { cat "$work/pretrain.log"; fail "pretrain exited non-zero"; }
[ -s "$work/run/checkpoint_0001.safetensors" ] || { cat "$work/pretrain.log"; fail "pretrain wrote no checkpoint"; }
[ "$(wc -l <"$work/run/metrics.jsonl")" -ge 8 ] || fail "pretrain wrote $(wc -l <"$work/run/metrics.jsonl") metrics lines"

echo "test-bundle: an unwritable --output"
status=0
run "$bundle/mocov3-cl" pretrain --device host --data "$work/data" --output /proc/forbidden/run >"$work/forbidden.log" 2>&1 || status=$?
[ "$status" != 0 ] || fail "pretrain --output /proc/forbidden/run succeeded"
grep -q "cannot create the folder /proc/forbidden/run: " "$work/forbidden.log" || { cat "$work/forbidden.log"; fail "no clear error for /proc/forbidden"; }
grep -q "NSCocoaErrorDomain\|UserInfo" "$work/forbidden.log" && fail "an NSError dump reached the user"

echo "test-bundle: a full disk (a real tmpfs)"
mkdir -p "$work/small"
checkpoint_bytes=$(stat -c%s "$work/run/checkpoint_0001.safetensors")
other_bytes=$(( $(stat -c%s "$work/run/report.html") + $(stat -c%s "$work/run/metrics.jsonl") ))
# Room for the first epoch's checkpoint and files, not for the second checkpoint beside it.
size_kib=$(( (checkpoint_bytes * 3 / 2 + 2 * other_bytes + 65536) / 1024 ))
if mount -t tmpfs -o size=${size_kib}k tmpfs "$work/small" 2>/dev/null; then
    status=0
    run "$bundle/mocov3-cl" pretrain --device host --data "$work/data" --output "$work/small/run" --epochs 2 -b 64 \
        --image-size 32 --patch-size 8 --embed-dim 64 --depth 2 --heads 2 --moco-mlp-dim 128 --moco-dim 64 \
        --knn-bank 128 -j 2 >"$work/full.log" 2>&1 || status=$?
    [ "$status" != 0 ] || fail "pretrain on a full tmpfs succeeded"
    grep -q "cannot write $work/small/run/checkpoint_0002.safetensors: No space left on device (ENOSPC)" "$work/full.log" \
        || { cat "$work/full.log"; fail "no clear ENOSPC error"; }
    grep -q "checkpoint_0001.safetensors, is intact" "$work/full.log" || fail "the error does not name the intact checkpoint"
    cp "$work/small/run/checkpoint_0001.safetensors" "$work/kept.safetensors"
    umount "$work/small"
    run "$bundle/mocov3-cl" knn --checkpoint "$work/kept.safetensors" --data "$work/data" --device host >/dev/null \
        || fail "the checkpoint kept on the full disk does not load"
else
    echo "test-bundle: cannot mount a tmpfs here (not root, or no privilege): the full disk is covered by the injected-fault tests only"
fi

echo "test-bundle: selftest --device cpu0"
run "$bundle/mocov3-cl" selftest --device cpu0 >"$work/selftest.log" 2>&1 || { cat "$work/selftest.log"; fail "selftest on cpu0"; }
tail -1 "$work/selftest.log"
grep -q "cpu0: all [0-9]* checks agree" "$work/selftest.log" || fail "selftest printed no verdict"

echo "test-bundle: selftest with a broken kernel"
cp -r "$checkout/kernels/cl" "$work/broken-kernels"
# The forward GELU scaled by 0.99 (the backward, which shares Φ, stays right).
python3 - "$work/broken-kernels/elementwise.cl" <<'PY'
import re, sys
path = sys.argv[1]
text = open(path).read()
start = text.index("__kernel void gelu_forward")
body_end = text.index("}", start)
body = text[start:body_end]
broken = body.replace("v * cumulative_normal(v)", "0.99f * v * cumulative_normal(v)", 1)
assert broken != body, "gelu_forward no longer reads v * cumulative_normal(v): update this test"
open(path, "w").write(text[:start] + broken + text[body_end:])
PY
status=0
run MOCOV3_KERNEL_DIR="$work/broken-kernels" "$bundle/mocov3-cl" selftest --device cpu0 --quick --no-kernel-cache \
    >"$work/broken.log" 2>&1 || status=$?
[ "$status" = 1 ] || { cat "$work/broken.log"; fail "selftest with a broken gelu exited $status, not 1"; }
grep -q "^MISMATCH  gelu " "$work/broken.log" || { cat "$work/broken.log"; fail "selftest did not flag gelu"; }
grep -q "^ok        geluBackward" "$work/broken.log" || fail "selftest flagged the intact geluBackward"
grep "disagrees" "$work/broken.log"

echo "test-bundle: bench/gpu.sh --dry-run"
run OUT="$work/gpu-results.txt" "$bundle/bench/gpu.sh" --dry-run >"$work/gpu.log" 2>&1 || { cat "$work/gpu.log"; fail "gpu.sh --dry-run"; }
grep -q "0 stage(s) failed" "$work/gpu-results.txt" || fail "gpu.sh results lack the verdict"
grep -q "vs torch" "$work/gpu-results.txt" || fail "gpu.sh results lack the ratio table"
grep -q "^gemm_blocked,[0-9]*,[0-9.]*,[0-9.]*$" "$work/gpu-results.txt" || { cat "$work/gpu-results.txt"; fail "gpu.sh results lack step --profile's kernel table"; }
echo "test-bundle: passed"
