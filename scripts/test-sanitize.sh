#!/usr/bin/env bash
# The C++ test suite, the CLI and a part of the Python suite built with AddressSanitizer + UndefinedBehavior-
# Sanitizer (GCC, -O1 -g): any report fails the run. LibTorch itself is not rebuilt, so its code is not checked,
# but every allocation is (ASan intercepts malloc). Not run here (docs/reliability.md, "Sanitizers"):
#   - tests that load Meta's tokenizer.model: sentencepiece is dlopen'ed with RTLD_DEEPBIND (its embedded
#     protobuf clashes with LibTorch's), which ASan cannot load (google/sanitizers#611);
#   - leak checking: LibTorch's process-lifetime singletons are never freed.
# The Python extension runs under ASan with the runtimes preloaded, as documented:
#   LD_PRELOAD="$(gcc -print-file-name=libasan.so) $(gcc -print-file-name=libubsan.so)" python3 ...
#
#   scripts/test-sanitize.sh [BUILD=build-sanitize]
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build-sanitize}
python=${PYTHON:-/usr/bin/python3}
if [ ! -f "$build/CMakeCache.txt" ]; then
  cmake -S . -B "$build" -DKCLIP_SANITIZE=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -g" -DPython_EXECUTABLE="$python" >/dev/null
fi
cmake --build "$build" -j "$(nproc)" --target kclip_tests kclip_cli kclip_python

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=0:abort_on_error=1:detect_stack_use_after_return=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
sentencepiece="*sentencepiece*,teacher: captions end to end*"  # the cases that load tokenizer.model
echo "== C++ tests under ASan + UBSan"
"$build/tests/kclip_tests" --test-case-exclude="$sentencepiece"

echo "== Python tests under ASan + UBSan (the extension and the CLI built with sanitizers)"
preload="$(gcc -print-file-name=libasan.so) $(gcc -print-file-name=libubsan.so)"
# The Python interpreter's own allocations are not kclip's: pymalloc off so ASan sees every object.
PYTHONMALLOC=malloc LD_PRELOAD="$preload" PYTHONPATH="$PWD/$build/python" KCLIP_BUILD_DIR="$PWD/$build" \
  "$python" -m pytest -q -x -p no:cacheprovider tests/python/test_safetensors.py tests/python/test_clip_tokenizer.py \
  tests/python/test_image_transform.py tests/python/test_cluster.py tests/python/test_losses.py \
  tests/python/test_data.py tests/python/test_faults.py tests/python/test_clip.py \
  -k "not sentencepiece and not tokenizer_model"
echo "test-sanitize: clean"
