// Multi-head self-attention on the CPU for short sequences (CLIP: 50–257 image tokens, ≤ 77 text tokens), forward
// and backward, straight from the packed q/k/v projection [B, T, 3·w] to [B, T, w] (see fused_ops.h).
//
// Why not LibTorch's bmm: for these sizes each head is a ~65×64×65 product; bmm calls the BLAS once per head and
// batch row (select, checks, packing, OpenBLAS splitting a 0.5 MFLOP product over its threads), and the head
// split/merge around it costs transposing copies forward and backward. Here each (batch, head) pair is gathered
// into small zero-padded buffers that stay in L1/L2, multiplied by a register-blocked kernel, and the softmax,
// scale and mask are applied in place.
#include "clip/fused_ops.h"
#include "clip/simd.h"

#include <torch/autograd.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

namespace kclip::detail {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;
using simd::kLanes;
using simd::v16;

constexpr int64_t kRows = 4;  // rows of C per micro-tile

int64_t round_up(int64_t x, int64_t to) { return (x + to - 1) / to * to; }

// C[m × n] = A[m × k] · B[k × n], row-major with leading dimensions; m a multiple of 4, n of 16, and A, B readable
// over those padded sizes. Tiles of 4 rows × 32 columns (8 accumulators), then 4 × 16.
__attribute__((target_clones("avx512f", "avx2", "default"))) void small_gemm(const float* a, int64_t lda,
                                                                            const float* b, int64_t ldb, float* c,
                                                                            int64_t ldc, int64_t m, int64_t n,
                                                                            int64_t k) {
  for (int64_t i = 0; i < m; i += kRows) {
    const float* a0 = a + i * lda;
    int64_t j = 0;
    for (; j + 2 * kLanes <= n; j += 2 * kLanes) {
      v16 acc[kRows][2] = {};
      for (int64_t p = 0; p < k; ++p) {
        const v16 b0 = simd::load(b + p * ldb + j);
        const v16 b1 = simd::load(b + p * ldb + j + kLanes);
        for (int64_t r = 0; r < kRows; ++r) {
          const float x = a0[r * lda + p];
          acc[r][0] += x * b0;
          acc[r][1] += x * b1;
        }
      }
      for (int64_t r = 0; r < kRows; ++r) {
        simd::store(c + (i + r) * ldc + j, acc[r][0]);
        simd::store(c + (i + r) * ldc + j + kLanes, acc[r][1]);
      }
    }
    for (; j < n; j += kLanes) {
      v16 acc[kRows] = {};
      for (int64_t p = 0; p < k; ++p) {
        const v16 b0 = simd::load(b + p * ldb + j);
        for (int64_t r = 0; r < kRows; ++r) acc[r] += a0[r * lda + p] * b0;
      }
      for (int64_t r = 0; r < kRows; ++r) simd::store(c + (i + r) * ldc + j, acc[r]);
    }
  }
}

// dst[c × r] = srcᵀ for src [r × c] (leading dimensions given).
void transpose(const float* src, int64_t lds, float* dst, int64_t ldd, int64_t rows, int64_t cols) {
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t j = 0; j < cols; ++j) dst[j * ldd + i] = src[i * lds + j];
}

// Copies rows [T × d] with source row stride `stride` into a zero-padded [rows × ld] buffer (pad stays zero).
void gather(const float* src, int64_t stride, int64_t t, int64_t d, float* dst, int64_t ld) {
  for (int64_t i = 0; i < t; ++i) std::copy(src + i * stride, src + i * stride + d, dst + i * ld);
}

void scatter(const float* src, int64_t ld, int64_t t, int64_t d, float* dst, int64_t stride) {
  for (int64_t i = 0; i < t; ++i) std::copy(src + i * ld, src + i * ld + d, dst + i * stride);
}

// The sizes of one (batch, head) problem and its padded buffers.
struct Shape {
  int64_t batch, t, heads, d, w;
  int64_t tr, tp, dp;  // rows padded to the row tile, columns padded to the vector width
  Shape(const at::Tensor& qkv, int64_t heads_)
      : batch(qkv.size(0)), t(qkv.size(1)), heads(heads_), d(qkv.size(2) / 3 / heads_), w(qkv.size(2) / 3),
        tr(round_up(t, kRows)), tp(round_up(t, kLanes)), dp(round_up(d, kLanes)) {}
  // q, k or v (part 0, 1, 2) of head h of batch row b inside the packed [B, T, 3w] projection
  int64_t offset(int64_t b, int64_t part, int64_t h) const { return b * t * 3 * w + part * w + h * d; }
};

struct Buffers {
  std::vector<float> q, k, v, kt, s, x, y;
  explicit Buffers(const Shape& s_) {
    const size_t rows_d = static_cast<size_t>(std::max(s_.tr, s_.dp) * std::max(s_.dp, s_.tp));
    const size_t square = static_cast<size_t>(s_.tr * s_.tp);
    for (auto* buffer : {&q, &k, &v, &kt, &x, &y}) buffer->assign(std::max(rows_d, square), 0.0f);
    s.assign(square, 0.0f);
  }
};

// Softmax of rows [t × t] of s (leading dimension ld, a multiple of 16) after scale and the additive mask; the
// padding columns come out 0. A row masked everywhere gives NaN, as torch.softmax.
__attribute__((target_clones("avx512f", "avx2", "default"))) void softmax_rows(float* s, int64_t ld, int64_t t,
                                                                              float scale, const float* mask) {
  constexpr float kNegInf = -std::numeric_limits<float>::infinity();
  for (int64_t i = 0; i < t; ++i) {
    float* row = s + i * ld;
    if (mask) {
      for (int64_t j = 0; j < t; ++j) row[j] = row[j] * scale + mask[i * t + j];
    } else {
      for (int64_t j = 0; j < t; ++j) row[j] *= scale;
    }
    std::fill(row + t, row + ld, kNegInf);
    v16 top = simd::load(row);
    for (int64_t j = kLanes; j < ld; j += kLanes) {
      const v16 x = simd::load(row + j);
      top = x > top ? x : top;
    }
    const float m = simd::max(top);
    if (m == kNegInf) {
      std::fill(row, row + ld, std::numeric_limits<float>::quiet_NaN());
      continue;
    }
    for (int64_t j = 0; j < ld; ++j) row[j] = simd::exp_approx(row[j] - m);  // masked and padding: exactly 0
    v16 total = {};
    for (int64_t j = 0; j < ld; j += kLanes) total += simd::load(row + j);
    const float inv = 1.0f / simd::sum(total);
    for (int64_t j = 0; j < ld; ++j) row[j] *= inv;
  }
}

// ds = scale · p ⊙ (dp − rowsum(p ⊙ dp)), in place of dp; rows of length ld (padding: p = 0 there).
__attribute__((target_clones("avx512f", "avx2", "default"))) void softmax_backward_rows(const float* p, float* dp,
                                                                                       int64_t ld, int64_t t,
                                                                                       float scale) {
  for (int64_t i = 0; i < t; ++i) {
    const float* prow = p + i * ld;
    float* row = dp + i * ld;
    v16 dot = {};
    for (int64_t j = 0; j < ld; j += kLanes) dot += simd::load(prow + j) * simd::load(row + j);
    const float d = simd::sum(dot);
    for (int64_t j = 0; j < ld; ++j) row[j] = scale * prow[j] * (row[j] - d);
  }
}

// out [B, T, w] and the attention weights probs [B, heads, T, T] from qkv [B, T, 3w].
void attention_forward(const at::Tensor& qkv, const at::Tensor& mask, int64_t heads, double scale, at::Tensor& out,
                       at::Tensor& probs) {
  const Shape sh(qkv, heads);
  const float* src = qkv.data_ptr<float>();
  const float* m = mask.defined() ? mask.data_ptr<float>() : nullptr;
  float* o = out.data_ptr<float>();
  float* p_all = probs.data_ptr<float>();
  // One thread: beside OpenBLAS's worker, which spins on the other core between GEMMs, a second thread measured
  // no faster here.
  Buffers buf(sh);
  for (int64_t pair = 0; pair < sh.batch * sh.heads; ++pair) {
    const int64_t b = pair / sh.heads, h = pair % sh.heads;
    gather(src + sh.offset(b, 0, h), 3 * sh.w, sh.t, sh.d, buf.q.data(), sh.dp);
    gather(src + sh.offset(b, 1, h), 3 * sh.w, sh.t, sh.d, buf.k.data(), sh.dp);
    gather(src + sh.offset(b, 2, h), 3 * sh.w, sh.t, sh.d, buf.v.data(), sh.dp);
    transpose(buf.k.data(), sh.dp, buf.kt.data(), sh.tp, sh.t, sh.d);                                // kᵀ [d × T]
    small_gemm(buf.q.data(), sh.dp, buf.kt.data(), sh.tp, buf.s.data(), sh.tp, sh.tr, sh.tp, sh.d);  // q·kᵀ
    softmax_rows(buf.s.data(), sh.tp, sh.t, static_cast<float>(scale), m);
    scatter(buf.s.data(), sh.tp, sh.t, sh.t, p_all + pair * sh.t * sh.t, sh.t);
    small_gemm(buf.s.data(), sh.tp, buf.v.data(), sh.dp, buf.x.data(), sh.dp, sh.tr, sh.dp, sh.t);  // p·v
    scatter(buf.x.data(), sh.dp, sh.t, sh.d, o + b * sh.t * sh.w + h * sh.d, sh.w);
  }
}

// d qkv [B, T, 3w] from d out [B, T, w]: dv = pᵀ·do, dp = do·vᵀ, ds = p ⊙ (dp − rowsum(p ⊙ dp)),
// dq = scale·ds·k, dk = scale·dsᵀ·q.
void attention_backward(const at::Tensor& qkv, const at::Tensor& probs, const at::Tensor& grad_out, int64_t heads,
                        double scale, at::Tensor& grad_qkv) {
  const Shape sh(qkv, heads);
  const float* src = qkv.data_ptr<float>();
  const float* p_all = probs.data_ptr<float>();
  const float* dout = grad_out.data_ptr<float>();
  float* dst = grad_qkv.data_ptr<float>();
  const float sc = static_cast<float>(scale);
  Buffers buf(sh);
  std::vector<float> p(static_cast<size_t>(sh.tr * sh.tp), 0.0f), dp = p, pt = p;
  for (int64_t pair = 0; pair < sh.batch * sh.heads; ++pair) {
    const int64_t b = pair / sh.heads, h = pair % sh.heads;
    gather(src + sh.offset(b, 0, h), 3 * sh.w, sh.t, sh.d, buf.q.data(), sh.dp);
    gather(src + sh.offset(b, 1, h), 3 * sh.w, sh.t, sh.d, buf.k.data(), sh.dp);
    gather(src + sh.offset(b, 2, h), 3 * sh.w, sh.t, sh.d, buf.v.data(), sh.dp);
    gather(dout + b * sh.t * sh.w + h * sh.d, sh.w, sh.t, sh.d, buf.x.data(), sh.dp);  // do [T × d]
    gather(p_all + pair * sh.t * sh.t, sh.t, sh.t, sh.t, p.data(), sh.tp);
    // dv = pᵀ·do
    transpose(p.data(), sh.tp, pt.data(), sh.tp, sh.t, sh.t);
    small_gemm(pt.data(), sh.tp, buf.x.data(), sh.dp, buf.y.data(), sh.dp, sh.tr, sh.dp, sh.t);
    scatter(buf.y.data(), sh.dp, sh.t, sh.d, dst + sh.offset(b, 2, h), 3 * sh.w);
    // dp = do·vᵀ, then ds (scaled) in its place
    transpose(buf.v.data(), sh.dp, buf.kt.data(), sh.tp, sh.t, sh.d);
    small_gemm(buf.x.data(), sh.dp, buf.kt.data(), sh.tp, dp.data(), sh.tp, sh.tr, sh.tp, sh.d);
    softmax_backward_rows(p.data(), dp.data(), sh.tp, sh.t, sc);
    // dq = ds·k
    small_gemm(dp.data(), sh.tp, buf.k.data(), sh.dp, buf.y.data(), sh.dp, sh.tr, sh.dp, sh.t);
    scatter(buf.y.data(), sh.dp, sh.t, sh.d, dst + sh.offset(b, 0, h), 3 * sh.w);
    // dk = dsᵀ·q
    transpose(dp.data(), sh.tp, pt.data(), sh.tp, sh.t, sh.t);
    small_gemm(pt.data(), sh.tp, buf.q.data(), sh.dp, buf.y.data(), sh.dp, sh.tr, sh.dp, sh.t);
    scatter(buf.y.data(), sh.dp, sh.t, sh.d, dst + sh.offset(b, 1, h), 3 * sh.w);
  }
}

struct Attention : torch::autograd::Function<Attention> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& qkv, const at::Tensor* mask, int64_t heads) {
    const int64_t b = qkv.size(0), t = qkv.size(1), w = qkv.size(2) / 3;
    const double scale = 1.0 / std::sqrt(static_cast<double>(w / heads));
    at::Tensor out = at::empty({b, t, w}, qkv.options());
    at::Tensor probs = at::empty({b, heads, t, t}, qkv.options());
    attention_forward(qkv, mask ? *mask : at::Tensor(), heads, scale, out, probs);
    ctx->save_for_backward({qkv, probs});
    ctx->saved_data["heads"] = heads;
    return out;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_output) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor &qkv = saved[0], &probs = saved[1];
    const int64_t heads = ctx->saved_data["heads"].toInt();
    const double scale = 1.0 / std::sqrt(static_cast<double>(qkv.size(2) / 3 / heads));
    at::Tensor grad_qkv = at::empty_like(qkv);
    attention_backward(qkv, probs, grad_output[0].contiguous(), heads, scale, grad_qkv);
    return {grad_qkv, at::Tensor(), at::Tensor()};
  }
};

}  // namespace

bool attention_is_fused(const at::Tensor& qkv, const at::Tensor& mask) {
  if (!qkv.device().is_cpu() || qkv.scalar_type() != at::kFloat || !qkv.is_contiguous()) return false;
  return !mask.defined() ||
         (mask.device().is_cpu() && mask.scalar_type() == at::kFloat && mask.is_contiguous() && !mask.requires_grad());
}

at::Tensor attention(const at::Tensor& qkv, const at::Tensor& mask, int64_t heads) {
  return Attention::apply(qkv, &mask, heads);
}

}  // namespace kclip::detail
