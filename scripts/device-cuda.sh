#!/usr/bin/env bash
# The CUDA checks, on a GPU machine that has PyTorch 2.x (headers and CMake config included) but no package
# registry: the Debian -dev packages kclip builds against travel as .deb files (scripts/device-debs.sh downloads
# them) and are unpacked into a private prefix; kclip is built against that machine's torch; then the CUDA tests,
# a CUDA training run through the CLI, bench/bench_cuda.py and the rest of the Python suite run, logs under OUT_DIR.
#
#   scripts/device-cuda.sh DEB_DIR OUT_DIR [--quick]
set -uo pipefail
DEBS=$(realpath "$1") OUT=$(realpath "$2") QUICK=${3:-}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PY=/opt/torch/.venv/bin/python3
[ -x "$PY" ] || PY=$(command -v python3)
PREFIX=/tmp/kclip-prefix EXTRA=/tmp/kclip-extra-lib BUILD=/tmp/kclip-build
mkdir -p "$PREFIX" "$EXTRA" "$OUT"
log() { echo "== $(date +%T) $*"; }

log "machine: $(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader); $(nproc) cores"
$PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.is_available())"

for f in "$DEBS"/*.deb; do dpkg -x "$f" "$PREFIX"; done
LIBDIR=$PREFIX/usr/lib/x86_64-linux-gnu
# Shared libraries the system lacks come from the prefix; those it has stay the system's own.
for so in "$LIBDIR"/*.so.*; do
  name=$(basename "$so")
  ldconfig -p | grep -q "[[:space:]]$name " || cp -L "$so" "$EXTRA/"
done
log "from the prefix: $(ls "$EXTRA" | tr '\n' ' ')"
export LD_LIBRARY_PATH=$EXTRA${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
export PKG_CONFIG_SYSROOT_DIR=$PREFIX PKG_CONFIG_LIBDIR=$LIBDIR/pkgconfig:$PREFIX/usr/share/pkgconfig
command -v pkg-config >/dev/null || { ln -sf "$PREFIX/usr/bin/pkgconf" "$EXTRA/pkg-config"; export PATH=$PATH:$EXTRA; }

TORCH_CMAKE=$($PY -c "import torch; print(torch.utils.cmake_prefix_path)")
SITE=$($PY -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
PY_INCLUDE=$($PY -c "import sysconfig; print(sysconfig.get_paths()['include'])")
# torch 2.x wheels ship their own fmt headers, found before Debian's: use fmt header-only so no libfmt.so of
# another version is linked. Headers torch's CMake config may not name (NCCL's, CUDA's), then Debian's (gloo), each searched after torch's own.
AFTER=""
for d in "$SITE"/nvidia/*/include /usr/local/cuda/include "$PREFIX/usr/include"; do [ -d "$d" ] && AFTER="$AFTER -idirafter $d"; done
PYTHON_ON=ON
[ -f "$PY_INCLUDE/Python.h" ] || { log "no Python.h in $PY_INCLUDE: C++ library and CLI only"; PYTHON_ON=OFF; }
PYBIND=$($PY -m pybind11 --cmakedir 2>/dev/null || echo "")

# Debian's libz.so points at /lib/x86_64-linux-gnu/libz.so.1.2.13, which the GPU machine lacks: link its own.
ZLIB_SO=$(ldconfig -p | awk '/libz.so.1 .*x86-64/ {print $NF; exit}')
rm -f "$LIBDIR/libz.a" "$LIBDIR/libz.so"
log "configure"
cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DKCLIP_BUILD_TESTS=OFF -DKCLIP_BUILD_PYTHON=$PYTHON_ON \
  -DCMAKE_PREFIX_PATH="$TORCH_CMAKE;$PREFIX/usr" -DPython_EXECUTABLE="$PY" ${PYBIND:+-Dpybind11_DIR=$PYBIND} ${ZLIB_SO:+-DZLIB_LIBRARY=$ZLIB_SO -DZLIB_LIBRARY_RELEASE=$ZLIB_SO} \
  -DCMAKE_CXX_FLAGS="-DFMT_HEADER_ONLY $AFTER" -DCMAKE_INTERPROCEDURAL_OPTIMIZATION=OFF \
  -DCMAKE_EXE_LINKER_FLAGS="-Wl,-rpath-link,$EXTRA:$LIBDIR" -DCMAKE_SHARED_LINKER_FLAGS="-Wl,-rpath-link,$EXTRA:$LIBDIR" \
  -DCMAKE_MODULE_LINKER_FLAGS="-Wl,-rpath-link,$EXTRA:$LIBDIR" >"$OUT/configure.log" 2>&1 \
  || { tail -40 "$OUT/configure.log"; exit 1; }
grep -i "warn\|cuda\|nccl" "$OUT/configure.log" | head -12
log "build"
if ! make -C "$BUILD" -k -j"$(nproc)" >"$OUT/build.log" 2>&1; then
  grep -B2 -A6 -m 12 "error" "$OUT/build.log" | head -120
  log "build failed"
  exit 1
fi
log "built"
$PY -c "import pybind11; print('pip pybind11', pybind11.__version__)" 2>&1
grep -h "define PYBIND11_VERSION_M\|define PYBIND11_INTERNALS_VERSION" "$SITE"/torch/include/pybind11/detail/common.h "$SITE"/torch/include/pybind11/detail/internals.h 2>&1 | head -4
grep -o "isystem [^ ]*pybind11[^ ]*\|isystem [^ ]*torch/include " "$BUILD"/python/CMakeFiles/kclip_python.dir/flags.make | head -4
if ! (cd /tmp && PYTHONPATH=$BUILD/python $PY -X faulthandler -c "import kclip, torch; print('import kclip: ok', kclip.__file__)" 2>&1 | head -30); then :; fi
(cd /tmp && PYTHONPATH=$BUILD/python $PY -c "import kclip" >/dev/null 2>&1) || { log "import kclip fails: Python checks skipped"; PYTHON_ON=OFF; }

export KCLIP_BUILD_DIR=$BUILD PYTHONPATH=$BUILD/python PYTHONUNBUFFERED=1
# The CLIP BPE vocabulary travels beside the .debs (scripts/device-debs.sh copies it): that machine has no network.
[ -f "$DEBS/bpe_simple_vocab_16e6.txt.gz" ] && export KCLIP_CLIP_VOCAB=$DEBS/bpe_simple_vocab_16e6.txt.gz
if [ "$PYTHON_ON" = ON ]; then
  log "CUDA tests"
  (cd "$ROOT" && $PY -m pytest -q -rs -s tests/python/test_cuda.py 2>&1 | tee "$OUT/test_cuda.log" | tail -40)
fi

log "kclip train on CUDA (CLI, amp_bf16)"
DATA=/tmp/kclip-data
(cd "$ROOT/tests/python" && $PY -c "from data_fixtures import write_pairs; write_pairs('$DATA', 1024)")
"$BUILD/kclip" train --train-data "$DATA/pairs.csv" --batch-size 16 --max-steps 8 --precision amp_bf16 --device cuda \
  --alpha 0 --beta 0 --logs /tmp/kclip-logs --name cuda --no-progress --log-every-n-steps 4 >"$OUT/cli_train.log" 2>&1
head -12 "$OUT/cli_train.log"; tail -4 "$OUT/cli_train.log"
log "kclip train, ViT-B-32, batch 256, amp_bf16, 15 workers: end-to-end images/s from JPEGs"
"$BUILD/kclip" train --train-data "$DATA/pairs.csv" --model ViT-B-32 --batch-size 256 --max-steps 16 --precision amp_bf16 --alpha 0 --beta 0 \
  --device cuda --workers 15 --logs /tmp/kclip-logs --name vitb32 --no-progress --log-every-n-steps 4 >"$OUT/cli_vitb32.log" 2>&1
tail -5 "$OUT/cli_vitb32.log"; cp /tmp/kclip-logs/vitb32/metrics.jsonl "$OUT/vitb32_metrics.jsonl" 2>/dev/null
tail -2 /tmp/kclip-logs/vitb32/metrics.jsonl
if [ "$PYTHON_ON" = OFF ] && command -v cuda-gdb >/dev/null; then
  log "where import kclip crashes"
  (cd /tmp && PYTHONPATH=$BUILD/python timeout 120 cuda-gdb -batch -ex run -ex "bt 24" --args $PY -c "import kclip" 2>&1 | grep -v "^\[New Thread\|^\[Thread" | head -40)
fi
tail -1 /tmp/kclip-logs/cuda/metrics.jsonl

if [ "$PYTHON_ON" = ON ]; then
  log "bench/bench_cuda.py"
  (cd "$ROOT" && $PY bench/bench_cuda.py ${QUICK:+--quick} --out "$OUT/bench_cuda.json" 2>&1 | tee "$OUT/bench_cuda.log")
  log "the Python suite on this torch (../shared is not here: those tests skip)"
  (cd "$ROOT" && timeout 150 $PY -m pytest -q -n 8 -p no:cacheprovider tests/python --deselect tests/python/test_cuda.py \
     2>&1 | tee "$OUT/pytest.log" | tail -25)
fi
log "done"
