#!/usr/bin/env bash
# `make walkthrough`: each component on its own, then the trainer (`make demo` runs the whole method with `kclip run`).
# Now: report the runtime, convert a sharded Llama checkpoint (stories260K from ../shared, else a generated one)
# to one bf16 file from Python, inspect the result with the CLI, and optimise the Knowledge-CLIP objective
# (all three loss terms) on synthetic paired features, cluster Fashion-MNIST into concepts, and run the Llama
# teacher (stories260K from ../shared: greedy decoding checked against run.c, pooled embeddings), and train the
# CLIP student a few steps on Flickr8k pairs through the tokenizer and image preprocessing; last, the trainer: the
# stories15M teacher embeds Flickr8k captions, K-means makes concepts, kclip's trainer trains a tiny student.
set -euo pipefail
build=${1:-build}
out="$build/demo"
mkdir -p "$out"
export PYTHONPATH="$build/python${PYTHONPATH:+:$PYTHONPATH}"

echo "== kclip info"
"$build/kclip" info
echo
echo "== checkpoint round trip (Python)"
/usr/bin/python3 examples/python/checkpoint_roundtrip.py --out "$out"
echo
echo "== kclip inspect $out/checkpoint-bf16.safetensors"
"$build/kclip" inspect "$out/checkpoint-bf16.safetensors" --quiet
echo
echo "== Knowledge-CLIP loss on synthetic features (examples/python/knowledge_clip_loss.py)"
/usr/bin/python3 examples/python/knowledge_clip_loss.py
echo
echo "== concept clustering of Fashion-MNIST (examples/python/cluster_fashion_mnist.py)"
/usr/bin/python3 examples/python/cluster_fashion_mnist.py --out "$out"
echo
echo "== the Llama teacher (examples/python/llama_teacher.py)"
/usr/bin/python3 examples/python/llama_teacher.py
echo
echo "== the CLIP student (examples/python/clip_student.py)"
/usr/bin/python3 examples/python/clip_student.py --out "$out"
echo
echo "== Knowledge-CLIP training: stories15M embeds 320 Flickr8k captions, K-means concepts, kclip train, plot"
shared=${KCLIP_SHARED:-$(cd .. && pwd)/shared}
if [ -f "$shared/models/stories15M/stories15M.bin" ] && [ -d "$shared/data/flickr8k-1k" ]; then
  train="$out/train"
  mkdir -p "$train"
  # the first 64 images with their 5 captions each; image paths relative to the CSV (open_clip's convention)
  ln -sfn "$shared/data/flickr8k-1k/images" "$train/images"
  head -n 321 "$shared/data/flickr8k-1k/captions.csv" | sed '1!s|^|images/|' > "$train/pairs.csv"
  "$build/kclip" embed --teacher "$shared/models/stories15M/stories15M.bin" \
    --tokenizer "$shared/tokenizers/llama2/tokenizer.model" --captions "$train/pairs.csv" --out "$train/cache" --quiet
  "$build/kclip" cluster --embeddings "$train/cache" --k 16 --metric cosine --out "$train/concepts.safetensors"
  /usr/bin/python3 examples/python/train_knowledge_clip.py --train-data "$train/pairs.csv" --csv-img-key image \
    --csv-caption-key caption --model tiny --teacher-cache "$train/cache" --concepts "$train/concepts.safetensors" \
    --batch-size 32 --epochs 3 --lr 1e-3 --warmup 5 --logs "$train/runs" --name demo --no-progress \
    --plot "$train/loss.png"
  head -n 1 "$train/runs/demo/metrics.jsonl" | cut -c1-160
  tail -n 1 "$train/runs/demo/metrics.jsonl" | cut -c1-160
else
  echo "skipped: needs $shared/models/stories15M and $shared/data/flickr8k-1k"
fi
