#!/usr/bin/env bash
# Soak: a long `pretrain` of a tiny model (ITERATIONS, default 10⁴) sampling the process's
# resident memory (VmRSS) and open file descriptors every INTERVAL seconds; both must stay flat.
# A script, not a test. Writes SOAK_DIR/samples.csv and prints one JSON summary line: the first
# sample after warm-up (10 % of the run), the last, the largest, and the growth from the median of
# the first quarter to that of the last; exits 1 if RSS grows by more than 10 % or the fd count at all.
#
#   tools/soak.sh [BINARY]            # default: the bundle's mocov3-cl in dist/, else .build/release
#   ITERATIONS=3000 INTERVAL=2 tools/soak.sh
set -euo pipefail
cd "$(dirname "$0")/.."
ITERATIONS="${ITERATIONS:-10000}"
INTERVAL="${INTERVAL:-5}"
SOAK_DIR="${SOAK_DIR:-$(mktemp -d /tmp/soak-XXXXXX)}"
binary="${1:-$(ls -d dist/mocov3-cl-*-linux-*/mocov3-cl 2>/dev/null | head -1 || true)}"
binary="${binary:-.build/release/mocov3-cl}"
[ -x "$binary" ] || { echo "soak: no binary at $binary (scripts/bundle.sh or scripts/setup.sh first)" >&2; exit 2; }

# 2048 training images at batch 32: 64 iterations per epoch; the kNN evaluation every 20 epochs,
# a mid-epoch save every 50 iterations (keeping 2), so checkpoints are written and deleted all along.
python3 tools/tiny_cifar.py "$SOAK_DIR/data" --train 2048 --test 256
epochs=$(( (ITERATIONS + 63) / 64 ))
"$binary" pretrain --device host --data "$SOAK_DIR/data" --output "$SOAK_DIR/run" --epochs "$epochs" -b 32 \
    --image-size 32 --patch-size 8 --embed-dim 32 --depth 1 --heads 2 --moco-mlp-dim 64 --moco-dim 32 \
    --knn-bank 256 --knn-k 20 --eval-every 20 --save-every 50 --keep 2 -j 2 -p 500 >"$SOAK_DIR/pretrain.log" 2>&1 &
pid=$!
echo "seconds,rss_kib,fds" >"$SOAK_DIR/samples.csv"
start=$(date +%s)
while kill -0 "$pid" 2>/dev/null; do
    # The launcher execs the binary, so $pid is the trainer itself.
    rss=$(awk '/^VmRSS:/ { print $2 }' "/proc/$pid/status" 2>/dev/null || true)
    fds=$(ls "/proc/$pid/fd" 2>/dev/null | wc -l)
    [ -n "$rss" ] && echo "$(( $(date +%s) - start )),$rss,$fds" >>"$SOAK_DIR/samples.csv"
    sleep "$INTERVAL"
done
wait "$pid" || { tail -20 "$SOAK_DIR/pretrain.log"; echo "soak: pretrain failed" >&2; exit 1; }
python3 - "$SOAK_DIR" "$ITERATIONS" <<'PY'
import csv, json, sys
folder, iterations = sys.argv[1], int(sys.argv[2])
rows = [(int(r["seconds"]), int(r["rss_kib"]), int(r["fds"])) for r in csv.DictReader(open(f"{folder}/samples.csv"))]
import statistics
warm = rows[max(1, len(rows) // 10):] or rows
quarter = max(1, len(warm) // 4)
head, tail = warm[:quarter], warm[-quarter:]
first, last = warm[0], warm[-1]
# Medians of the first and last quarters: a sample that lands in a checkpoint write (one more fd,
# a buffer) is not growth.
rss_growth = statistics.median(r[1] for r in tail) / statistics.median(r[1] for r in head) - 1
fd_growth = statistics.median(r[2] for r in tail) - statistics.median(r[2] for r in head)
summary = {"iterations": iterations, "seconds": last[0], "samples": len(rows),
           "rss_mib": {"after_warmup": round(first[1] / 1024, 1), "last": round(last[1] / 1024, 1),
                       "max": round(max(r[1] for r in warm) / 1024, 1)},
           "rss_growth": round(rss_growth, 4),
           "fds": {"after_warmup": first[2], "last": last[2], "max": max(r[2] for r in warm)},
           "flat": rss_growth <= 0.10 and fd_growth <= 0, "folder": folder}
print(json.dumps(summary))
sys.exit(0 if summary["flat"] else 1)
PY
