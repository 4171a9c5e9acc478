#!/usr/bin/env bash
# Installs everything mocov3-cl needs on Debian 12 and builds the release binary.
# Idempotent: packages already present are not reinstalled, and the build is incremental.
#
#   sudo scripts/setup.sh            # then: .build/release/mocov3-cl pretrain --device host
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(
  pocl-opencl-icd ocl-icd-opencl-dev opencl-headers clinfo   # OpenCL loader, headers, PoCL CPU driver
  libclblast-dev                                             # CLBlast GEMMs for GPUs
  libopenblas-dev                                            # host backend BLAS
  dataset-fashion-mnist                                      # the default pre-training data
  libturbojpeg0-dev libpng-dev zlib1g-dev                    # image folders (JPEG, PNG), gzip IDX files
  binutils python3                                           # scripts/bundle.sh (strip, objdump) and its test
)

missing=()
for package in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  sudo_cmd=()
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || { echo "setup: run as root (or install sudo) to install packages" >&2; exit 1; }
    sudo_cmd=(sudo)
  fi
  "${sudo_cmd[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
else
  echo "setup: system packages already installed"
fi

if ! command -v swift >/dev/null; then
  if [ -x /opt/swift/usr/bin/swift ]; then export PATH="/opt/swift/usr/bin:$PATH"
  else echo "setup: no Swift toolchain found; install Swift 6.x from swift.org and re-run" >&2; exit 1; fi
fi

swift build -c release --product mocov3-cl
echo "setup: built $(pwd)/.build/release/mocov3-cl"
