"""Feed kclip's trainer from your own torch.utils.data.DataLoader: any Dataset that yields (image, caption) works —
here torchvision's CIFAR-10-style folders or a CSV of pairs, decoded by PIL in DataLoader workers. kclip supplies
the tokenizer, OpenAI's preprocessing, the teacher embeddings (an EmbeddingCache from `kclip embed` or
`kclip run`), the concepts and the optimizer step (Trainer.train_step: the three loss terms, AdamW, clipping).

    python3 examples/python/train_from_torch_dataloader.py --pairs pairs.csv --teacher-cache cache \
        --concepts concepts.safetensors [--steps 20] [--batch-size 16] [--workers 2] [--out runs]
"""
import argparse
import csv
import pathlib

import numpy as np
import torch
from PIL import Image

import kclip


class PairsDataset(torch.utils.data.Dataset):
    """Your data: here a CSV of image paths (relative to the CSV) and captions, decoded with PIL."""

    def __init__(self, path, img_key="filepath", caption_key="title", size=64):
        root = pathlib.Path(path).parent
        with open(path, newline="", encoding="utf-8") as f:
            self.rows = [(root / r[img_key], r[caption_key]) for r in csv.DictReader(f)]
        self.size = size

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, i):
        path, caption = self.rows[i]
        image = torch.from_numpy(np.asarray(Image.open(path).convert("RGB"))).permute(2, 0, 1).contiguous()
        return kclip.preprocess(image, self.size), caption  # OpenAI's resize, crop and normalisation


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", required=True)
    parser.add_argument("--img-key", default="filepath")
    parser.add_argument("--caption-key", default="title")
    parser.add_argument("--teacher-cache", required=True)
    parser.add_argument("--concepts", default="")
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", default="runs")
    args = parser.parse_args()

    cache = kclip.EmbeddingCache(args.teacher_cache)
    concepts = kclip.KMeans.load(args.concepts) if args.concepts else None
    trainer = kclip.Trainer(model=args.model, alpha=1.0, beta=0.01 if concepts else 0.0, gamma=1.0,
                            teacher_dim=cache.dim, num_concepts=concepts.centroids.shape[0] if concepts else 0,
                            max_steps=args.steps, lr=1e-3, warmup=2, logs=args.out, name="torch-dataloader",
                            progress=False)
    tokenizer = kclip.ClipTokenizer(context_length=trainer.model.config.context_length)
    data = PairsDataset(args.pairs, args.img_key, args.caption_key, trainer.model.config.image_size)
    loader = torch.utils.data.DataLoader(data, batch_size=args.batch_size, shuffle=True, drop_last=True,
                                         num_workers=args.workers, generator=torch.Generator().manual_seed(0))
    while trainer.step < args.steps:
        for images, captions in loader:
            teacher = cache.get(list(captions))  # the teacher's embeddings of these captions
            soft = concepts.soft_labels(teacher, 0.05) if concepts else None
            result = trainer.train_step(images, tokenizer(list(captions)), teacher, soft)
            print(f"step {trainer.step:3d}  loss {result['loss']:.4f}  contrastive {result['contrastive']:.4f}")
            if trainer.step >= args.steps:
                break
    print(f"saved {trainer.save_checkpoint()}")


if __name__ == "__main__":
    main()
