#!/usr/bin/env bash
# The reproduction study (scripts/study.py): `scripts/study.sh` for the full one (3 seeds, 10 epochs; docs/RESULTS.md),
# `scripts/study.sh --quick` for one seed and 2 epochs (CI). Other arguments go to study.py.
set -euo pipefail
build=${BUILD:-build}
export PYTHONPATH="$build/python${PYTHONPATH:+:$PYTHONPATH}"
exec "${PYTHON:-/usr/bin/python3}" scripts/study.py --out "$build/study" "$@"
