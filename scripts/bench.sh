#!/usr/bin/env bash
# `make bench`: every benchmark in bench/, each printing kclip's figures beside its reference peer's.
set -euo pipefail
build=${1:-build}
export PYTHONPATH="$build/python${PYTHONPATH:+:$PYTHONPATH}"
for bench in bench/bench_*.py; do
  echo "== $bench"
  /usr/bin/python3 "$bench"
  echo
done
