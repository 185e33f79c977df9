"""Llama prefill throughput: a random-weight Llama (dim 1024, 8 layers, 16 heads, 4 kv heads, ffn 2816, vocab
32000), batch 8 x 256 tokens, fp32, hidden states (what the teacher embeds; no lm_head). kclip's C++ forward beside
the same forward written in PyTorch eager from Python (same weights, outputs checked equal first), in GFLOP/s and as
a fraction of this machine's fp32 GEMM peak measured in the same process.

    python3 bench/bench_llama.py [--batch 8] [--tokens 256] [--repeat 3]
"""
import argparse
import json
import os
import tempfile
import time

import torch
import torch.nn.functional as F

import kclip

CONFIG = {"hidden_size": 1024, "intermediate_size": 2816, "num_hidden_layers": 8, "num_attention_heads": 16,
          "num_key_value_heads": 4, "vocab_size": 32000, "max_position_embeddings": 2048, "rms_norm_eps": 1e-5,
          "rope_theta": 10000.0, "tie_word_embeddings": False}


def random_checkpoint(directory, c=CONFIG, device="cpu", dtype=torch.float32):
    """A Hugging Face Llama directory with seeded random weights, drawn on `device` and stored as `dtype`; returns
    the weights (on `device`)."""
    g = torch.Generator(device=device).manual_seed(0)
    d, kv, f = c["hidden_size"], c["hidden_size"] // c["num_attention_heads"] * c["num_key_value_heads"], c["intermediate_size"]

    def normal(*shape):
        return torch.randn(*shape, generator=g, device=device)

    def ones(n):
        return torch.ones(n, device=device, dtype=dtype)

    w = {"model.embed_tokens.weight": (normal(c["vocab_size"], d) * 0.02).to(dtype), "model.norm.weight": ones(d)}
    if not c["tie_word_embeddings"]:
        w["lm_head.weight"] = (normal(c["vocab_size"], d) * 0.02).to(dtype)
    for i in range(c["num_hidden_layers"]):
        p = f"model.layers.{i}."
        for name, shape in (("self_attn.q_proj", (d, d)), ("self_attn.k_proj", (kv, d)), ("self_attn.v_proj", (kv, d)),
                            ("self_attn.o_proj", (d, d)), ("mlp.gate_proj", (f, d)), ("mlp.up_proj", (f, d)),
                            ("mlp.down_proj", (d, f))):
            w[p + name + ".weight"] = (normal(*shape) / shape[1] ** 0.5).to(dtype)
        w[p + "input_layernorm.weight"] = ones(d)
        w[p + "post_attention_layernorm.weight"] = ones(d)
    stored = dict(c, torch_dtype=str(dtype).replace("torch.", "")) if dtype != torch.float32 else c
    with open(os.path.join(directory, "config.json"), "w") as out:
        json.dump(stored, out)
    kclip.save_safetensors(os.path.join(directory, "model.safetensors"), {k: v.cpu() for k, v in w.items()})
    return w


def eager_hidden_states(w, ids, c=CONFIG):
    """Hugging Face's Llama forward in plain PyTorch eager: the reference peer (and a test's reference)."""
    hd, t = c["hidden_size"] // c["num_attention_heads"], ids.shape[1]
    inv = 1.0 / c["rope_theta"] ** (torch.arange(0, hd, 2, dtype=torch.float64) / hd)
    scale = c.get("rope_scaling", {}).get("factor", 1.0) if c.get("rope_scaling") else 1.0
    ang = torch.outer(torch.arange(t, dtype=torch.float64) / scale, inv)
    ang = torch.cat([ang, ang], -1)
    cos, sin = ang.cos().float(), ang.sin().float()
    mask = torch.full((t, t), float("-inf")).triu(1)

    def rms(x, weight):
        return weight * x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + c["rms_norm_eps"])

    x = F.embedding(ids, w["model.embed_tokens.weight"])
    attend = lambda q, k, v: torch.softmax(q @ k.transpose(-2, -1) / hd ** 0.5 + mask, -1) @ v  # noqa: E731
    return llama_blocks(w, c, x, cos, sin, rms, attend)


def llama_blocks(w, c, x, cos, sin, rms, attend):
    """Hugging Face's Llama decoder layers and final norm over embeddings x [B, T, D]: rotate-half RoPE (cos, sin
    [T, head_dim]), grouped-query attention through `attend(q, k, v)` on [B, H, T, head_dim], SwiGLU MLP."""
    d, h, kvh = c["hidden_size"], c["num_attention_heads"], c["num_key_value_heads"]
    hd, (b, t) = d // h, x.shape[:2]

    def rot(y):
        return torch.cat([-y[..., hd // 2:], y[..., :hd // 2]], -1)

    for i in range(c["num_hidden_layers"]):
        p = f"model.layers.{i}."
        y = rms(x, w[p + "input_layernorm.weight"])
        q = F.linear(y, w[p + "self_attn.q_proj.weight"]).view(b, t, h, hd).transpose(1, 2)
        k = F.linear(y, w[p + "self_attn.k_proj.weight"]).view(b, t, kvh, hd).transpose(1, 2)
        v = F.linear(y, w[p + "self_attn.v_proj.weight"]).view(b, t, kvh, hd).transpose(1, 2)
        q, k = q * cos + rot(q) * sin, k * cos + rot(k) * sin
        k, v = k.repeat_interleave(h // kvh, 1), v.repeat_interleave(h // kvh, 1)
        a = attend(q, k, v)
        x = x + F.linear(a.transpose(1, 2).reshape(b, t, d), w[p + "self_attn.o_proj.weight"])
        y = rms(x, w[p + "post_attention_layernorm.weight"])
        x = x + F.linear(F.silu(F.linear(y, w[p + "mlp.gate_proj.weight"])) * F.linear(y, w[p + "mlp.up_proj.weight"]),
                         w[p + "mlp.down_proj.weight"])
    return rms(x, w["model.norm.weight"])


def prefill_flops(b, t):
    c = CONFIG
    d, f, h = c["hidden_size"], c["intermediate_size"], c["num_attention_heads"]
    kv = d // h * c["num_key_value_heads"]
    per_token = 2 * (d * d + 2 * d * kv + d * d + 3 * d * f)
    attention = 2 * 2 * b * h * t * t * (d // h)  # QKᵀ and AV over the full T x T (causal masking computes it all)
    return c["num_hidden_layers"] * (b * t * per_token + attention)


def best(fn, repeat):
    fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=256)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(kclip.default_num_threads())
    with tempfile.TemporaryDirectory() as tmp:
        weights = random_checkpoint(tmp)
        model = kclip.Llama.load(tmp)
    ids = torch.randint(0, CONFIG["vocab_size"], (args.batch, args.tokens), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours, theirs = model.hidden_states(ids), eager_hidden_states(weights, ids)
        assert (ours - theirs).abs().max() < 1e-3, (ours - theirs).abs().max()
        t_kclip = best(lambda: model.hidden_states(ids), args.repeat)
        # The peer at its best thread setting here: with OpenBLAS's own threads, one intra-op thread may win.
        eager = {}
        for threads in sorted({1, kclip.default_num_threads()}):
            torch.set_num_threads(threads)
            eager[threads] = best(lambda: eager_hidden_states(weights, ids), args.repeat)
        torch.set_num_threads(kclip.default_num_threads())
        eager_threads = min(eager, key=eager.get)
        t_eager = eager[eager_threads]
    a, b = torch.randn(args.batch * args.tokens, 1024), torch.randn(1024, 2816)
    t_gemm = best(lambda: a @ b, 5)
    peak = 2 * a.shape[0] * 1024 * 2816 / t_gemm / 1e9
    flops = prefill_flops(args.batch, args.tokens)
    tokens = args.batch * args.tokens
    print(f"Llama prefill, dim 1024, 8 layers, 16/4 heads, ffn 2816, batch {args.batch} x {args.tokens} tokens, fp32, "
          f"{torch.get_num_threads()} threads; {flops / 1e9:.1f} GFLOP per forward")
    print(f"fp32 GEMM peak here ({tokens}x1024 @ 1024x2816): {peak:.1f} GFLOP/s")
    print(f"{'implementation':<28} {'seconds':>8} {'tokens/s':>10} {'GFLOP/s':>9} {'of peak':>8}")
    rows = [("kclip (C++)", t_kclip)] + [(f"PyTorch eager, {n} thread{'s' * (n > 1)}", t) for n, t in eager.items()]
    for name, seconds in rows:
        gflops = flops / seconds / 1e9
        print(f"{name:<28} {seconds:>8.3f} {tokens / seconds:>10.0f} {gflops:>9.1f} {gflops / peak:>8.0%}")
    print(f"kclip / best PyTorch eager ({eager_threads} thread{'s' * (eager_threads > 1)}) time: {t_kclip / t_eager:.2f}x")


if __name__ == "__main__":
    main()
