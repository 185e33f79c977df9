"""Load the stories260K Llama (../shared) from llama2.c's .bin and from Hugging Face shards with kclip, check
both greedy-decode what llama2.c's run.c decodes, and pool caption embeddings with the teacher.

    python3 examples/python/llama_teacher.py
"""
import json
import os
import pathlib
import time

import torch

import kclip

SHARED = pathlib.Path(os.environ.get("KCLIP_SHARED", pathlib.Path(__file__).resolve().parents[2].parent / "shared"))
MODEL = SHARED / "models/stories260K"


def greedy(model, steps):
    tokens = [1]  # BOS
    with torch.no_grad():
        for _ in range(steps):
            tokens.append(int(model.logits(torch.tensor([tokens]))[0, -1].argmax()))
    return tokens


def main():
    if not MODEL.exists():
        print(f"skipped: {MODEL} not found (the reference data lives in ../shared)")
        return
    reference = json.loads((MODEL / "runc_reference.json").read_text())["greedy_from_bos"]
    for source in (MODEL / "stories260K.bin", MODEL / "hf"):
        model = kclip.Llama.load(source)
        start = time.perf_counter()
        tokens = greedy(model, 60)
        seconds = time.perf_counter() - start
        verdict = "matches run.c" if tokens == reference[:len(tokens)] else "DIFFERS from run.c"
        print(f"{source.name}: greedy decoding of 60 tokens in {seconds:.2f} s {verdict}: {tokens[:12]} ...")
    teacher = kclip.LlamaTeacher.load(MODEL / "hf", tokenizer=SHARED / "tokenizers/llama2", pooling="mean")
    pooled = teacher.embed_ids([[1, 20, 30, 40], [1, 5, 6]])
    print(f"teacher {teacher.id()}\npooled embeddings {tuple(pooled.shape)}, norms "
          + ", ".join(f"{n:.3f}" for n in pooled.norm(dim=1).tolist()))


if __name__ == "__main__":
    main()
