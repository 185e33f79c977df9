#!/usr/bin/env bash
# Installs the built kclip into a temporary prefix, builds examples/cpp against it with find_package(kclip) as an
# outside application would, and runs it.  usage: build_example.sh BUILD_DIR SOURCE_DIR
set -euo pipefail
build=$1 src=$2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cmake --install "$build" --prefix "$work/prefix" >/dev/null
launcher=()
command -v ccache >/dev/null && launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
cmake -S "$src/examples/cpp" -B "$work/build" -DCMAKE_PREFIX_PATH="$work/prefix" -DCMAKE_BUILD_TYPE=Release \
  "${launcher[@]}" >/dev/null
cmake --build "$work/build" -j 2 >/dev/null
out=$("$work/build/kclip_example")
echo "$out"
grep -q "outputs match" <<<"$out"
grep -q "CLIP pixels \[3, 32, 32\]" <<<"$out"
grep -q "Trainer: 3 steps" <<<"$out"
grep -q "Knowledge-CLIP on Fashion-MNIST" <<<"$out" || ! [ -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]
