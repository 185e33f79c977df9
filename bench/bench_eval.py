"""Zero-shot evaluation throughput on the CIFAR-10 test images (10 000 JPEGs): kclip's pipeline (C++ decoding,
preprocessing and model) beside the same in PyTorch eager (OpenAI's architecture, same weights) fed by
torch.utils.data.DataLoader with PIL + torchvision transforms, at each worker count in --workers. Both compute
OpenAI's 18-template classifier and report top-1, which must agree.

    python3 bench/bench_eval.py [--model bench-s] [--workers 0,1,2] [--batch 256]

Needs ../shared (or $KCLIP_SHARED)/data/cifar10-test.
"""
import argparse
import os
import pathlib
import sys
import time

import torch
import torch.nn.functional as F
import torchvision
import torchvision.transforms as T

import kclip

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench_clip import EagerCLIP  # noqa: E402


def cifar_dir():
    return pathlib.Path(os.environ.get("KCLIP_SHARED") or HERE.parent.parent / "shared") / "data/cifar10-test"


def reference(model, config, root, workers, batch, templates):
    data = torchvision.datasets.ImageFolder(str(root), transform=T.Compose([
        T.Resize(config.image_size, interpolation=T.InterpolationMode.BICUBIC), T.CenterCrop(config.image_size),
        T.ToTensor(), T.Normalize(kclip.OPENAI_DATASET_MEAN, kclip.OPENAI_DATASET_STD)]))
    loader = torch.utils.data.DataLoader(data, batch_size=batch, num_workers=workers)
    start = time.perf_counter()
    tokenizer = kclip.ClipTokenizer()
    names = [c.replace("_", " ") for c in torchvision.datasets.ImageFolder(str(root)).classes]
    with torch.no_grad():
        columns = []
        for name in names:
            text = F.normalize(model.encode_text(tokenizer([t.format(name) for t in templates], config.context_length)), dim=1)
            columns.append(F.normalize(text.mean(0), dim=0))
        classifier = torch.stack(columns, 1)
        correct = total = 0
        for images, labels in loader:
            logits = 100 * F.normalize(model.encode_image(images), dim=1) @ classifier
            correct += (logits.argmax(1) == labels).sum().item()
            total += len(labels)
    return total / (time.perf_counter() - start), correct / total


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="bench-s")
    parser.add_argument("--workers", default="0,1,2")
    parser.add_argument("--batch", type=int, default=256)
    args = parser.parse_args()
    root = cifar_dir()
    if not root.is_dir():
        print(f"bench_eval: skipped: {root} not found (set KCLIP_SHARED)")
        return
    config = kclip.CLIPConfig.named(args.model)
    torch.manual_seed(0)
    ours = kclip.CLIP(config)
    eager = EagerCLIP(config)
    eager.load_state_dict({k: v.detach().clone() for k, v in ours.named_parameters().items()}, strict=True)
    eager.eval()
    torch.set_num_threads(1)
    templates = kclip.caption_templates("openai-cifar10")
    data = kclip.ImageFolderDataset(root)
    print(f"zero-shot CIFAR-10 ({len(data)} test JPEGs, 18 templates), {args.model} ({config.image_size}px), "
          f"batch {args.batch}, fp32, {kclip.available_cpus()} CPUs, 1 LibTorch thread")
    start = time.perf_counter()
    result = kclip.evaluate_zeroshot(ours, data, templates=templates, batch_size=args.batch)
    rate = len(data) / (time.perf_counter() - start)
    print(f"  kclip (C++ decoding threads + C++ model): {rate:7.1f} images/s, top-1 {result['top1']:.4f}")
    best = 0
    for workers in [int(w) for w in args.workers.split(",")]:
        ref_rate, ref_top1 = reference(eager, config, root, workers, args.batch, templates)
        best = max(best, ref_rate)
        print(f"  PyTorch eager + DataLoader(num_workers={workers}), PIL/torchvision: {ref_rate:7.1f} images/s, "
              f"top-1 {ref_top1:.4f}")
    print(f"  speed-up over the best reference setting: {rate / best:.2f}x")


if __name__ == "__main__":
    main()
