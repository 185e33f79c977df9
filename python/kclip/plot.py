"""Plots a kclip run's metrics.jsonl: each loss term and the learning rate against the optimizer step.

    kclip plot runs/NAME/metrics.jsonl loss.png            (the CLI runs this file with Debian's python3)
    python3 -m kclip.plot runs/NAME/metrics.jsonl loss.png
    kclip.plot_metrics("runs/NAME/metrics.jsonl", "loss.png")

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
    temporary = f"{out}.tmp-{os.getpid()}.png"
    try:
        fig.savefig(temporary, dpi=120)
        os.replace(temporary, out)
    finally:
        plt.close(fig)
        if os.path.exists(temporary):
            os.remove(temporary)
    return out


def main(argv):
    if len(argv) != 2:
        print("usage: kclip plot METRICS.jsonl OUT.png", file=sys.stderr)
        return 2
    try:
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
