"""CLIP student throughput: the `bench-s` config (image 64, patch 8, vision 256 x 4 layers, text 256 x 4 layers,
4 heads, context 32, embed 256), batch 64, fp32. kclip's C++ model beside the same model in PyTorch eager from
Python (OpenAI's architecture with torch.nn.MultiheadAttention, same weights; outputs checked equal first), on the
same threads:

  * forward: encode_image + encode_text under no_grad (eval), images+texts per second;
  * one training step: both encoders, CLIP's contrastive loss, backward, AdamW.

Both run at their best settings, in one process, timed alternately (medians): kclip's default threads, which are
PyTorch eager's best here too (with Debian's pthread OpenBLAS one LibTorch thread, OpenBLAS using every core for
the GEMMs, beats two for both peers: --threads 2 to check); glibc malloc keeping freed blocks for reuse, as kclip's
Trainer sets it (process-wide: both peers gain, eager the most; --malloc default to check); kclip with its
trainer's AdamW, eager with torch.optim.AdamW (--foreach 1 to check).

    python3 bench/bench_clip.py [--batch 64] [--repeat 10] [--threads N] [--malloc retain|default] [--foreach 0|1]
"""
import argparse
import pathlib
import statistics
import sys
import time

import torch
import torch.nn.functional as F

import kclip

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "tests" / "python"))
from clip_reference import EagerCLIP  # noqa: E402


def contrastive_loss(image, text, logit_scale):
    image, text = F.normalize(image, dim=-1), F.normalize(text, dim=-1)
    logits = logit_scale.clamp(max=4.6052).exp() * image @ text.t()
    labels = torch.arange(logits.shape[0])
    return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels)) / 2


def median_seconds(fn, repeat):
    fn()  # warm-up
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def paired_median_seconds(fn_a, fn_b, repeat):
    """Medians of fn_a and fn_b run alternately: drifts of the machine's speed touch both alike."""
    fn_a(), fn_b()  # warm-up
    times = ([], [])
    for _ in range(repeat):
        for fn, out in ((fn_a, times[0]), (fn_b, times[1])):
            start = time.perf_counter()
            fn()
            out.append(time.perf_counter() - start)
    return statistics.median(times[0]), statistics.median(times[1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--threads", type=int, default=0, help="LibTorch intra-op threads (default: kclip's choice)")
    parser.add_argument("--foreach", type=int, default=0, help="torch.optim.AdamW(foreach=...) for the eager peer")
    parser.add_argument("--malloc", choices=["retain", "default"], default="retain",
                        help="retain: glibc keeps freed blocks for reuse (kclip.retain_freed_memory(), what kclip's "
                             "Trainer does; process-wide, so both peers run with it); default: glibc's own settings")
    args = parser.parse_args()
    if args.malloc == "retain":
        kclip.retain_freed_memory()
    if args.threads:
        kclip.set_num_threads(args.threads)

    config = kclip.CLIPConfig.named("bench-s")
    torch.manual_seed(0)
    ours = kclip.CLIP(config)
    eager = EagerCLIP(config)
    eager.load_state_dict({k: v.detach().clone() for k, v in ours.named_parameters().items()}, strict=True)
    b = args.batch
    pixels = torch.randn(b, 3, config.image_size, config.image_size)
    ids = torch.randint(1, 49406, (b, config.context_length))
    ids[:, 0], ids[torch.arange(b), torch.randint(5, config.context_length, (b,))] = 49406, 49407

    ours.eval()
    eager.eval()
    with torch.no_grad():
        assert (ours.encode_image(pixels) - eager.encode_image(pixels)).abs().max() < 1e-4
        assert (ours.encode_text(ids) - eager.encode_text(ids)).abs().max() < 1e-4

    def forward(model):
        def run():
            with torch.no_grad():
                model.encode_image(pixels)
                model.encode_text(ids)
        return run

    # kclip: its trainer's AdamW (flat buffers, one fused pass); eager: torch.optim.AdamW at its best (--foreach)
    loss_ours = kclip.ContrastiveLoss()
    opt_ours = kclip.AdamW([{"params": [p for p in ours.parameters() if p is not ours.logit_scale] +
                             loss_ours.parameters(), "weight_decay": 0.01}])
    opt_eager = torch.optim.AdamW(eager.parameters(), lr=1e-4, foreach=args.foreach)

    def step_ours():
        opt_ours.zero_grad()
        loss_ours(ours.encode_image(pixels), ours.encode_text(ids)).backward()
        opt_ours.step(1e-4)

    def step_eager():
        opt_eager.zero_grad(set_to_none=True)
        contrastive_loss(eager.encode_image(pixels), eager.encode_text(ids), eager.logit_scale).backward()
        opt_eager.step()

    print(f"bench-s CLIP, batch {b}, fp32, {torch.get_num_threads()} threads, malloc {args.malloc} "
          f"(BLAS: {kclip.blas_library()}, {kclip.blas_core() or '-'} kernels); median of {args.repeat}")
    fwd_ours, fwd_eager = paired_median_seconds(forward(ours), forward(eager), args.repeat)
    print(f"  forward  encode_image+encode_text  kclip {fwd_ours * 1e3:7.1f} ms ({b / fwd_ours:6.0f} pairs/s)   "
          f"PyTorch eager {fwd_eager * 1e3:7.1f} ms ({b / fwd_eager:6.0f} pairs/s)   speed-up {fwd_eager / fwd_ours:.2f}x")
    ours.train()
    eager.train()
    train_ours, train_eager = paired_median_seconds(step_ours, step_eager, args.repeat)
    print(f"  train step (loss, backward, AdamW) kclip {train_ours * 1e3:7.1f} ms   "
          f"PyTorch eager {train_eager * 1e3:7.1f} ms   speed-up {train_eager / train_ours:.2f}x")
    ours.set_grad_checkpointing(True)
    train_ckpt = median_seconds(step_ours, args.repeat)
    print(f"  train step, gradient checkpointing kclip {train_ckpt * 1e3:7.1f} ms")
    plain_mib, ckpt_mib = peak_step_memory(b, False), peak_step_memory(b, True)
    print(f"  peak RSS of a process running one training step: plain {plain_mib:.0f} MiB, "
          f"gradient checkpointing {ckpt_mib:.0f} MiB")


def peak_step_memory(batch, checkpointing):
    """Peak resident set (MiB) of a fresh process that builds the model and runs one training step (each setting
    gets its own process; VmHWM, not ru_maxrss, which keeps the forking parent's peak across exec)."""
    import subprocess
    import sys
    code = f"""
import torch, kclip
model, loss_fn = kclip.CLIP(kclip.CLIPConfig.named("bench-s")), kclip.ContrastiveLoss()
model.train()
model.set_grad_checkpointing({checkpointing})
pixels, ids = torch.randn({batch}, 3, 64, 64), torch.randint(1, 49406, ({batch}, 32))
loss_fn(model.encode_image(pixels), model.encode_text(ids)).backward()
print(next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:")) / 1024)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    main()
