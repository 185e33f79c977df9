#!/usr/bin/env bash
# The README's Python-package route, offline: a venv that sees Debian's torch, then
# `pip install --no-build-isolation .`, then import kclip from outside the source tree and use it.
#   usage: pip_install.sh SOURCE_DIR [PYTHON]
set -euo pipefail
src=$1 python=${2:-/usr/bin/python3}
unset PYTHONPATH  # test the installed package, not a build tree that make puts on the path
export KCLIP_SHARED=${KCLIP_SHARED:-$(cd "$src/.." && pwd)/shared}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$python" -m venv --system-site-packages "$work/venv"
# Build from a copy so the test never touches the source tree's build directories.
tar -C "$src" --exclude=./build --exclude=./build-pip --exclude=./.git -cf - . | (mkdir "$work/src" && tar -C "$work/src" -xf -)
"$work/venv/bin/pip" install --no-build-isolation --no-index -q "$work/src"
cd "$work"
"$work/venv/bin/python" - <<'PY'
import kclip, torch
assert kclip.__file__.startswith(__import__("sys").prefix), kclip.__file__
kclip.save_safetensors("t.safetensors", {"w": torch.arange(6.0).reshape(2, 3)}, {"by": "pip"})
assert torch.equal(kclip.load_safetensors("t.safetensors")["w"], torch.arange(6.0).reshape(2, 3))
import os, pathlib
tokenizer = pathlib.Path(os.environ.get("KCLIP_SHARED", "")) / "tokenizers/llama2/tokenizer.model"
if tokenizer.is_file():  # the SentencePiece shim was installed beside _C
    assert kclip.LlamaTokenizer(str(tokenizer)).encode("a photo of a cat.") == [263, 15373, 310, 263, 6635, 29889]
print("pip-installed kclip", kclip.__version__, "works from", kclip.__file__)
PY
