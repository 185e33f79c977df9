// Fused CPU loops for the CLIP student's elementwise hot spots (see fused_ops.h).
#include "clip/fused_ops.h"
#include "core/target_clones.h"
#include "clip/simd.h"
#include "core/autocast.h"

#include <torch/autograd.h>

#include <cstdint>

namespace kclip::detail {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

constexpr float kQuickGelu = 1.702f;

inline float quick_gelu_sigmoid(float u) { return 1.0f / (1.0f + simd::exp_approx(-kQuickGelu * u)); }

KCLIP_TARGET_CLONES("avx512f", "avx2", "default") void quick_gelu_forward(const float* u, float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] = u[i] * quick_gelu_sigmoid(u[i]);
}

// d/du u·σ(ku) = σ(ku) + k·u·σ(ku)·(1 − σ(ku))
KCLIP_TARGET_CLONES("avx512f", "avx2", "default") void quick_gelu_backward(const float* dy, const float* u,
                                                                                     float* du, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    const float s = quick_gelu_sigmoid(u[i]);
    du[i] = dy[i] * (s + kQuickGelu * u[i] * s * (1.0f - s));
  }
}

struct QuickGelu : torch::autograd::Function<QuickGelu> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& u) {
    ctx->save_for_backward({u});
    at::Tensor y = at::empty_like(u);
    quick_gelu_forward(u.data_ptr<float>(), y.data_ptr<float>(), u.numel());
    return y;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_output) {
    const at::Tensor u = ctx->get_saved_variables()[0];
    const at::Tensor dy = grad_output[0].contiguous();
    if (at::GradMode::is_enabled()) {  // double backward: the composite expression, which autograd can differentiate
      const at::Tensor s = at::sigmoid(u * kQuickGelu);
      return {dy * (s + kQuickGelu * u * s * (1 - s))};
    }
    at::Tensor du = at::empty_like(u);
    quick_gelu_backward(dy.data_ptr<float>(), u.data_ptr<float>(), du.data_ptr<float>(), u.numel());
    return {du};
  }
};

struct EmbeddingRows : torch::autograd::Function<EmbeddingRows> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& weight, const at::Tensor& ids) {
    ctx->save_for_backward({ids});
    ctx->saved_data["weight"] = weight;  // the parameter itself: backward looks at its .grad
    return at::embedding(weight, ids);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_output) {
    const at::Tensor ids = ctx->get_saved_variables()[0];
    const at::Tensor weight = ctx->saved_data["weight"].toTensor();
    const at::Tensor& grad = grad_output[0];
    const at::Tensor& accumulated = weight.grad();
    // AccumulateGrad adds a sparse gradient into an existing dense .grad in place, touching only these rows.
    if (accumulated.defined() && accumulated.layout() == at::kStrided && accumulated.device().is_cpu() &&
        accumulated.scalar_type() == grad.scalar_type() && !at::GradMode::is_enabled()) {
      const at::Tensor values = grad.reshape({-1, grad.size(-1)});
      return {at::_sparse_coo_tensor_unsafe(ids.reshape({1, -1}), values, weight.sizes(), values.options().layout(at::kSparse)),
              at::Tensor()};
    }
    return {at::embedding_backward(grad, ids, weight.size(0), -1, false, false), at::Tensor()};
  }
};

}  // namespace

bool fused_loops_apply(const at::Tensor& input, const at::Tensor& weight) {
  return input.device().is_cpu() && input.scalar_type() == at::kFloat && weight.scalar_type() == at::kFloat &&
         !AutocastState().cpu;
}

at::Tensor quick_gelu(const at::Tensor& u) {
  if (u.device().is_cpu() && u.scalar_type() == at::kFloat && u.is_contiguous()) return QuickGelu::apply(u);
  return u * at::sigmoid(u * kQuickGelu);
}

at::Tensor embedding_rows(const at::Tensor& weight, const at::Tensor& ids) { return EmbeddingRows::apply(weight, ids); }

}  // namespace kclip::detail
