#!/usr/bin/env bash
# kill -9 anywhere (tools/kill_harness.py): pretrain killed at 10 seeded random moments, including
# during a checkpoint write and during an epoch's evaluation, resumed with --resume auto each
# time, must end bit-identical to an uninterrupted run. Run by scripts/test.sh after the Swift
# tests, on the debug binary they built; on its own: scripts/test-kill.sh [SEED]
set -euo pipefail
cd "$(dirname "$0")/.."
command -v swift >/dev/null || export PATH="/opt/swift/usr/bin:$PATH"
swift build --product mocov3-cl >/dev/null
binary="$(swift build --show-bin-path)/mocov3-cl"
result="$(python3 tools/kill_harness.py --binary "$binary" --kills 10 --seed "${1:-1}")" || { echo "$result"; exit 1; }
echo "test-kill: $result"
