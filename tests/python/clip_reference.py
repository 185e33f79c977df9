"""OpenAI's CLIP architecture (clip/model.py: ViT image tower, causal text transformer, parameter names included) in
eager PyTorch, written independently of kclip: the reference that kclip's outputs and gradients are checked against
(tests/python/test_clip.py) and the peer its speed is measured beside (bench/bench_clip.py, bench/bench_train.py).
The config is a kclip.CLIPConfig (any object with its fields)."""
from collections import OrderedDict

import torch
import torch.nn as nn


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
