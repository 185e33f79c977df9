#!/usr/bin/env bash
# ThreadSanitizer over kclip's own threads (GCC, -O1 -g): the C++ tests of the data loader (worker threads ahead of
# the step), of image batches (decoding threads) and of the trainer (both, and AdamW's pass on every core), with
# the embedding cache's and K-means' tests. LibTorch is not
# rebuilt: its code is not instrumented, and with one intra-op thread (kclip's default beside a pthread BLAS) its
# OpenMP pool stays idle. OpenBLAS's worker handoff is invisible to TSan and suppressed (tests/tsan-suppressions.txt);
# any other report fails the run. Functions with target_clones get one copy here (src/core/target_clones.h).
#
#   scripts/test-tsan.sh [BUILD=build-tsan]
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build-tsan}
if [ ! -f "$build/CMakeCache.txt" ]; then
  cmake -S . -B "$build" -DKCLIP_TSAN=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -g" -DKCLIP_BUILD_CLI=OFF >/dev/null
fi
cmake --build "$build" -j "$(nproc)" --target kclip_tests

export TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1 suppressions=$PWD/tests/tsan-suppressions.txt ${TSAN_OPTIONS:-}"
# The cases that start threads, and the embedding cache's (its tests read the tokenizer with kclip's own code;
# those loading Meta's tokenizer.model are left out: sentencepiece is dlopen'ed with RTLD_DEEPBIND, which the
# sanitizer runtimes cannot load).
cases="data:*,image transform:*,embedding cache:*,cluster: *,train:*"
echo "== C++ tests under ThreadSanitizer: $cases"
"$build/tests/kclip_tests" --test-case="$cases"
echo "test-tsan: clean"
