"""CLIP student throughput: the `bench-s` config (image 64, patch 8, vision 256 x 4 layers, text 256 x 4 layers,
4 heads, context 32, embed 256), batch 64, fp32. kclip's C++ model beside the same model in PyTorch eager from
Python (OpenAI's architecture with torch.nn.MultiheadAttention, same weights; outputs checked equal first), on the
same threads:

  * forward: encode_image + encode_text under no_grad (eval), images+texts per second;
  * one training step: both encoders, CLIP's contrastive loss, backward, AdamW.

Both run on kclip's default threads, which are PyTorch eager's best here too: with Debian's pthread OpenBLAS one
LibTorch thread (OpenBLAS uses every core for the GEMMs) beats two for both peers (--threads 2 to check).

    python3 bench/bench_clip.py [--batch 64] [--repeat 10] [--threads N]
"""
import argparse
import statistics
import time
from collections import OrderedDict

import torch
import torch.nn as nn
import torch.nn.functional as F

import kclip


class LayerNorm32(nn.LayerNorm):
    """OpenAI's LayerNorm: computes in float32 whatever the input dtype."""

    def forward(self, x):
        return super().forward(x.float()).to(x.dtype)


class QuickGELU(nn.Module):
    def forward(self, x):
        return x * torch.sigmoid(1.702 * x)


class Block(nn.Module):
    def __init__(self, width, heads):
        super().__init__()
        self.attn = nn.MultiheadAttention(width, heads, batch_first=True)  # batch_first: torch's fast path when allowed
        self.ln_1, self.ln_2 = LayerNorm32(width), LayerNorm32(width)
        self.mlp = nn.Sequential(OrderedDict(c_fc=nn.Linear(width, 4 * width), gelu=QuickGELU(),
                                             c_proj=nn.Linear(4 * width, width)))

    def forward(self, x, mask=None):
        h = self.ln_1(x)
        x = x + self.attn(h, h, h, need_weights=False, attn_mask=mask)[0]
        return x + self.mlp(self.ln_2(x))


class Transformer(nn.Module):
    def __init__(self, width, layers, heads):
        super().__init__()
        self.resblocks = nn.ModuleList(Block(width, heads) for _ in range(layers))

    def forward(self, x, mask=None):
        for block in self.resblocks:
            x = block(x, mask)
        return x


class Visual(nn.Module):
    def __init__(self, c):
        super().__init__()
        w, grid = c.vision_width, c.image_size // c.patch_size
        self.conv1 = nn.Conv2d(3, w, c.patch_size, c.patch_size, bias=False)
        self.class_embedding = nn.Parameter(torch.zeros(w))
        self.positional_embedding = nn.Parameter(torch.zeros(grid * grid + 1, w))
        self.ln_pre, self.ln_post = LayerNorm32(w), LayerNorm32(w)
        self.transformer = Transformer(w, c.vision_layers, c.vision_heads)
        self.proj = nn.Parameter(torch.zeros(w, c.embed_dim))

    def forward(self, pixels):
        x = self.conv1(pixels).flatten(2).transpose(1, 2)
        x = torch.cat([self.class_embedding.expand(x.shape[0], 1, -1), x], 1) + self.positional_embedding
        x = self.transformer(self.ln_pre(x))
        return self.ln_post(x[:, 0]) @ self.proj


class EagerCLIP(nn.Module):
    """OpenAI's clip/model.py architecture (ViT image tower, causal text transformer), parameter names included."""

    def __init__(self, c):
        super().__init__()
        self.visual = Visual(c)
        self.token_embedding = nn.Embedding(c.vocab_size, c.text_width)
        self.positional_embedding = nn.Parameter(torch.zeros(c.context_length, c.text_width))
        self.transformer = Transformer(c.text_width, c.text_layers, c.text_heads)
        self.ln_final = LayerNorm32(c.text_width)
        self.text_projection = nn.Parameter(torch.zeros(c.text_width, c.embed_dim))
        self.logit_scale = nn.Parameter(torch.zeros([]))
        self.register_buffer("mask", torch.full((c.context_length, c.context_length), float("-inf")).triu(1), False)

    def encode_image(self, pixels):
        return self.visual(pixels)

    def encode_text(self, ids):
        x = self.token_embedding(ids) + self.positional_embedding
        x = self.ln_final(self.transformer(x, self.mask))
        return x[torch.arange(x.shape[0]), ids.argmax(-1)] @ self.text_projection


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


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--threads", type=int, default=0, help="LibTorch intra-op threads (default: kclip's choice)")
    args = parser.parse_args()
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

    loss_ours = kclip.ContrastiveLoss()
    opt_ours = torch.optim.AdamW(ours.parameters() + loss_ours.parameters(), lr=1e-4)
    opt_eager = torch.optim.AdamW(eager.parameters(), lr=1e-4)

    def step_ours():
        opt_ours.zero_grad(set_to_none=True)
        loss_ours(ours.encode_image(pixels), ours.encode_text(ids)).backward()
        opt_ours.step()

    def step_eager():
        opt_eager.zero_grad(set_to_none=True)
        contrastive_loss(eager.encode_image(pixels), eager.encode_text(ids), eager.logit_scale).backward()
        opt_eager.step()

    print(f"bench-s CLIP, batch {b}, fp32, {torch.get_num_threads()} threads "
          f"(BLAS: {kclip.blas_library()}); median of {args.repeat}")
    fwd_ours, fwd_eager = median_seconds(forward(ours), args.repeat), median_seconds(forward(eager), args.repeat)
    print(f"  forward  encode_image+encode_text  kclip {fwd_ours * 1e3:7.1f} ms ({b / fwd_ours:6.0f} pairs/s)   "
          f"PyTorch eager {fwd_eager * 1e3:7.1f} ms ({b / fwd_eager:6.0f} pairs/s)   speed-up {fwd_eager / fwd_ours:.2f}x")
    ours.train()
    eager.train()
    train_ours, train_eager = median_seconds(step_ours, args.repeat), median_seconds(step_eager, args.repeat)
    print(f"  train step (loss, backward, AdamW) kclip {train_ours * 1e3:7.1f} ms   "
          f"PyTorch eager {train_eager * 1e3:7.1f} ms   speed-up {train_eager / train_ours:.2f}x")
    ours.set_grad_checkpointing(True)
    train_ckpt = median_seconds(step_ours, args.repeat)
    print(f"  train step, gradient checkpointing kclip {train_ckpt * 1e3:7.1f} ms")
    plain_mib, ckpt_mib = peak_step_memory(b, False), peak_step_memory(b, True)
    print(f"  peak RSS of a process running one training step: plain {plain_mib:.0f} MiB, "
          f"gradient checkpointing {ckpt_mib:.0f} MiB")


def peak_step_memory(batch, checkpointing):
    """Peak resident set (MiB) of a fresh process that builds the model and runs one training step (ru_maxrss
    cannot be reset, so each setting gets its own process)."""
    import subprocess
    import sys
    code = f"""
import resource, torch, kclip
model, loss_fn = kclip.CLIP(kclip.CLIPConfig.named("bench-s")), kclip.ContrastiveLoss()
model.train()
model.set_grad_checkpointing({checkpointing})
pixels, ids = torch.randn({batch}, 3, 64, 64), torch.randint(1, 49406, ({batch}, 32))
loss_fn(model.encode_image(pixels), model.encode_text(ids)).backward()
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    main()
