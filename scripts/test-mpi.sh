#!/usr/bin/env bash
# Data parallel under a real Open MPI launcher (tools/mpi_check.py): `mpirun -np 2 pretrain`
# against one process at the same global batch, resumes 2 → 1 and 1 → 2 processes, and the
# failures that must end the job with a message (-b not divisible, a rank that cannot read its
# data, a rank killed, ranks started with other flags). Run by scripts/test.sh after the Swift
# tests, on the debug binary they built; skipped (and said so) where Open MPI is not installed.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v swift >/dev/null || export PATH="/opt/swift/usr/bin:$PATH"
if ! command -v mpirun >/dev/null; then
    echo "test-mpi: skipped: no mpirun (apt-get install openmpi-bin libopenmpi-dev)"
    exit 0
fi
swift build --product mocov3-cl >/dev/null
binary="$(swift build --show-bin-path)/mocov3-cl"
result="$(python3 tools/mpi_check.py --binary "$binary")" || { echo "$result"; exit 1; }
echo "test-mpi: $result"
