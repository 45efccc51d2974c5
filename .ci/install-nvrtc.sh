#!/usr/bin/env bash
# Installs NVRTC and the CUDA headers from NVIDIA's pip wheels into target/nvrtc (no root, no
# toolkit, no GPU needed), so tests/cuda_compile.rs can compile every kernel for sm_90.
# Idempotent: a second run finds the libraries and only prints the exports.
# Usage:  eval "$(.ci/install-nvrtc.sh)"   then   DNVS_REQUIRE_NVRTC=1 cargo test --test cuda_compile
# Pinned to CUDA 13.0, the version of the driver (580) on the lent H100s: a newer NVRTC would
# emit code an older driver refuses.
set -euo pipefail
cd "$(dirname "$0")/.."
dest="${DNVS_NVRTC_DIR:-$PWD/target/nvrtc}"
lib="$dest/nvidia/cu13/lib"
inc="$dest/nvidia/cu13/include"
if [ ! -e "$lib/libnvrtc.so.13" ] || [ ! -e "$inc/cuda_bf16.h" ]; then
    py="$(command -v python3 || command -v python)"
    "$py" -m pip install --quiet --disable-pip-version-check --no-deps --target "$dest" \
        "nvidia-cuda-nvrtc==13.0.*" "nvidia-cuda-runtime==13.0.*" >&2
fi
[ -e "$lib/libnvrtc.so.13" ] || { echo "install-nvrtc: libnvrtc.so.13 not found in $lib" >&2; exit 1; }
echo "export LD_LIBRARY_PATH=\"$lib\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}\""
# Not CUDA_HOME: changing it makes cudarc's build script rerun (a minute of rebuild).
echo "export DNVS_CUDA_INCLUDE=\"$inc\""
