#!/usr/bin/env bash
# One MoCo v3 training step, timed three ways on the same configuration: PyTorch CPU fp32
# (tools/bench_torch_step.py, the baseline a user would pick instead) and `mocov3-cl step --repeat`
# on the host (OpenBLAS) and on an OpenCL device. Each prints one JSON line (median of REPEAT steps
# after one untimed warm-up; images/s = batch / median step, as the PyTorch script counts it);
# a ratio table follows.
#
#   bench/step.sh                 # ViT-Tiny/4 @ 32 px, batch 128, then ViT-S/16 @ 224, batch 32
#   CONFIGS=tiny bench/step.sh    # only ViT-Tiny/4
#   CONFIGS=pretrain bench/step.sh   # the default pretrain run's model (C 128, 4 blocks, 28 px, patch 7, batch 256)
#   DEVICES="host cpu0" REPEAT=3 THREADS=2 bench/step.sh
#
# The engine runs with the environment a user has (OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE unset;
# the core OpenBLAS then picks is printed) and as `pretrain` runs it: on the host, ranks as threads
# (one per core while each keeps 32 images; `host` rows), and also one model on every thread
# (`host-1rank`). Each row: img/s, the ratio to PyTorch, GFLOP/s (the step's GEMM and attention
# FLOPs, MoCoParameters.trainingFLOPsPerImage), its fraction of the OpenBLAS sgemm 2048³ ceiling
# measured in the same run, process CPU time / wall over the timed steps, and peak resident memory.
#
# Heads as the PyTorch script's defaults and the reference: moco_dim 256, moco_mlp_dim 4096;
# ViT-Tiny: C 192, depth 12, 3 heads; ViT-S: C 384, depth 12, 12 heads (MoCo v3's vits.py).
set -euo pipefail
cd "$(dirname "$0")/.."
command -v swift >/dev/null || export PATH="/opt/swift/usr/bin:$PATH"
REPEAT="${REPEAT:-3}"
THREADS="${THREADS:-2}"
DEVICES="${DEVICES:-host host-1rank cpu0}"
CONFIGS="${CONFIGS:-tiny small pretrain}"
export POCL_CACHE_DIR="${POCL_CACHE_DIR:-$PWD/.pocl-cache}"
export MOCOV3_KERNEL_CACHE_DIR="${MOCOV3_KERNEL_CACHE_DIR:-$PWD/.kernel-cache}"
mkdir -p "$POCL_CACHE_DIR"
unset OPENBLAS_CORETYPE OPENBLAS_L2_SIZE OPENBLAS_NUM_THREADS

swift build -c release --product mocov3-cl >/dev/null
BIN="$(swift build -c release --show-bin-path)/mocov3-cl"
RESULTS="$(mktemp)"
trap 'rm -f "$RESULTS"' EXIT

ceiling="$("$BIN" bench-gemm --devices host --cases none --repeats 5 | sed -n 's/^# ceiling: OpenBLAS sgemm 2048^3 = \([0-9.]*\) GFLOP\/s/\1/p')"
echo "# $(nproc) cores; OpenBLAS sgemm 2048^3 ceiling: $ceiling GFLOP/s"

have_torch=0
if python3 -c "import torch" 2>/dev/null; then have_torch=1; else echo "# torch is missing: skipping the PyTorch baseline (pip install torch)"; fi

for config in $CONFIGS; do
    case "$config" in
        tiny)  arch=vit_tiny;  C=192; depth=12; heads=3;  size=32;  patch=4;  batch=128; mlp=4096 ;;
        small) arch=vit_small; C=384; depth=12; heads=12; size=224; patch=16; batch=32;  mlp=4096 ;;
        # The model of `mocov3-cl pretrain`'s default run (PretrainConfiguration.defaultRun).
        pretrain) arch=vit_tiny; C=128; depth=4; heads=4; size=28; patch=7; batch=256; mlp=1024 ;;
        *) echo "unknown config '$config' (tiny, small, pretrain)" >&2; exit 2 ;;
    esac
    echo "# $arch/$patch @ ${size}px, batch $batch, $REPEAT timed steps"
    if [ "$have_torch" = 1 ]; then
        line="$(python3 tools/bench_torch_step.py --embed-dim "$C" --depth "$depth" --heads "$heads" \
            --image-size "$size" --patch-size "$patch" --batch-size "$batch" --steps "$REPEAT" \
            --moco-mlp-dim "$mlp" --moco-dim 256 --threads "$THREADS")"
        echo "$line"
        echo "$config torch $line" >>"$RESULTS"
    fi
    for device in $DEVICES; do
        ranks=()
        name="$device"
        if [ "$device" = host-1rank ]; then device=host; ranks=(--ranks 1); fi
        line="$("$BIN" step --device "$device" "${ranks[@]}" -a "$arch" --embed-dim "$C" \
            --depth "$depth" --heads "$heads" --image-size "$size" --patch-size "$patch" -b "$batch" --moco-dim 256 \
            --moco-mlp-dim "$mlp" --repeat "$REPEAT")"
        echo "$line"
        echo "$config $name $line" >>"$RESULTS"
    done
done

echo
echo "# images/s, ratio to PyTorch CPU ($THREADS threads), GFLOP/s and its fraction of the sgemm ceiling, CPU time / wall, peak RSS"
python3 - "$RESULTS" "$ceiling" <<'PY'
import json, sys
rows = []
for line in open(sys.argv[1]):
    config, name, payload = line.split(" ", 2)
    rows.append((config, name, json.loads(payload)))
ceiling = float(sys.argv[2])
torch = {c: r["images_per_second"] for c, n, r in rows if n == "torch"}
flop = {c: r["gflop_per_image"] for c, n, r in rows if "gflop_per_image" in r}
print(f"{'config':<10}{'backend':<12}{'img/s':>9}{'vs torch':>10}{'GFLOP/s':>9}{'% ceil':>8}{'CPU/wall':>10}{'peak MiB':>10}")
for config, name, r in rows:
    rate = r["images_per_second"]
    ratio = f"{rate / torch[config]:.2f}x" if config in torch else "n/a"
    gflops = rate * flop.get(config, float("nan"))
    print(f"{config:<10}{name:<12}{rate:>9.2f}{ratio:>10}{gflops:>9.1f}{100 * gflops / ceiling:>7.1f}%"
          f"{r.get('cpu_time_per_wall', float('nan')):>10.2f}{r.get('peak_rss_mib', float('nan')):>10.0f}")
cores = {r.get("openblas_core") for _, _, r in rows if r.get("openblas_core")}
print(f"# OpenBLAS core in use: {', '.join(sorted(cores)) or 'n/a'}")
PY
