#!/usr/bin/env bash
# Installs every package ZeroShard needs on a fresh Debian machine. Idempotent: installs only what is missing.
# The CUDA toolkit (with NCCL) comes with the machine at /usr/local/cuda and is picked up when present.
set -euo pipefail

packages=(
  build-essential cmake pkg-config git python3
  libgloo-dev          # CPU collectives
  libyaml-cpp-dev      # configuration
  libcli11-dev         # command lines
  libspdlog-dev libfmt-dev
  nlohmann-json3-dev
  libgtest-dev libgmock-dev
  libxxhash-dev        # checkpoint checksums
  libopenblas-dev      # CPU GEMMs in the training benchmark and the example model
  clang libclang-rt-dev # libFuzzer targets (tests/fuzz)
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "install_deps: all ${#packages[@]} packages present"
else
  sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  echo "install_deps: installing ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  echo "install_deps: done"
fi

# Optional, from PyPI when it is reachable: Python's safetensors, with which a test reads back the files
# zsckpt exports. Without it that one check is skipped (and says so).
if ! python3 -c 'import safetensors, numpy' 2>/dev/null; then
  timeout 120 python3 -m pip install --quiet --disable-pip-version-check safetensors numpy 2>/dev/null ||
    echo "install_deps: PyPI not reachable; the Python safetensors check will be skipped"
fi
