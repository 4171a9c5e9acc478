#!/usr/bin/env bash
# Runs the whole test suite (host backend, and every OpenCL test on PoCL when an OpenCL device
# exists), then the kill -9 harness and the bundle test. PoCL's compiled-kernel cache lives in
# the checkout (.pocl-cache, git-ignored) so a second run does not recompile CLBlast (15–30 s
# per routine on a cold cache).
set -euo pipefail
cd "$(dirname "$0")/.."
command -v swift >/dev/null || export PATH="/opt/swift/usr/bin:$PATH"
export POCL_CACHE_DIR="${POCL_CACHE_DIR:-$PWD/.pocl-cache}"
# Our own program-binary cache, likewise kept in the checkout for tests.
export MOCOV3_KERNEL_CACHE_DIR="${MOCOV3_KERNEL_CACHE_DIR:-$PWD/.kernel-cache}"
mkdir -p "$POCL_CACHE_DIR"
# Every test is a Swift Testing test; XCTest would only report "0 tests".
swift test --disable-xctest "$@"
# Then kill -9 at random moments (scripts/test-kill.sh), data parallel under mpirun
# (scripts/test-mpi.sh) and the self-contained bundle as a user runs it (scripts/test-bundle.sh);
# a filtered run (`scripts/test.sh --filter X`) skips them.
if [ $# -eq 0 ]; then
    scripts/test-kill.sh
    scripts/test-mpi.sh
    scripts/test-bundle.sh
fi
