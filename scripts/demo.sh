#!/usr/bin/env bash
# `make demo`: the main job. `kclip run` four times on Fashion-MNIST — plain CLIP, + distillation, + concepts, all
# three terms — with stories15M as the teacher and a tiny student; prints the table (scripts/demo.py).
set -euo pipefail
build=${1:-build}
export PYTHONPATH="$build/python${PYTHONPATH:+:$PYTHONPATH}"
shared=${KCLIP_SHARED:-../shared}
teacher_dir=""
if [ ! -f "$shared/models/stories15M/stories15M.bin" ]; then
  teacher_dir=$(scripts/fetch-teacher.sh) || echo "demo: stories15M could not be fetched" >&2
fi
exec "${PYTHON:-/usr/bin/python3}" scripts/demo.py --out "$build/demo/runs" --shared "$shared" --teacher-dir "$teacher_dir" "${@:2}"
