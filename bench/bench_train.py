"""End-to-end training throughput on the Flickr8k-1k JPEGs: decode + preprocess + tokenize + one optimizer step of
the full Knowledge-CLIP objective (contrastive + distillation to stories15M's caption embeddings + concepts), the
`bench-s` student, batch 64, fp32. kclip's Trainer (C++ loader threads, C++ model and loss) beside the script a
PyTorch user would write: the same model in eager PyTorch (OpenAI's architecture, same initial weights), fed by
torch.utils.data.DataLoader with PIL + torchvision's RandomResizedCrop and a Python BPE tokenizer in the workers,
torch.optim.AdamW with open_clip's parameter groups. The reference runs at each worker count in --workers (1 LibTorch
thread beside OpenBLAS's pthreads, its best here) and its best is compared.

    python3 bench/bench_train.py [--steps 12] [--warmup-steps 3] [--workers 0,1,2]

Needs ../shared (or $KCLIP_SHARED): data/flickr8k-1k, models/stories15M, tokenizers/llama2.
"""
import argparse
import csv
import functools
import json
import math
import os
import pathlib
import subprocess
import sys
import tempfile
import time

import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision.transforms as T
from PIL import Image

import kclip

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests" / "python"))
from bench_clip import EagerCLIP  # noqa: E402
from clip_tokenizer_reference import ReferenceTokenizer  # noqa: E402

BATCH = 64


def shared_dir():
    return pathlib.Path(os.environ.get("KCLIP_SHARED") or HERE.parent.parent / "shared")


def prepare(work):
    """The 5000 pairs as a CSV of absolute paths, their stories15M embeddings and 100 concepts (kclip's CLI)."""
    shared = shared_dir()
    root = shared / "data/flickr8k-1k"
    with open(root / "captions.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    with open(work / "pairs.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["image", "caption"])
        for row in rows:
            writer.writerow([str(root / "images" / row["image"]), row["caption"]])
    cli = pathlib.Path(kclip.__file__).resolve().parents[2] / "kclip"
    subprocess.run([cli, "embed", "--teacher", shared / "models/stories15M/stories15M.bin", "--tokenizer",
                    shared / "tokenizers/llama2/tokenizer.model", "--captions", work / "pairs.csv", "--out",
                    work / "cache", "--quiet"], check=True)
    subprocess.run([cli, "cluster", "--embeddings", work / "cache", "--k", "100", "--metric", "cosine", "--out",
                    work / "concepts.safetensors"], check=True, capture_output=True)
    return [(str(root / "images" / r["image"]), r["caption"]) for r in rows]


# ---- kclip --------------------------------------------------------------------------------------------------------

def run_kclip(work, warmup, steps):
    trainer = kclip.Trainer(train_data=str(work / "pairs.csv"), csv_img_key="image", csv_caption_key="caption",
                            model="bench-s", batch_size=BATCH, epochs=1, max_steps=warmup + steps, warmup=10,
                            teacher_cache=str(work / "cache"), concepts=str(work / "concepts.safetensors"),
                            logs=str(work / "logs"), name="kclip", progress=False, save_frequency=0, seed=0)
    initial = {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}
    stamps = []
    trainer.fit(callback=lambda t, r: stamps.append(time.perf_counter()))
    records = [json.loads(line) for line in (work / "logs/kclip/metrics.jsonl").read_text().splitlines()]
    steady = records[warmup:]
    seconds = stamps[-1] - stamps[warmup - 1]
    wait = sum(r["data_wait"] * r["step_time"] for r in steady) / sum(r["step_time"] for r in steady)
    loss_state = trainer.loss.state_dict()
    stats = (loss_state["distillation.target_mean"].clone(), loss_state["distillation.target_std"].clone())
    return BATCH * steps / seconds, wait, records[0]["loss"], initial, stats


# ---- the PyTorch reference ----------------------------------------------------------------------------------------

class Pairs(torch.utils.data.Dataset):
    def __init__(self, pairs, size, tokenizer, context):
        self.pairs, self.tokenizer, self.context = pairs, tokenizer, context
        self.sot, self.eot = tokenizer.encoder["<|startoftext|>"], tokenizer.encoder["<|endoftext|>"]
        tokenizer.bpe = functools.lru_cache(maxsize=None)(tokenizer.bpe)  # OpenAI's SimpleTokenizer caches words too
        self.transform = T.Compose([
            T.RandomResizedCrop(size, scale=(0.9, 1.0), interpolation=T.InterpolationMode.BICUBIC),
            T.ToTensor(), T.Normalize(kclip.OPENAI_DATASET_MEAN, kclip.OPENAI_DATASET_STD)])

    def __len__(self):
        return len(self.pairs)

    def __getitem__(self, i):
        path, caption = self.pairs[i]
        image = self.transform(Image.open(path).convert("RGB"))
        ids = [self.sot] + self.tokenizer.encode(caption)[: self.context - 2] + [self.eot]
        text = torch.zeros(self.context, dtype=torch.long)
        text[: len(ids)] = torch.tensor(ids)
        return image, text, caption


class KnowledgeClipLoss(nn.Module):
    """The objective as a user would write it: CLIP's InfoNCE + Σ_d (W_e·t − standardised L(x))² + soft concepts."""

    def __init__(self, embed, teacher_dim, k, mean, std):
        super().__init__()
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
        self.w_e = nn.Linear(embed, teacher_dim, bias=False)
        self.image_head = nn.Sequential(nn.Linear(embed, 64), nn.ReLU(), nn.Linear(64, k))
        self.text_head = nn.Sequential(nn.Linear(embed, 64), nn.ReLU(), nn.Linear(64, k))
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)

    def forward(self, image, text, teacher, concepts):
        i, t = F.normalize(image, dim=-1), F.normalize(text, dim=-1)
        logits = self.logit_scale.clamp(max=math.log(100)).exp() * i @ t.t()
        labels = torch.arange(logits.shape[0])
        contrastive = (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels)) / 2
        distill = (self.w_e(text) - (teacher - self.mean) / self.std).pow(2).sum(1).mean()
        concept = sum(-(concepts * F.log_softmax(h(x), 1)).sum(1).mean()
                      for h, x in ((self.image_head, image), (self.text_head, text))) / 2
        return contrastive + distill + 0.01 * concept


def run_reference(pairs, work, initial, stats, workers, warmup, steps):
    config = kclip.CLIPConfig.named("bench-s")
    model = EagerCLIP(config)
    model.load_state_dict(initial, strict=True)
    cache = kclip.EmbeddingCache(str(work / "cache"))
    km = kclip.KMeans.load(str(work / "concepts.safetensors"))
    captions = sorted({c for _, c in pairs})
    embeddings = cache.get(captions)
    teacher = dict(zip(captions, embeddings))
    concepts = dict(zip(captions, km.soft_labels(embeddings, 0.05)))
    loss_fn = KnowledgeClipLoss(config.embed_dim, cache.dim, 100, stats[0], stats[1])
    named = [(n, p) for n, p in model.named_parameters() if n != "logit_scale"] + list(loss_fn.named_parameters())
    decay = [p for n, p in named if p.ndim >= 2 and "embedding" not in n]  # open_clip's groups
    rest = [p for n, p in named if not (p.ndim >= 2 and "embedding" not in n)]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": 0.2}, {"params": rest, "weight_decay": 0.0}],
                                  lr=5e-4, betas=(0.9, 0.98), eps=1e-6)
    tokenizer = ReferenceTokenizer(kclip.ClipTokenizer.default_vocab_path())
    data = Pairs(pairs, config.image_size, tokenizer, config.context_length)
    loader = torch.utils.data.DataLoader(data, batch_size=BATCH, shuffle=True, drop_last=True, num_workers=workers,
                                         persistent_workers=workers > 0)
    iterator = iter(loader)
    waits, stamps, first_loss = [], [], None
    for step in range(warmup + steps):
        start = time.perf_counter()
        images, text, caps = next(iterator)
        got = time.perf_counter()
        target = torch.stack([teacher[c] for c in caps])
        soft = torch.stack([concepts[c] for c in caps])
        for group in optimizer.param_groups:
            group["lr"] = 5e-4 * (step + 1) / 10
        loss = loss_fn(model.encode_image(images), model.encode_text(text), target, soft)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            loss_fn.logit_scale.clamp_(0, math.log(100))
        first_loss = first_loss if first_loss is not None else loss.item()
        end = time.perf_counter()
        stamps.append(end)
        if step >= warmup:
            waits.append((got - start, end - start))
    seconds = stamps[-1] - stamps[warmup - 1]
    return BATCH * steps / seconds, sum(w for w, _ in waits) / sum(t for _, t in waits), first_loss


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=12, help="timed steps (after the warm-up steps)")
    parser.add_argument("--warmup-steps", type=int, default=3)
    parser.add_argument("--workers", default="0,1,2", help="DataLoader worker counts to try for the reference")
    args = parser.parse_args()
    if not (shared_dir() / "data/flickr8k-1k").is_dir():
        print(f"bench_train: skipped: {shared_dir()}/data/flickr8k-1k not found (set KCLIP_SHARED)")
        return
    with tempfile.TemporaryDirectory() as tmp:
        work = pathlib.Path(tmp)
        pairs = prepare(work)
        torch.set_num_threads(1)
        print(f"bench-s student, batch {BATCH}, fp32, all three loss terms (stories15M teacher, 100 concepts), "
              f"{len(pairs)} Flickr8k pairs; {kclip.available_cpus()} CPUs, BLAS {kclip.blas_library()}; "
              f"{args.steps} steps after {args.warmup_steps} warm-up steps")
        rate, wait, loss, initial, stats = run_kclip(work, args.warmup_steps, args.steps)
        print(f"  kclip Trainer (C++ loader, {kclip.available_cpus()} decoding threads): {rate:6.1f} images/s, "
              f"data wait {100 * wait:4.1f} % of step time (first loss {loss:.1f})")
        best = 0
        for workers in [int(w) for w in args.workers.split(",")]:
            ref_rate, ref_wait, ref_loss = run_reference(pairs, work, initial, stats, workers, args.warmup_steps, args.steps)
            best = max(best, ref_rate)
            print(f"  PyTorch eager + DataLoader(num_workers={workers}), PIL/torchvision, 1 thread: {ref_rate:6.1f} "
                  f"images/s, data wait {100 * ref_wait:4.1f} % (first loss {ref_loss:.1f})")
        print(f"  speed-up over the best reference setting: {rate / best:.2f}x (target >= 1.5x), "
              f"kclip data wait {100 * wait:.1f} % (target < 5 %)")


if __name__ == "__main__":
    main()
