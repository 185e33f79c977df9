"""kclip on a CUDA GPU, each figure beside its PyTorch-from-Python peer in the same run, and the machine's own
ceilings measured first (a bf16 GEMM and a device-to-device copy):

  * training step, ViT-B-32 at batch 256 under bf16 autocast: kclip's Trainer.train_step (contrastive only, and all
    three Knowledge-CLIP terms) beside the same model in PyTorch eager (OpenAI's architecture, fused AdamW);
    model FLOP utilisation (MFU) = the step's matrix FLOPs / time / the measured bf16 GEMM rate;
  * teacher prefill in bf16, tokens/s: stories15M's shape and Llama-2-7B's width and depth per layer (8 of its 32
    layers, so the random weights fit a quick run; tokens/s for 32 layers = measured × 8/32 plus nothing else,
    since the embedding lookup is free) beside a Hugging Face-style eager forward with SDPA attention;
  * K-means (Lloyd, 20 iterations) on 100 000 × 4096 embeddings, K = 100, beside the same iterations in plain
    PyTorch (faiss-GPU when installed).

    python bench/bench_cuda.py [--quick] [--out results.json]
"""
import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import traceback

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_clip  # noqa: E402  (EagerCLIP: OpenAI's architecture in eager PyTorch)
import bench_llama  # noqa: E402  (random_checkpoint, llama_blocks: Hugging Face's Llama in eager PyTorch)

import kclip  # noqa: E402


def cuda_seconds(fn, repeat, warmup=2):
    """Median wall time of fn() with the device synchronised around each call."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def ceilings():
    a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    gemm = cuda_seconds(lambda: a @ b, 10, 3)
    x = torch.empty(2 << 30, dtype=torch.uint8, device="cuda")
    y = torch.empty_like(x)
    copy = cuda_seconds(lambda: y.copy_(x), 10, 3)
    return {"bf16_gemm_tflops": 2 * 8192 ** 3 / gemm / 1e12, "copy_tb_per_s": 2 * x.numel() / copy / 1e12}


# ---- training step -------------------------------------------------------------------------------------------


def tower_flops(width, layers, tokens):
    """Forward matrix FLOPs of one sample through a transformer tower: QKV + out (4w²), MLP (8w²), attention (2n²w)."""
    return layers * (2 * tokens * 12 * width * width + 2 * 2 * tokens * tokens * width)


def clip_step_flops(c, batch, teacher_dim=0, concepts=0):
    grid = (c.image_size // c.patch_size) ** 2
    image = tower_flops(c.vision_width, c.vision_layers, grid + 1) + 2 * grid * 3 * c.patch_size ** 2 * c.vision_width
    text = tower_flops(c.text_width, c.text_layers, c.context_length)
    heads = 2 * (c.vision_width + c.text_width) * c.embed_dim + 2 * 2 * batch * c.embed_dim  # projections + logits
    if teacher_dim:
        heads += 2 * (c.embed_dim * 64 + 64 * teacher_dim)  # W_e: the authors' MLP
    if concepts:
        heads += 2 * 2 * c.embed_dim * concepts
    return 3 * batch * (image + text + heads)  # backward ≈ twice the forward


def eager_step_fn(config, batch, pixels, ids):
    model = bench_clip.EagerCLIP(config).cuda()
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.02)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    labels = torch.arange(batch, device="cuda")

    def step():
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            image = F.normalize(model.encode_image(pixels), dim=-1)
            text = F.normalize(model.encode_text(ids), dim=-1)
            logits = model.logit_scale.clamp(max=4.6052).exp() * image @ text.t()
        logits = logits.float()
        loss = (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels)) / 2
        loss.backward()
        optimizer.step()

    return step


def bench_training(args, peak_tflops):
    name, batch = "ViT-B-32", args.batch
    config = kclip.CLIPConfig.named(name)
    g = torch.Generator().manual_seed(0)
    pixels = torch.randn(batch, 3, config.image_size, config.image_size, generator=g).cuda()
    ids = torch.randint(1, 49406, (batch, config.context_length), generator=g)
    ids[:, 0], ids[:, -1] = 49406, 49407  # full-length captions: every text position is computed by both peers
    ids = ids.cuda()
    teacher = torch.randn(batch, 4096, generator=g).cuda()
    concepts = torch.softmax(torch.randn(batch, 100, generator=g), 1).cuda()
    rows = []
    with tempfile.TemporaryDirectory() as logs:
        for label, terms in (("contrastive", dict(alpha=0.0, beta=0.0)),
                             ("Knowledge-CLIP (α=1, β=0.01, γ=1)", dict(alpha=1.0, beta=0.01, teacher_dim=4096,
                                                                        num_concepts=100))):
            trainer = kclip.Trainer(model=name, device="cuda", precision="amp_bf16", batch_size=batch, lr=1e-4,
                                    warmup=1, logs=logs, name=label[:5], progress=False, **terms)
            if "teacher_dim" in terms:
                step = lambda: trainer.train_step(pixels, ids, teacher, concepts)  # noqa: E731
            else:
                step = lambda: trainer.train_step(pixels, ids)  # noqa: E731
            torch.cuda.reset_peak_memory_stats()
            seconds = cuda_seconds(step, args.repeat)
            flops = clip_step_flops(config, batch, terms.get("teacher_dim", 0), terms.get("num_concepts", 0))
            rows.append({"implementation": "kclip Trainer.train_step", "loss": label, "seconds": seconds,
                         "images_per_s": batch / seconds, "tflops": flops / seconds / 1e12,
                         "mfu": flops / seconds / 1e12 / peak_tflops,
                         "peak_memory_gib": torch.cuda.max_memory_allocated() / 2 ** 30})
            trainer = step = None  # free the GPU memory before the next variant
            torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    seconds = cuda_seconds(eager_step_fn(config, batch, pixels, ids), args.repeat)
    flops = clip_step_flops(config, batch)
    rows.append({"implementation": "PyTorch eager (OpenAI's CLIP, fused AdamW)", "loss": "contrastive",
                 "seconds": seconds, "images_per_s": batch / seconds, "tflops": flops / seconds / 1e12,
                 "mfu": flops / seconds / 1e12 / peak_tflops,
                 "peak_memory_gib": torch.cuda.max_memory_allocated() / 2 ** 30})
    print(f"\nTraining step, {name}, batch {batch}, bf16 autocast, median of {args.repeat}")
    print(f"{'implementation':<44} {'loss':<34} {'ms':>8} {'img/s':>8} {'TFLOP/s':>8} {'MFU':>6} {'GiB':>6}")
    for r in rows:
        print(f"{r['implementation']:<44} {r['loss']:<34} {r['seconds'] * 1e3:>8.1f} {r['images_per_s']:>8.0f} "
              f"{r['tflops']:>8.1f} {r['mfu']:>6.1%} {r['peak_memory_gib']:>6.1f}")
    print(f"kclip / eager time (contrastive): {rows[0]['seconds'] / rows[2]['seconds']:.2f}x")
    return rows


# ---- teacher prefill -----------------------------------------------------------------------------------------


def eager_llama(w, c):
    """Hugging Face's Llama forward in eager PyTorch with SDPA attention (what transformers runs by default)."""
    hd = c["hidden_size"] // c["num_attention_heads"]

    def rms(x, weight):
        x32 = x.float()
        return weight * (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + c["rms_norm_eps"])).to(x.dtype)

    def forward(ids):
        inv = 1.0 / c["rope_theta"] ** (torch.arange(0, hd, 2, device=ids.device, dtype=torch.float32) / hd)
        ang = torch.outer(torch.arange(ids.shape[1], device=ids.device, dtype=torch.float32), inv)
        ang = torch.cat([ang, ang], -1)
        cos, sin = ang.cos().to(torch.bfloat16), ang.sin().to(torch.bfloat16)
        x = F.embedding(ids, w["model.embed_tokens.weight"])
        attend = lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True)  # noqa: E731
        return bench_llama.llama_blocks(w, c, x, cos, sin, rms, attend)

    return forward


def llama_flops(c, b, t):
    d, f, h = c["hidden_size"], c["intermediate_size"], c["num_attention_heads"]
    kv = d // h * c["num_key_value_heads"]
    per_token = 2 * (d * d + 2 * d * kv + d * d + 3 * d * f)
    return c["num_hidden_layers"] * (b * t * per_token + 2 * 2 * b * h * t * t * (d // h))


STORIES15M = {"hidden_size": 288, "intermediate_size": 768, "num_hidden_layers": 6, "num_attention_heads": 6,
              "num_key_value_heads": 6, "vocab_size": 32000, "max_position_embeddings": 256, "rms_norm_eps": 1e-5,
              "rope_theta": 10000.0, "tie_word_embeddings": True}
LLAMA2_7B_8_LAYERS = {"hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 8,
                      "num_attention_heads": 32, "num_key_value_heads": 32, "vocab_size": 32000,
                      "max_position_embeddings": 4096, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
                      "tie_word_embeddings": False}


def bench_teacher(args, peak_tflops):
    rows = []
    shapes = [("stories15M", STORIES15M, 256, 256, 1.0), ("Llama-2-7B (8 of 32 layers)", LLAMA2_7B_8_LAYERS, 16, 512, 8 / 32)]
    for name, c, b, t, scale in shapes:
        with tempfile.TemporaryDirectory() as tmp:
            weights = bench_llama.random_checkpoint(tmp, c, device="cuda", dtype=torch.bfloat16)
            model = kclip.Llama.load(tmp)
        model.to("cuda")
        model.to(torch.bfloat16)
        ids = torch.randint(0, c["vocab_size"], (b, t), device="cuda")
        eager = eager_llama(weights, c)
        with torch.no_grad():
            ours, theirs = model.hidden_states(ids).float(), eager(ids).float()
            relative = ((ours - theirs).norm() / theirs.norm()).item()
            t_ours = cuda_seconds(lambda: model.hidden_states(ids), args.repeat)
            t_eager = cuda_seconds(lambda: eager(ids), args.repeat)
        flops = llama_flops(c, b, t)
        for impl, seconds in (("kclip Llama.hidden_states", t_ours), ("PyTorch eager + SDPA", t_eager)):
            rows.append({"model": name, "implementation": impl, "batch": b, "tokens": t, "seconds": seconds,
                         "tokens_per_s": b * t / seconds, "tokens_per_s_full_model": b * t / seconds * scale,
                         "tflops": flops / seconds / 1e12, "mfu": flops / seconds / 1e12 / peak_tflops,
                         "relative_difference_to_eager": relative})
        model = weights = eager = None
        torch.cuda.empty_cache()
    print("\nTeacher prefill (hidden states), bf16")
    print(f"{'model':<28} {'implementation':<28} {'batch x T':>10} {'tokens/s':>11} {'full model':>11} "
          f"{'TFLOP/s':>8} {'MFU':>6}")
    for r in rows:
        print(f"{r['model']:<28} {r['implementation']:<28} {r['batch']:>4} x {r['tokens']:<4} {r['tokens_per_s']:>11.0f} "
              f"{r['tokens_per_s_full_model']:>11.0f} {r['tflops']:>8.1f} {r['mfu']:>6.1%}")
    print("(kclip vs eager relative difference: " + ", ".join(
        f"{r['model']}: {r['relative_difference_to_eager']:.1e}" for r in rows[::2]) + ")")
    return rows


# ---- K-means -------------------------------------------------------------------------------------------------


def torch_lloyd(x, start, iters):
    c = start.clone()
    x_sq = (x * x).sum(1, keepdim=True)
    for _ in range(iters):
        d = x_sq - 2 * x @ c.t() + (c * c).sum(1)
        a = d.argmin(1)
        sums = torch.zeros_like(c).index_add_(0, a, x)
        counts = torch.bincount(a, minlength=c.shape[0]).unsqueeze(1).to(x.dtype)
        c = torch.where(counts > 0, sums / counts.clamp(min=1), c)
    return c


def bench_kmeans(args):
    n, dim, k, iters = (20000 if args.quick else 100000), 4096, 100, 20
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(k, dim, generator=g) * 3
    x = (centres[torch.randint(0, k, (n,), generator=g)] + torch.randn(n, dim, generator=g)).cuda()
    start = x[torch.randperm(n, generator=g)[:k].cuda()].clone()
    rows = []
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    t = cuda_seconds(lambda: kclip.KMeans(k, iters=iters, tol=0).fit(x, init=start), 3, 1)
    ours = kclip.KMeans(k, iters=iters, tol=0).fit(x, init=start)
    rows.append({"implementation": "kclip KMeans", "seconds": t, "inertia": ours.inertia,
                 "peak_extra_gib": (torch.cuda.max_memory_allocated() - base) / 2 ** 30})
    torch.cuda.reset_peak_memory_stats()
    t = cuda_seconds(lambda: torch_lloyd(x, start, iters), 3, 1)
    ref = torch_lloyd(x, start, iters)
    ref_inertia = ((x[:, None, :] - ref[None]).pow(2).sum(-1).min(1).values.sum().item()
                   if n <= 20000 else float("nan"))
    rows.append({"implementation": "PyTorch Lloyd (GEMM distances)", "seconds": t, "inertia": ref_inertia,
                 "peak_extra_gib": (torch.cuda.max_memory_allocated() - base) / 2 ** 30})
    try:
        import faiss  # noqa: F401
        km = faiss.Kmeans(dim, k, niter=iters, gpu=True, seed=0)
        xs = x.cpu().numpy()
        start_time = time.perf_counter()
        km.train(xs, init_centroids=start.cpu().numpy())
        rows.append({"implementation": "faiss-GPU", "seconds": time.perf_counter() - start_time,
                     "inertia": float(km.obj[-1]), "peak_extra_gib": float("nan")})
    except ImportError:
        print("(faiss is not installed on this machine: no faiss-GPU peer)")
    print(f"\nK-means, {n} x {dim}, K = {k}, {iters} Lloyd iterations from the same start, fp32")
    for r in rows:
        print(f"{r['implementation']:<34} {r['seconds'] * 1e3:>9.1f} ms  inertia {r['inertia']:.6g}  "
              f"peak extra {r['peak_extra_gib']:.2f} GiB")
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--quick", action="store_true", help="smaller K-means and fewer repeats")
    parser.add_argument("--out", default="")
    args = parser.parse_args()
    if args.quick:
        args.repeat = min(args.repeat, 5)
    if not torch.cuda.is_available():
        sys.exit("bench_cuda.py needs a CUDA device")
    results = {"device": torch.cuda.get_device_name(), "torch": torch.__version__}
    results["ceilings"] = ceilings()
    peak = results["ceilings"]["bf16_gemm_tflops"]
    print(f"{results['device']}, torch {results['torch']}: bf16 GEMM {peak:.0f} TFLOP/s (8192³), "
          f"copy {results['ceilings']['copy_tb_per_s']:.2f} TB/s (read + write)")
    for key, fn in (("training_step", lambda: bench_training(args, peak)), ("teacher", lambda: bench_teacher(args, peak)),
                    ("kmeans", lambda: bench_kmeans(args))):
        try:
            results[key] = fn()
        except Exception:  # one broken section still leaves the others' figures
            traceback.print_exc()
            results[key] = {"error": traceback.format_exc()}
    if args.out:
        with open(args.out, "w") as out:
            json.dump(results, out, indent=1, default=float)


if __name__ == "__main__":
    main()
