#!/usr/bin/env bash
# `make demo`: the smallest end-to-end job kclip can do today, grown as features land.
# Now: report the runtime, convert a sharded Llama checkpoint (stories260K from ../shared, else a generated one)
# to one bf16 file from Python, inspect the result with the CLI, and optimise the Knowledge-CLIP objective
# (all three loss terms) on synthetic paired features, cluster Fashion-MNIST into concepts, and run the Llama
# teacher (stories260K from ../shared: greedy decoding checked against run.c, pooled embeddings), and train the
# CLIP student a few steps on Flickr8k pairs through the tokenizer and image preprocessing.
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
