"""The CLIP student end to end: captions through kclip.ClipTokenizer, photos through kclip.preprocess, a fresh
`bench-s` CLIP trained for a few AdamW steps with CLIP's contrastive loss on 32 Flickr8k image-caption pairs, then
image -> caption retrieval on those pairs and a Hugging Face-layout save.

Uses ../shared/data/flickr8k-1k when present; otherwise generated images with embedded captions, so it runs on a
fresh machine too. The vocabulary comes from `scripts/fetch-assets.sh` (run by `make`), else ../shared.

    python3 examples/python/clip_student.py [--pairs 32] [--steps 30] [--out build/demo]
"""
import argparse
import csv
import os
import pathlib
import time

import torch

import kclip

SHARED = pathlib.Path(os.environ.get("KCLIP_SHARED", pathlib.Path(__file__).resolve().parents[2].parent / "shared"))
FLICKR = SHARED / "data/flickr8k-1k"
FALLBACK_CAPTIONS = ["a dog runs on the grass", "two children play in the snow", "a man rides a red bicycle",
                     "a boat on a calm lake", "a cat sleeps on a sofa", "people walk down a busy street",
                     "a girl jumps into a swimming pool", "a brown horse in a field"]


def tokenizer():
    try:
        return kclip.ClipTokenizer()  # the vocabulary scripts/fetch-assets.sh put in the cache
    except kclip.Error:
        return kclip.ClipTokenizer(SHARED / "tokenizers/clip/bpe_simple_vocab_16e6.txt.gz")


def pairs(count):
    """(images, captions): Flickr8k photo paths with their first caption, or generated uint8 images."""
    if FLICKR.exists():
        first = {}
        with open(FLICKR / "captions.csv", newline="", encoding="utf-8") as f:
            for row in csv.DictReader(f):
                first.setdefault(row["image"], row["caption"])
        names = sorted(first)[:count]
        return [FLICKR / "images" / n for n in names], [first[n] for n in names]
    g = torch.Generator().manual_seed(0)
    images = [torch.randint(0, 256, (3, 96, 128), dtype=torch.uint8, generator=g) for _ in range(count)]
    return images, [FALLBACK_CAPTIONS[i % len(FALLBACK_CAPTIONS)] + f" number {i}" for i in range(count)]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=32)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--out", default="build/demo")
    args = parser.parse_args()

    torch.manual_seed(0)
    config = kclip.CLIPConfig.named("bench-s")
    model, loss_fn = kclip.CLIP(config), kclip.ContrastiveLoss()
    images, captions = pairs(args.pairs)
    source = "Flickr8k" if FLICKR.exists() else "generated images"
    start = time.perf_counter()
    pixels = kclip.preprocess(images, config.image_size)          # float [N, 3, 64, 64], CLIP mean/std
    ids = tokenizer()(captions, context_length=config.context_length)  # int64 [N, 32], SOT ... EOT
    print(f"{len(captions)} pairs ({source}): pixels {tuple(pixels.shape)}, ids {tuple(ids.shape)} "
          f"in {time.perf_counter() - start:.2f} s; e.g. {captions[0]!r}")

    optimizer = torch.optim.AdamW(model.parameters() + loss_fn.parameters(), lr=5e-4, weight_decay=0.1)
    model.train()
    start = time.perf_counter()
    for step in range(args.steps):
        optimizer.zero_grad()
        loss = loss_fn(model.encode_image(pixels), model.encode_text(ids))
        loss.backward()
        optimizer.step()
        if step in (0, args.steps - 1):
            print(f"step {step + 1:3d}: contrastive loss {loss.item():.4f}")
    print(f"{args.steps} training steps in {time.perf_counter() - start:.1f} s")

    model.eval()
    with torch.no_grad():
        logits_per_image, _ = model(pixels, ids)
    accuracy = (logits_per_image.argmax(1) == torch.arange(len(captions))).float().mean().item()
    print(f"image -> caption retrieval on the training pairs: top-1 {accuracy:.0%} (chance {1 / len(captions):.0%})")

    out = pathlib.Path(args.out) / "clip-student-hf"
    model.save(out, layout="hf")
    reloaded = kclip.CLIP.load(out)
    with torch.no_grad():
        same = torch.equal(reloaded.encode_text(ids), model.encode_text(ids))
    print(f"saved {out} (Hugging Face CLIPModel layout); reloaded text features identical: {same}")


if __name__ == "__main__":
    main()
