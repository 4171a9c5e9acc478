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
# Heads as the PyTorch script's defaults and the reference: moco_dim 256, moco_mlp_dim 4096;
# ViT-Tiny: C 192, depth 12, 3 heads; ViT-S: C 384, depth 12, 12 heads (MoCo v3's vits.py).
set -euo pipefail
cd "$(dirname "$0")/.."
command -v swift >/dev/null || export PATH="/opt/swift/usr/bin:$PATH"
REPEAT="${REPEAT:-3}"
THREADS="${THREADS:-2}"
DEVICES="${DEVICES:-host cpu0}"
CONFIGS="${CONFIGS:-tiny small}"
export POCL_CACHE_DIR="${POCL_CACHE_DIR:-$PWD/.pocl-cache}"
export MOCOV3_KERNEL_CACHE_DIR="${MOCOV3_KERNEL_CACHE_DIR:-$PWD/.kernel-cache}"
mkdir -p "$POCL_CACHE_DIR"

swift build -c release --product mocov3-cl >/dev/null
BIN="$(swift build -c release --show-bin-path)/mocov3-cl"
RESULTS="$(mktemp)"
trap 'rm -f "$RESULTS"' EXIT

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
            --moco-dim 256 --moco-mlp-dim "$mlp" --threads "$THREADS")"
        echo "$line"
        echo "$config torch $(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["images_per_second"])' "$line")" >>"$RESULTS"
    fi
    for device in $DEVICES; do
        line="$(OPENBLAS_NUM_THREADS="$THREADS" "$BIN" step --device "$device" -a "$arch" --embed-dim "$C" \
            --depth "$depth" --heads "$heads" --image-size "$size" --patch-size "$patch" -b "$batch" --moco-dim 256 \
            --moco-mlp-dim "$mlp" --repeat "$REPEAT")"
        echo "$line"
        echo "$config $device $(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["images_per_second"])' "$line")" >>"$RESULTS"
    done
done

echo
echo "# images/s and ratio to PyTorch CPU (higher is faster)"
python3 - "$RESULTS" <<'PY'
import sys
rows = [line.split() for line in open(sys.argv[1]) if line.strip()]
torch = {config: float(rate) for config, name, rate in rows if name == "torch"}
print(f"{'config':<10}{'backend':<10}{'img/s':>10}{'vs torch':>10}")
for config, name, rate in rows:
    ratio = f"{float(rate) / torch[config]:.2f}x" if config in torch else "n/a"
    print(f"{config:<10}{name:<10}{float(rate):>10.2f}{ratio:>10}")
PY
