#!/usr/bin/env bash
# Builds kclip's libFuzzer harnesses (tests/fuzz/, clang, ASan + UBSan) and runs each for SECONDS over its corpus:
# the committed seeds in tests/fuzz/corpus/NAME plus what earlier runs found in BUILD/corpus/NAME. A crash, hang
# (> 1 s per input) or out-of-memory (> 512 MiB in one allocation, > 2 GiB in all) stops that harness and leaves
# its input in BUILD/findings/NAME/; the script then fails. `SECONDS=0` only replays the corpus (the CI smoke).
#
#   scripts/fuzz.sh [BUILD=build-fuzz] [SECONDS=60] [HARNESS...]
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build-fuzz}
seconds=${2:-60}
shift $(( $# < 2 ? $# : 2 ))
scripts/install-deps.sh clang libclang-rt-14-dev

if [ ! -f "$build/CMakeCache.txt" ]; then
  CC=clang CXX=clang++ cmake -S . -B "$build" -DKCLIP_FUZZ=ON -DKCLIP_BUILD_PYTHON=OFF -DKCLIP_BUILD_TESTS=OFF \
    -DKCLIP_BUILD_CLI=OFF -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -g" >/dev/null
fi
cmake --build "$build" -j "$(nproc)"

# Reference files some harnesses parse alongside the fuzzed input (real vocabularies and tokenizers).
shared=${KCLIP_SHARED:-../shared}
cache=${XDG_CACHE_HOME:-$HOME/.cache}/kclip
first_of() { for f in "$@"; do [ -f "$f" ] && { echo "$f"; return; }; done; echo ""; }
export KCLIP_CLIP_VOCAB=${KCLIP_CLIP_VOCAB:-$(first_of "$cache/bpe_simple_vocab_16e6.txt.gz" "$shared/tokenizers/clip/bpe_simple_vocab_16e6.txt.gz")}
# llama2.c's real tokenizer.bin when fetched, else the made-up one of the seed corpus.
export KCLIP_LLAMA_TOKENIZER_BIN=${KCLIP_LLAMA_TOKENIZER_BIN:-$(first_of "$cache/stories15M/tokenizer.bin" "$shared/models/stories15M/tokenizer.bin" tests/fuzz/corpus/llama2c_vocab/tokenizer.bin)}
# LibTorch's process-lifetime singletons are not freed at exit: leak reports would be theirs.
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=0:allocator_may_return_null=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

harnesses=("$@")
if [ ${#harnesses[@]} -eq 0 ]; then
  for f in "$build"/fuzz/fuzz_*; do harnesses+=("$(basename "$f" | sed 's/^fuzz_//')"); done
fi

failed=()
printf '%-20s %12s %10s %s\n' harness executions exec/s result
for name in "${harnesses[@]}"; do
  case $name in
    clip_tokenizer) [ -n "$KCLIP_CLIP_VOCAB" ] || { echo "$name: skipped (no CLIP vocabulary: scripts/fetch-assets.sh)"; continue; } ;;
  esac
  corpus="$build/corpus/$name" findings="$build/findings/$name" seeds="tests/fuzz/corpus/$name"
  mkdir -p "$corpus" "$findings"
  dict=()
  [ -f "tests/fuzz/dict/$name.dict" ] && dict=(-dict="tests/fuzz/dict/$name.dict")
  if [ "$seconds" -eq 0 ]; then
    run=(-runs=0)  # replay every input once
  else
    run=(-max_total_time="$seconds")
  fi
  log="$build/findings/$name.log"
  if "$build/fuzz/fuzz_$name" "${run[@]}" "${dict[@]}" -timeout=1 -rss_limit_mb=2048 -malloc_limit_mb=512 \
      -print_final_stats=1 -artifact_prefix="$findings/" "$corpus" "$seeds" >"$log" 2>&1; then
    result=ok
  else
    result="FAILED (input in $findings/, log $log)"
    failed+=("$name")
  fi
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  speed=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  printf '%-20s %12s %10s %s\n' "$name" "${runs:-?}" "${speed:-?}" "$result"
done
if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz: ${#failed[@]} harness(es) failed: ${failed[*]}" >&2
  for name in "${failed[@]}"; do tail -40 "$build/findings/$name.log" >&2; done
  exit 1
fi
