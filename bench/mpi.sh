#!/usr/bin/env bash
# Data parallel on one machine: 1 process × all cores (--ranks 1), N ranks as threads of one process
# (--ranks N, the host default) and N processes × cores/N threads
# (mpirun -np N), on the default pre-training model and ViT-Tiny/4 @32, with the user's OpenBLAS
# (OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE unset). Prints, per configuration, the trainer's img/s
# over one epoch of a synthetic CIFAR-format set and rank 0's time in collectives, with the
# gradient all-reduced whole after the backward (--bucket-mib 0) and in 4 MiB buckets started
# during it; the hidden fraction is 1 − (wait after the backward, bucketed) / (the same, whole).
#
#   bench/mpi.sh [BINARY] [N]        # default: .build/release/mocov3-cl, N = 2
set -euo pipefail
cd "$(dirname "$0")/.."
binary="${1:-.build/release/mocov3-cl}"
ranks="${2:-2}"
[ -x "$binary" ] || { echo "bench/mpi.sh: no binary at $binary (swift build -c release first)" >&2; exit 2; }
command -v mpirun >/dev/null || { echo "bench/mpi.sh: no mpirun (apt-get install openmpi-bin)" >&2; exit 2; }
work="$(mktemp -d /tmp/bench-mpi-XXXXXX)"
trap 'rm -rf "$work"' EXIT
unset OPENBLAS_CORETYPE OPENBLAS_L2_SIZE
mpirun=(mpirun --allow-run-as-root --oversubscribe --bind-to none -np "$ranks" --mca btl self,vader
        --mca btl_vader_single_copy_mechanism none)
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
"$binary" devices 2>/dev/null | grep -i host || true

run() {  # name, images, flags…
    local name="$1" images="$2"; shift 2
    python3 tools/tiny_cifar.py "$work/data-$name" --train "$images" --test 64 >/dev/null
    local common=(pretrain --device host --data "$work/data-$name" --epochs 1 --eval-every 0 --save-every never -p 1000 "$@")
    local one threads whole buckets
    one="$("$binary" "${common[@]}" --ranks 1 --output "$work/one-$name" | grep -E '^done in')"
    threads="$("$binary" "${common[@]}" --ranks "$ranks" --output "$work/threads-$name" | grep -E '^done in')"
    whole="$("${mpirun[@]}" "$binary" "${common[@]}" --bucket-mib 0 --output "$work/whole-$name" | grep -E '^done in|^collectives')"
    buckets="$("${mpirun[@]}" "$binary" "${common[@]}" --output "$work/buckets-$name" | grep -E '^done in|^collectives')"
    echo "$name, 1 process × $(nproc) threads: $one"
    echo "$name, $ranks ranks as threads of 1 process (--ranks $ranks, the host default) × $(( $(nproc) / ranks )) threads: $threads"
    echo "$name, $ranks processes × $(( $(nproc) / ranks )) threads, one all-reduce after the backward: $(echo "$whole" | tr '\n' ' ')"
    echo "$name, $ranks processes × $(( $(nproc) / ranks )) threads, 4 MiB buckets during the backward: $(echo "$buckets" | tr '\n' ' ')"
    python3 - "$whole" "$buckets" <<'PY'
import re, sys
waits = [float(re.search(r"waited ([0-9.]+) s", text).group(1)) for text in sys.argv[1:]]
print(f"  hidden: {100 * (1 - waits[1] / waits[0]):.0f} % of the {waits[0]:.2f} s the whole all-reduce kept rank 0 waiting"
      if waits[0] > 0 else "  hidden: no wait to hide")
PY
}

# The default run's model (README): C 128, 4 blocks, patch 7 on 28 px, batch 256, heads 1024 wide.
run default 4096 --image-size 28 --patch-size 7 --embed-dim 128 --depth 4 --heads 4 --moco-mlp-dim 1024 -b 256
# ViT-Tiny/4 @32 at batch 128 (issue 12's configuration), heads 4096 wide.
run vit-tiny-4 1024 -a vit_tiny --image-size 32 --patch-size 4 --moco-mlp-dim 4096 -b 128
