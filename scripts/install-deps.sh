#!/usr/bin/env bash
# Installs every Debian package kclip needs, and nothing when all are present (idempotent, quick to re-run).
# Runs apt-get as root, or through sudo. `make build/test/demo/bench` call it first; packages given as arguments
# are installed too (make fuzz and make test-sanitize add clang and its sanitizer/libFuzzer runtimes).
set -euo pipefail

packages=(
  # toolchain
  g++ cmake make ccache
  # LibTorch (C++ and Python share one libtorch), OpenBLAS for it (reference BLAS is ~35x slower)
  libtorch-dev python3-torch libopenblas0-pthread libgloo-dev
  # C++ libraries
  pybind11-dev libeigen3-dev libsentencepiece-dev libfmt-dev doctest-dev libstb-dev nlohmann-json3-dev
  libutf8proc-dev zlib1g-dev
  # training data: JPEG (libjpeg-turbo, as Pillow) and WebP images, tar shards (webdataset)
  libjpeg62-turbo-dev libwebp-dev libarchive-dev
  # Python side: headers for the extension, tests, packaging (pip install . in a venv)
  python3-dev python3-pybind11 python3-numpy python3-pytest python3-pip python3-setuptools python3-wheel python3-venv
  # reference peers for tests and benchmarks: scikit-learn (K-means, metrics), faiss, Fashion-MNIST
  python3-sklearn python3-faiss dataset-fashion-mnist
  # the training benchmark's reference (torchvision transforms) and `kclip plot`
  python3-torchvision python3-matplotlib
  # an independent CLIP tokenizer for the differential tests uses the `regex` package
  python3-regex
  # the example notebook, executed by the test suite
  python3-nbclient python3-ipykernel
  # Pillow: the reference for image resizing in the preprocessing tests
  python3-pil
  "$@"
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

echo "install-deps: installing ${missing[*]}"
sudo=()
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "install-deps: need root (or sudo) to apt-get install ${missing[*]}" >&2; exit 1; }
  sudo=(sudo)
fi
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -qq
"${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
