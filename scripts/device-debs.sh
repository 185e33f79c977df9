#!/usr/bin/env bash
# Downloads (does not install) the Debian packages that scripts/device-cuda.sh unpacks on a GPU machine without a
# package registry: kclip's -dev dependencies other than LibTorch, and the runtime libraries they link.
#   scripts/device-debs.sh DIR
set -euo pipefail
mkdir -p "$1" && cd "$1"
apt-get download libfmt-dev libfmt9 nlohmann-json3-dev libeigen3-dev libsentencepiece-dev libsentencepiece0 \
  libutf8proc-dev libutf8proc2 libstb-dev libstb0 libjpeg62-turbo-dev libjpeg62-turbo libwebp-dev libwebp7 libwebpdemux2 libwebpmux3 \
  libarchive-dev libarchive13 libnettle8 libxml2 libicu72 liblz4-1 libzstd1 libacl1 libbz2-1.0 liblzma5 \
  zlib1g-dev zlib1g libgloo-dev pybind11-dev pkgconf pkgconf-bin libpkgconf3

# The CLIP BPE vocabulary (the GPU machine cannot download it): from kclip's cache, filled by scripts/fetch-assets.sh.
vocab=${KCLIP_CLIP_VOCAB:-$HOME/.cache/kclip/bpe_simple_vocab_16e6.txt.gz}
[ -f "$vocab" ] && cp "$vocab" "$PWD/bpe_simple_vocab_16e6.txt.gz"
ls "$PWD"
