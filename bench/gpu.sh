#!/usr/bin/env bash
# The GPU check, run from the unpacked bundle (scripts/bundle.sh) on a machine with a GPU, no
# Swift and no package registry; ≤ 10 minutes; everything goes to one results file:
#
#   1. the machine: `mocov3-cl devices`, nvidia-smi, glibc;
#   2. `selftest --device gpu0` (default GEMM provider), then the GEMMs and MoCo steps again with
#      our own GEMM kernels (--gemm kernel);
#   3. the kernel rates (bench-ops) next to the device's own ceilings: its buffer copy and CLBlast
#      sgemm 4096³; the ViT GEMMs (bench-gemm) with both providers next to the same sgemm ceiling;
#   4. the whole MoCo v3 step (`mocov3-cl step --repeat`) for ViT-S/16 @ 224 batch 64 and
#      ViT-B/16 @ 224 batch 32;
#   5. PyTorch on CUDA on the same configurations (tools/bench_torch_step.py, float32, and with
#      TF32), when `torch` with CUDA is importable; then a ratio table;
#   6. where the first configuration's step goes: `step --profile`, each kernel's device time
#      (a separate run, so that the timed steps above carry no profiling events).
#
#   tar xzf mocov3-cl-*-linux-x86_64.tar.gz && cd mocov3-cl-*-linux-x86_64 && bench/gpu.sh
#   DEVICE=gpu1 OUT=h200.txt bench/gpu.sh
#   bench/gpu.sh --dry-run        # the same path on cpu0 (PoCL) at toy sizes, with the GPU-class
#                                 # kernels and CLBlast in selftest, in a few minutes
set -uo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
if [ ! -x "$root/bin/mocov3-cl" ] || [ ! -x "$root/mocov3-cl" ]; then
    echo "gpu.sh runs from the bundle: scripts/bundle.sh, unpack dist/mocov3-cl-*.tar.gz, run its bench/gpu.sh" >&2
    exit 2
fi
dry=0
[ "${1:-}" = "--dry-run" ] && dry=1
moco="$root/mocov3-cl"       # the launcher: the bundled libraries for it alone, not for python
if [ "$dry" = 1 ]; then
    DEVICE="${DEVICE:-cpu0}"; REPEAT="${REPEAT:-1}"; SIDE=512
    # label|arch|image side|patch|batch, at toy sizes.
    CONFIGS=("vit_tiny/8@32 b8|vit_tiny|32|8|8" "vit_tiny/16@32 b4|vit_tiny|32|16|4")
    # On cpu0 the GPU-class kernels and CLBlast, as a GPU runs them (PoCL's own default is CPU-class).
    SELFTEST_FLAGS=(--quick --kernels gpu --gemm clblast); OPS_CASES=(--cases gelu); GEMM_CASES=(--cases tiny.qkv.fwd --tokens 520)
    TORCH_DEVICE=cpu
else
    DEVICE="${DEVICE:-gpu0}"; REPEAT="${REPEAT:-5}"; SIDE=4096
    CONFIGS=("vit_small/16@224 b64|vit_small|224|16|64" "vit_base/16@224 b32|vit_base|224|16|32")
    SELFTEST_FLAGS=(); OPS_CASES=(); GEMM_CASES=(); TORCH_DEVICE=cuda
fi
OUT="${OUT:-$PWD/gpu-results-$(hostname)-$(date -u +%Y%m%d-%H%M%S).txt}"
exec > >(tee "$OUT") 2>&1
failures=0
# Runs a stage with a time limit; a failure is recorded and the next stage runs.
stage() {
    local limit="$1"; shift
    echo; echo "## $(date -u +%H:%M:%S) $*"
    timeout "$limit" "$@"
    local status=$?
    if [ "$status" -ne 0 ]; then
        failures=$((failures + 1))
        local why="exit $status"
        [ "$status" = 124 ] && why="timed out after $limit s"
        echo "## FAILED ($why): $*"
    fi
    return 0
}

echo "# bench/gpu.sh $( [ "$dry" = 1 ] && echo "--dry-run " )on $(hostname), $(date -u +%Y-%m-%dT%H:%M:%SZ), device $DEVICE"
echo "# $("$moco" --version 2>/dev/null | sed 's/^/mocov3-cl /'); $(ldd --version | head -1)"
command -v nvidia-smi >/dev/null && stage 30 nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
stage 60 "$moco" devices
stage 240 "$moco" selftest --device "$DEVICE" "${SELFTEST_FLAGS[@]}"
stage 120 "$moco" selftest --device "$DEVICE" --ops "gemm,moco step" "${SELFTEST_FLAGS[@]}" --gemm kernel
stage 150 "$moco" bench-ops --devices "$DEVICE" --repeats "$REPEAT" --ceiling-side "$SIDE" "${OPS_CASES[@]}"
stage 150 "$moco" bench-gemm --devices "$DEVICE" --providers clblast,kernel --repeats "$REPEAT" \
    --ceiling-side "$SIDE" "${GEMM_CASES[@]}"

rates="$(mktemp)"
trap 'rm -f "$rates"' EXIT
have_torch=0
if python3 -c "import torch, sys; sys.exit(0 if '$TORCH_DEVICE' == 'cpu' or torch.cuda.is_available() else 1)" 2>/dev/null; then
    have_torch=1
else
    echo; echo "# torch with CUDA is not importable here: no PyTorch baseline (pip install torch)"
fi
for config in "${CONFIGS[@]}"; do
    IFS='|' read -r label arch size patch batch <<<"$config"
    case "$arch" in
        vit_tiny) width=192; depth=12; heads=3 ;;
        vit_small) width=384; depth=12; heads=12 ;;
        vit_base) width=768; depth=12; heads=12 ;;
    esac
    echo; echo "## $(date -u +%H:%M:%S) step $label on $DEVICE, $REPEAT timed steps"
    line="$(timeout 240 "$moco" step --device "$DEVICE" -a "$arch" --image-size "$size" --patch-size "$patch" \
        -b "$batch" --moco-dim 256 --moco-mlp-dim 4096 --repeat "$REPEAT")" || { failures=$((failures + 1)); echo "## FAILED: step $label"; }
    echo "$line"
    [ -n "$line" ] && echo "$label|mocov3-cl $DEVICE|$line" >>"$rates"
    if [ "$have_torch" = 1 ]; then
        for tf32 in "" --tf32; do
            [ "$TORCH_DEVICE" = cpu ] && [ -n "$tf32" ] && continue
            line="$(timeout 240 python3 "$root/tools/bench_torch_step.py" --device "$TORCH_DEVICE" $tf32 \
                --embed-dim "$width" --depth "$depth" --heads "$heads" --image-size "$size" --patch-size "$patch" \
                --batch-size "$batch" --steps "$REPEAT" --moco-dim 256 --moco-mlp-dim 4096 --threads "$(nproc)")" \
                || { failures=$((failures + 1)); echo "## FAILED: torch $label $tf32"; }
            echo "$line"
            [ -n "$line" ] && echo "$label|torch $TORCH_DEVICE${tf32:+ tf32}|$line" >>"$rates"
        done
    fi
done

IFS='|' read -r label arch size patch batch <<<"${CONFIGS[0]}"
stage 240 "$moco" step --device "$DEVICE" -a "$arch" --image-size "$size" --patch-size "$patch" -b "$batch" \
    --moco-dim 256 --moco-mlp-dim 4096 --repeat "$REPEAT" --profile

echo; echo "# images/s (an image is one sample of the batch, both views), ratio to PyTorch float32"
python3 - "$rates" <<'PY' || awk -F'|' '{ print $1 "  " $2 "  " $3 }' "$rates"
import json, sys
rows = [line.rstrip("\n").split("|", 2) for line in open(sys.argv[1]) if line.strip()]
base = {label: json.loads(text)["images_per_second"] for label, name, text in rows
        if name.startswith("torch") and "tf32" not in name}
print(f"{'config':<22}{'engine':<22}{'img/s':>10}{'vs torch':>10}")
for label, name, text in rows:
    rate = json.loads(text)["images_per_second"]
    ratio = f"{rate / base[label]:.2f}x" if label in base else "n/a"
    print(f"{label:<22}{name:<22}{rate:>10.1f}{ratio:>10}")
PY
echo; echo "# $failures stage(s) failed; results in $OUT"
[ "$failures" = 0 ]
