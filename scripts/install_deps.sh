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
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "install_deps: all ${#packages[@]} packages present"
  exit 0
fi
sudo=""
[ "$(id -u)" -ne 0 ] && sudo="sudo"
echo "install_deps: installing ${missing[*]}"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "install_deps: done"
