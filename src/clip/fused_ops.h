#pragma once
// The CLIP student's elementwise hot spots as autograd functions with their own CPU loops (any other device or
// dtype takes LibTorch's ops): values and gradients equal the composite PyTorch expressions within float32
// rounding (tests/python/test_clip.py checks the whole model against OpenAI's architecture in eager PyTorch).
#include <ATen/ATen.h>

#include <vector>

namespace kclip::detail {

// OpenAI's QuickGELU, u·σ(1.702·u): one pass forward, one backward (LibTorch: a silu pass plus rescaling, and a
// silu_backward that re-derives σ).
at::Tensor quick_gelu(const at::Tensor& u);
// Whether ops on `input` with parameters like `weight` run the fused loops (quick_gelu, attention, attention_packed):
// float32 on the CPU, no CPU autocast.
bool fused_loops_apply(const at::Tensor& input, const at::Tensor& weight);

// Self-attention of `heads` heads from the packed projection qkv = x·in_projᵀ + b ([B, T, 3w]: q, k, v) to the
// heads' outputs [B, T, w] (before out_proj), with the 1/√d scale and an additive mask [T, T] (or undefined).
// Fused loops for float32 contiguous CPU tensors and a contiguous [T, T] mask that needs no gradient
// (attention_is_fused); other masks (per head, broadcast) take LibTorch's ops.
at::Tensor attention(const at::Tensor& qkv, const at::Tensor& mask, int64_t heads);
bool attention_is_fused(const at::Tensor& qkv, const at::Tensor& mask);
// The same for sequences of different lengths packed back to back: qkv [N, 3w] holds lengths[0] rows of the first
// sequence, then lengths[1] of the next, ...; the mask's top-left t × t block applies to a sequence of t rows.
// Returns [N, w]. Same conditions as attention_is_fused.
at::Tensor attention_packed(const at::Tensor& qkv, const std::vector<int64_t>& lengths, const at::Tensor& mask,
                            int64_t heads);

// weight[ids]. When weight.grad already holds a dense gradient on the CPU (optimizers over flat buffers keep it
// between steps, kclip.AdamW does), backward adds the rows that ids touched into it (a sparse gradient) instead of
// building and adding a dense [vocab, width] one that is almost all zeros. Otherwise the dense gradient, as
// torch.nn.Embedding.
at::Tensor embedding_rows(const at::Tensor& weight, const at::Tensor& ids);

}  // namespace kclip::detail
