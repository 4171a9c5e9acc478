#!/usr/bin/env bash
# Long fuzzing runs of every reader of untrusted bytes (the suites *FuzzTests: safetensors, IDX
# plain and gzip, CIFAR binary, PNG, JPEG, pretrain checkpoints with their configuration JSON,
# metrics.jsonl and config.json in the report). The test suite runs them with small budgets; this
# raises the budget and varies the seed. Each input is written to $CRASH_DIR/<parser>.current
# before it runs, so the one that crashed the process is kept there.
#
#   tools/fuzz.sh                       # 100000 inputs per parser, seed 1
#   ITERATIONS=1000000 SEED=7 tools/fuzz.sh
#   FILTER=SafetensorsFuzzTests tools/fuzz.sh
set -euo pipefail
cd "$(dirname "$0")/.."
command -v swift >/dev/null || export PATH="/opt/swift/usr/bin:$PATH"
export MOCOV3_FUZZ_ITERATIONS="${ITERATIONS:-100000}"
export MOCOV3_FUZZ_SEED="${SEED:-1}"
export MOCOV3_FUZZ_CRASH_DIR="${CRASH_DIR:-$PWD/fuzz-crashes}"
mkdir -p "$MOCOV3_FUZZ_CRASH_DIR"
swift build --build-tests >/dev/null
echo "fuzz: $MOCOV3_FUZZ_ITERATIONS inputs per parser, seed $MOCOV3_FUZZ_SEED; inputs in flight in $MOCOV3_FUZZ_CRASH_DIR"
if swift test --disable-xctest --skip-build --filter "${FILTER:-FuzzTests}" 2>&1 | grep -E "^fuzz |✘|error|Test run"; then :; fi
status=${PIPESTATUS[0]}
[ "$status" = 0 ] && rm -f "$MOCOV3_FUZZ_CRASH_DIR"/*.current
exit "$status"
