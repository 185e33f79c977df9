"""Checkpoint I/O: kclip's safetensors (memory-mapped, zero-copy) against PyTorch's torch.save / torch.load
(zip + pickle, PyTorch 1.13 has no mmap load) and a plain numpy safetensors reader, on the same tensors, in one
run. Files are read warm (page cache), best of --repeat runs. The `safetensors` Python package is not
installable here (not in Debian; PyPI unreachable), so it is not a peer in this run.

    python3 bench/bench_safetensors.py [--mib 512] [--repeat 3]
"""
import argparse
import os
import pathlib
import sys
import tempfile
import time

import torch

import kclip

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "tests" / "python"))
import safetensors_reference  # noqa: E402  (the plain numpy reader)


def best_of(repeat, fn):
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
        del result
    return min(times)


def touch(tensors):
    """Reads every byte (a lazy mapping only costs when data is used); returns a checksum."""
    return sum(float(t.double().sum()) for t in tensors.values())


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--mib", type=int, default=512, help="checkpoint size in MiB (float32 [1024, 256] tensors of 1 MiB)")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    torch.manual_seed(0)
    tensors = {f"layer.{i}.weight": torch.randn(1024, 256) for i in range(args.mib)}  # 1 MiB each
    with tempfile.TemporaryDirectory() as tmp:
        st, pt = os.path.join(tmp, "c.safetensors"), os.path.join(tmp, "c.pt")
        rows = []
        rows.append(("save", "kclip.save_safetensors", best_of(args.repeat, lambda: kclip.save_safetensors(st, tensors))))
        rows.append(("save", "torch.save", best_of(args.repeat, lambda: torch.save(tensors, pt))))
        rows.append(("open", "kclip.load_safetensors", best_of(args.repeat, lambda: kclip.load_safetensors(st))))
        rows.append(("open", "torch.load", best_of(args.repeat, lambda: torch.load(pt, map_location="cpu"))))
        rows.append(("open", "numpy reader", best_of(args.repeat, lambda: safetensors_reference.read(st))))
        rows.append(("open+read", "kclip.load_safetensors", best_of(args.repeat, lambda: touch(kclip.load_safetensors(st)))))
        rows.append(("open+read", "torch.load", best_of(args.repeat, lambda: touch(torch.load(pt, map_location="cpu")))))
        assert touch(kclip.load_safetensors(st)) == touch(tensors)
    print(f"checkpoint I/O, {args.mib} MiB in {len(tensors)} float32 tensors, best of {args.repeat}, "
          f"{torch.get_num_threads()} threads")
    print(f"{'task':<10} {'implementation':<24} {'seconds':>9} {'GiB/s':>8}")
    for task, name, seconds in rows:
        print(f"{task:<10} {name:<24} {seconds:>9.4f} {args.mib / 1024 / seconds:>8.2f}")
    print("kclip's save includes an fsync before its atomic rename (crash-safe); torch.save writes in place "
          "without one.")


if __name__ == "__main__":
    main()
