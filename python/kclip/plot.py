"""Plots a kclip run's metrics.jsonl (each loss term and the learning rate against the optimizer step), or an
evaluation's results.json (its headline figures as bars).

    kclip plot runs/NAME/metrics.jsonl loss.png            (the CLI runs this file with Debian's python3)
    kclip plot runs/NAME/results.json eval.png
    python3 -m kclip.plot runs/NAME/metrics.jsonl loss.png
    kclip.plot_metrics("runs/NAME/metrics.jsonl", "loss.png"); kclip.plot_results("results.json", "eval.png")

Needs matplotlib (Debian's python3-matplotlib). The PNG is written to a temporary file and renamed into place.
"""
import json
import os
import sys

TERMS = ("loss", "contrastive", "distillation", "concept")


def read_metrics(path):
    """The records of a metrics.jsonl file, in order; a malformed line is a ValueError naming it."""
    records = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}: line {number} is not JSON: {e}") from None
            if not isinstance(record, dict):
                raise ValueError(f"{path}: line {number} is not a JSON object")
            records.append(record)
    return records


def plot_metrics(path, out, title=None):
    """Draws the loss terms (log scale) over the learning rate, both against the step, into the PNG `out`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [r for r in read_metrics(path) if r.get("type", "train") == "train" and "step" in r]
    if not steps:
        raise ValueError(f"{path}: no training step records")
    fig, (losses, lr) = plt.subplots(2, 1, figsize=(8, 6), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    for key in TERMS:
        points = [(r["step"], r[key]) for r in steps if isinstance(r.get(key), (int, float))]
        if points:
            x, y = zip(*points)
            losses.plot(x, y, label="total (weighted)" if key == "loss" else key, linewidth=2 if key == "loss" else 1)
    if all(v > 0 for line in losses.get_lines() for v in line.get_ydata()):
        losses.set_yscale("log")
    losses.set_ylabel("loss")
    losses.legend()
    losses.grid(alpha=0.3)
    losses.set_title(title or os.path.basename(os.path.dirname(os.path.abspath(path))) or path)
    lr.plot([r["step"] for r in steps], [r.get("lr", 0) for r in steps], color="tab:gray")
    lr.set_ylabel("learning rate")
    lr.set_xlabel("step")
    lr.grid(alpha=0.3)
    fig.tight_layout()
    _save(fig, plt, out)
    return out


def headline_figures(results):
    """(label, value in [0, 1]) for each headline figure of a `kclip eval` document."""
    figures = []
    if "zeroshot" in results:
        figures += [("zero-shot top-1", results["zeroshot"]["top1"]), ("zero-shot top-5", results["zeroshot"]["top5"])]
    for direction, short in (("image_to_text", "I→T"), ("text_to_image", "T→I")):
        for k, value in results.get("retrieval", {}).get(direction, {}).items():
            figures.append((f"{short} R@{k.lstrip('R@r@')}", value))
    if "linear_probe" in results:
        figures.append(("linear probe", results["linear_probe"]["top1"]))
    for key, label in (("text_probe", "text probe"), ("text_probe_teacher", "text probe (teacher)")):
        if key in results:
            figures.append((f"{label} EM", results[key]["exact_match"]))
    if "concepts" in results:
        figures += [("concept NMI", results["concepts"]["nmi"]), ("concept purity", results["concepts"]["purity"])]
    return [(label, float(value)) for label, value in figures if isinstance(value, (int, float))]


def plot_results(path, out, title=None):
    """Draws the headline figures of a results.json (`kclip eval --out`, `kclip run`) as bars into the PNG `out`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    try:
        with open(path, encoding="utf-8") as f:
            results = json.load(f)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not JSON: {e}") from None
    figures = headline_figures(results) if isinstance(results, dict) else []
    if not figures:
        raise ValueError(f"{path}: no evaluation results (expected `kclip eval` output)")
    labels, values = zip(*figures)
    fig, ax = plt.subplots(figsize=(max(6, 0.8 * len(labels)), 4))
    bars = ax.bar(range(len(values)), values, color="tab:blue")
    ax.bar_label(bars, labels=[f"{v:.3f}" for v in values], fontsize=8)
    ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right")
    ax.set_ylim(0, 1.05)
    ax.set_title(title or os.path.dirname(os.path.abspath(path)))
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    _save(fig, plt, out)
    return out


def _save(fig, plt, out):
    temporary = f"{out}.tmp-{os.getpid()}.png"
    try:
        fig.savefig(temporary, dpi=120)
        os.replace(temporary, out)
    finally:
        plt.close(fig)
        if os.path.exists(temporary):
            os.remove(temporary)


def main(argv):
    if len(argv) != 2:
        print("usage: kclip plot METRICS.jsonl|results.json OUT.png", file=sys.stderr)
        return 2
    try:
        if argv[0].endswith(".json"):
            plot_results(argv[0], argv[1])
        else:
            plot_metrics(argv[0], argv[1])
    except (OSError, ValueError) as e:
        print(f"kclip plot: error: {e}", file=sys.stderr)
        return 2
    except ImportError as e:
        print(f"kclip plot: error: matplotlib is needed ({e}); install Debian's python3-matplotlib", file=sys.stderr)
        return 2
    print(f"wrote {argv[1]}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
