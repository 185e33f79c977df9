"""Load a (sharded) safetensors checkpoint with kclip, convert it to bfloat16 in one file, reload and compare.

    python3 examples/python/checkpoint_roundtrip.py [CHECKPOINT] [--out DIR]

CHECKPOINT is a .safetensors file, a *.safetensors.index.json or a directory holding either. Without one, the
stories260K Llama from ../shared is used when present, else a small checkpoint generated here.
"""
import argparse
import os
import pathlib
import time

import torch

import kclip

HERE = pathlib.Path(__file__).resolve().parent
DEFAULT = pathlib.Path(os.environ.get("KCLIP_SHARED", HERE.parents[1].parent / "shared")) / "models/stories260K/hf"


def generated_checkpoint(out: pathlib.Path) -> pathlib.Path:
    """The embedded default: a tiny two-layer MLP's state dict, saved with kclip."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.GELU(), torch.nn.Linear(256, 64))
    path = out / "generated.safetensors"
    kclip.save_safetensors(path, model.state_dict(), {"format": "pt", "producer": "kclip demo"})
    return path


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", nargs="?", type=pathlib.Path)
    parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path("build/demo"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    source = args.checkpoint or (DEFAULT if DEFAULT.exists() else generated_checkpoint(args.out))

    start = time.perf_counter()
    tensors = kclip.load_safetensors(source)
    load_ms = (time.perf_counter() - start) * 1e3
    params = sum(t.numel() for t in tensors.values())
    print(f"loaded {source}: {len(tensors)} tensors, {params:,} parameters in {load_ms:.1f} ms")
    print(f"metadata: {kclip.load_safetensors_metadata(source)}")

    converted = {name: t.to(torch.bfloat16) if t.is_floating_point() else t for name, t in tensors.items()}
    target = args.out / "checkpoint-bf16.safetensors"
    kclip.save_safetensors(target, converted, {"source": str(source), "dtype": "bf16"})
    reloaded = kclip.load_safetensors(target)
    worst = max((reloaded[n].float() - t.float()).abs().max().item() for n, t in tensors.items() if t.numel())
    scale = max(t.float().abs().max().item() for t in tensors.values() if t.numel())
    print(f"wrote {target} ({target.stat().st_size:,} bytes); bf16 round-off: max |error| {worst:.3g} "
          f"of max |weight| {scale:.3g}")
    assert all(torch.equal(reloaded[n], converted[n]) for n in converted), "bf16 file differs from what was saved"


if __name__ == "__main__":
    main()
