// Multi-head self-attention on the CPU for short sequences (CLIP: 50–257 image tokens, ≤ 77 text tokens), forward
// and backward, straight from the packed q/k/v projection [B, T, 3·w] to [B, T, w] (see fused_ops.h).
//
// Why not LibTorch's bmm: for these sizes each head is a ~65×64×65 product; bmm calls the BLAS once per head and
// batch row (select, checks, packing, OpenBLAS splitting a 0.5 MFLOP product over its threads), and the head
// split/merge around it costs transposing copies forward and backward. Here each (batch, head) pair is gathered
// into small zero-padded buffers that stay in L1/L2, multiplied by a register-blocked kernel, and the softmax,
// scale and mask are applied in place.
#include "clip/fused_ops.h"
#include "core/target_clones.h"
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
// over those padded sizes. Tiles of 4 rows × 32 columns (8 accumulators), then 4 × 16. The accumulators are named
// variables, not an array: they stay in registers (an array may live on the stack, where ASan's fake frames do
// not give the 64-byte alignment GCC assumes for it).
KCLIP_TARGET_CLONES("avx512f", "avx2", "default") void small_gemm(const float* a, int64_t lda,
                                                                            const float* b, int64_t ldb, float* c,
                                                                            int64_t ldc, int64_t m, int64_t n,
                                                                            int64_t k) {
  static_assert(kRows == 4, "the tiles below are written out for 4 rows");
  for (int64_t i = 0; i < m; i += kRows) {
    const float *a0 = a + i * lda, *a1 = a0 + lda, *a2 = a1 + lda, *a3 = a2 + lda;
    float *c0 = c + i * ldc, *c1 = c0 + ldc, *c2 = c1 + ldc, *c3 = c2 + ldc;
    int64_t j = 0;
    for (; j + 2 * kLanes <= n; j += 2 * kLanes) {
      v16 s00 = {}, s01 = {}, s10 = {}, s11 = {}, s20 = {}, s21 = {}, s30 = {}, s31 = {};
      for (int64_t p = 0; p < k; ++p) {
        const v16 b0 = KCLIP_LOAD16(b + p * ldb + j), b1 = KCLIP_LOAD16(b + p * ldb + j + kLanes);
        s00 += a0[p] * b0, s01 += a0[p] * b1;
        s10 += a1[p] * b0, s11 += a1[p] * b1;
        s20 += a2[p] * b0, s21 += a2[p] * b1;
        s30 += a3[p] * b0, s31 += a3[p] * b1;
      }
      simd::store(c0 + j, s00), simd::store(c0 + j + kLanes, s01);
      simd::store(c1 + j, s10), simd::store(c1 + j + kLanes, s11);
      simd::store(c2 + j, s20), simd::store(c2 + j + kLanes, s21);
      simd::store(c3 + j, s30), simd::store(c3 + j + kLanes, s31);
    }
    for (; j < n; j += kLanes) {
      v16 s0 = {}, s1 = {}, s2 = {}, s3 = {};
      for (int64_t p = 0; p < k; ++p) {
        const v16 b0 = KCLIP_LOAD16(b + p * ldb + j);
        s0 += a0[p] * b0, s1 += a1[p] * b0, s2 += a2[p] * b0, s3 += a3[p] * b0;
      }
      simd::store(c0 + j, s0), simd::store(c1 + j, s1), simd::store(c2 + j, s2), simd::store(c3 + j, s3);
    }
  }
}

// dst[c × r] = srcᵀ for src [r × c] (leading dimensions given).
void transpose(const float* src, int64_t lds, float* dst, int64_t ldd, int64_t rows, int64_t cols) {
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t j = 0; j < cols; ++j) dst[j * ldd + i] = src[i * lds + j];
}

// Copies `rows` rows of `cols` floats from src (row stride src_ld) to dst (row stride dst_ld): a head's q, k, v
// into a work buffer and results back out.
void copy_rows(const float* src, int64_t src_ld, int64_t rows, int64_t cols, float* dst, int64_t dst_ld) {
  for (int64_t i = 0; i < rows; ++i) std::copy(src + i * src_ld, src + i * src_ld + cols, dst + i * dst_ld);
}

// The sequences of one call: sequence n is lens[n] consecutive rows of the packed projection [N, 3w] from row
// starts[n] (a [B, T, 3w] batch is B sequences of T rows). Work buffers are sized for the longest.
struct Shape {
  std::vector<int64_t> starts, lens;
  int64_t heads, d, w, tmax = 0;
  Shape(const at::Tensor& qkv, const std::vector<int64_t>& lengths, int64_t heads_)
      : lens(lengths), heads(heads_), d(qkv.size(-1) / 3 / heads_), w(qkv.size(-1) / 3) {
    int64_t row = 0;
    for (const int64_t t : lens) {
      starts.push_back(row);
      row += t;
      tmax = std::max(tmax, t);
    }
  }
  int64_t sequences() const { return static_cast<int64_t>(lens.size()); }
  // q, k or v (part 0, 1, 2) of head h of sequence n inside the packed projection
  int64_t offset(int64_t n, int64_t part, int64_t h) const { return starts[n] * 3 * w + part * w + h * d; }
};

// One (sequence, head) problem's padded sizes: rows to the row tile, columns to the vector width.
struct Tile {
  int64_t t, tr, tp, dp;
  Tile(int64_t t_, int64_t d) : t(t_), tr(round_up(t_, kRows)), tp(round_up(t_, kLanes)), dp(round_up(d, kLanes)) {}
};

// Buffers for the longest sequence. Stale values left by a longer sequence in padding rows or columns are never
// read into a result: products read k-dimensions only up to t, and softmax sets its own padding.
struct Buffers {
  std::vector<float> q, k, v, kt, s, x, y, p, pt;
  explicit Buffers(const Shape& sh) {
    const Tile big(sh.tmax, sh.d);
    const size_t size = static_cast<size_t>(std::max(big.tr, big.dp) * std::max(big.dp, big.tp));
    for (auto* buffer : {&q, &k, &v, &kt, &s, &x, &y, &p, &pt}) buffer->assign(size, 0.0f);
  }
};

// Softmax of rows [t × t] of s (leading dimension ld, a multiple of 16) after scale and the additive mask (leading
// dimension mask_ld); the padding columns come out 0. A row masked everywhere gives NaN, as torch.softmax.
KCLIP_TARGET_CLONES("avx512f", "avx2", "default") void softmax_rows(float* s, int64_t ld, int64_t t,
                                                                              float scale, const float* mask,
                                                                              int64_t mask_ld) {
  constexpr float kNegInf = -std::numeric_limits<float>::infinity();
  for (int64_t i = 0; i < t; ++i) {
    float* row = s + i * ld;
    if (mask) {
      for (int64_t j = 0; j < t; ++j) row[j] = row[j] * scale + mask[i * mask_ld + j];
    } else {
      for (int64_t j = 0; j < t; ++j) row[j] *= scale;
    }
    std::fill(row + t, row + ld, kNegInf);
    v16 top = KCLIP_LOAD16(row);
    for (int64_t j = kLanes; j < ld; j += kLanes) {
      const v16 x = KCLIP_LOAD16(row + j);
      top = x > top ? x : top;
    }
    const float m = simd::max(top);
    if (m == kNegInf) {
      std::fill(row, row + ld, std::numeric_limits<float>::quiet_NaN());
      continue;
    }
    for (int64_t j = 0; j < ld; ++j) row[j] = simd::exp_approx(row[j] - m);  // masked and padding: exactly 0
    v16 total = {};
    for (int64_t j = 0; j < ld; j += kLanes) total += KCLIP_LOAD16(row + j);
    const float inv = 1.0f / simd::sum(total);
    for (int64_t j = 0; j < ld; ++j) row[j] *= inv;
  }
}

// ds = scale · p ⊙ (dp − rowsum(p ⊙ dp)), in place of dp, over the t columns of each row (leading dimension ld).
KCLIP_TARGET_CLONES("avx512f", "avx2", "default") void softmax_backward_rows(const float* p, float* dp,
                                                                                       int64_t ld, int64_t t,
                                                                                       float scale) {
  const int64_t whole = t / kLanes * kLanes;
  for (int64_t i = 0; i < t; ++i) {
    const float* prow = p + i * ld;
    float* row = dp + i * ld;
    v16 dot = {};
    for (int64_t j = 0; j < whole; j += kLanes) dot += KCLIP_LOAD16(prow + j) * KCLIP_LOAD16(row + j);
    float d = simd::sum(dot);
    for (int64_t j = whole; j < t; ++j) d += prow[j] * row[j];
    for (int64_t j = 0; j < t; ++j) row[j] = scale * prow[j] * (row[j] - d);
  }
}

// out [N, w] and the attention weights probs [sequences, heads, tmax, tmax] (sequence n's in the top-left t × t)
// from the packed projection qkv [N, 3w].
void attention_forward(const at::Tensor& qkv, const Shape& sh, const at::Tensor& mask, double scale, at::Tensor& out,
                       at::Tensor& probs) {
  const float* src = qkv.data_ptr<float>();
  const float* m = mask.defined() ? mask.data_ptr<float>() : nullptr;
  const int64_t mask_ld = mask.defined() ? mask.size(1) : 0;
  float* o = out.data_ptr<float>();
  float* p_all = probs.data_ptr<float>();
  // One thread: beside OpenBLAS's worker, which spins on the other core between GEMMs, a second thread measured
  // no faster here.
  Buffers buf(sh);
  for (int64_t pair = 0; pair < sh.sequences() * sh.heads; ++pair) {
    const int64_t n = pair / sh.heads, h = pair % sh.heads;
    const Tile tl(sh.lens[n], sh.d);
    copy_rows(src + sh.offset(n, 0, h), 3 * sh.w, tl.t, sh.d, buf.q.data(), tl.dp);
    copy_rows(src + sh.offset(n, 1, h), 3 * sh.w, tl.t, sh.d, buf.k.data(), tl.dp);
    copy_rows(src + sh.offset(n, 2, h), 3 * sh.w, tl.t, sh.d, buf.v.data(), tl.dp);
    transpose(buf.k.data(), tl.dp, buf.kt.data(), tl.tp, tl.t, sh.d);                                // kᵀ [d × t]
    small_gemm(buf.q.data(), tl.dp, buf.kt.data(), tl.tp, buf.s.data(), tl.tp, tl.tr, tl.tp, sh.d);  // q·kᵀ
    softmax_rows(buf.s.data(), tl.tp, tl.t, static_cast<float>(scale), m, mask_ld);
    copy_rows(buf.s.data(), tl.tp, tl.t, tl.t, p_all + pair * sh.tmax * sh.tmax, sh.tmax);
    small_gemm(buf.s.data(), tl.tp, buf.v.data(), tl.dp, buf.x.data(), tl.dp, tl.tr, tl.dp, tl.t);  // p·v
    copy_rows(buf.x.data(), tl.dp, tl.t, sh.d, o + sh.starts[n] * sh.w + h * sh.d, sh.w);
  }
}

// d qkv [N, 3w] from d out [N, w]: dv = pᵀ·do, dp = do·vᵀ, ds = p ⊙ (dp − rowsum(p ⊙ dp)),
// dq = scale·ds·k, dk = scale·dsᵀ·q.
void attention_backward(const at::Tensor& qkv, const Shape& sh, const at::Tensor& probs, const at::Tensor& grad_out,
                        double scale, at::Tensor& grad_qkv) {
  const float* src = qkv.data_ptr<float>();
  const float* p_all = probs.data_ptr<float>();
  const float* dout = grad_out.data_ptr<float>();
  float* dst = grad_qkv.data_ptr<float>();
  const float sc = static_cast<float>(scale);
  Buffers buf(sh);
  for (int64_t pair = 0; pair < sh.sequences() * sh.heads; ++pair) {
    const int64_t n = pair / sh.heads, h = pair % sh.heads;
    const Tile tl(sh.lens[n], sh.d);
    float *p = buf.p.data(), *pt = buf.pt.data(), *dp = buf.s.data();
    copy_rows(src + sh.offset(n, 0, h), 3 * sh.w, tl.t, sh.d, buf.q.data(), tl.dp);
    copy_rows(src + sh.offset(n, 1, h), 3 * sh.w, tl.t, sh.d, buf.k.data(), tl.dp);
    copy_rows(src + sh.offset(n, 2, h), 3 * sh.w, tl.t, sh.d, buf.v.data(), tl.dp);
    copy_rows(dout + sh.starts[n] * sh.w + h * sh.d, sh.w, tl.t, sh.d, buf.x.data(), tl.dp);  // do [t × d]
    copy_rows(p_all + pair * sh.tmax * sh.tmax, sh.tmax, tl.t, tl.t, p, tl.tp);
    // dv = pᵀ·do
    transpose(p, tl.tp, pt, tl.tp, tl.t, tl.t);
    small_gemm(pt, tl.tp, buf.x.data(), tl.dp, buf.y.data(), tl.dp, tl.tr, tl.dp, tl.t);
    copy_rows(buf.y.data(), tl.dp, tl.t, sh.d, dst + sh.offset(n, 2, h), 3 * sh.w);
    // dp = do·vᵀ, then ds (scaled) in its place
    transpose(buf.v.data(), tl.dp, buf.kt.data(), tl.tp, tl.t, sh.d);
    small_gemm(buf.x.data(), tl.dp, buf.kt.data(), tl.tp, dp, tl.tp, tl.tr, tl.tp, sh.d);
    softmax_backward_rows(p, dp, tl.tp, tl.t, sc);
    // dq = ds·k
    small_gemm(dp, tl.tp, buf.k.data(), tl.dp, buf.y.data(), tl.dp, tl.tr, tl.dp, tl.t);
    copy_rows(buf.y.data(), tl.dp, tl.t, sh.d, dst + sh.offset(n, 0, h), 3 * sh.w);
    // dk = dsᵀ·q
    transpose(dp, tl.tp, pt, tl.tp, tl.t, tl.t);
    small_gemm(pt, tl.tp, buf.q.data(), tl.dp, buf.y.data(), tl.dp, tl.tr, tl.dp, tl.t);
    copy_rows(buf.y.data(), tl.dp, tl.t, sh.d, dst + sh.offset(n, 1, h), 3 * sh.w);
  }
}

// qkv: [N, 3w] or [B, T, 3w]; lengths: the rows of each sequence (for [B, T, 3w]: B times T).
struct Attention : torch::autograd::Function<Attention> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& qkv, const at::Tensor* mask,
                            std::vector<int64_t> lengths, int64_t heads) {
    const Shape sh(qkv, lengths, heads);
    const double scale = 1.0 / std::sqrt(static_cast<double>(sh.d));
    std::vector<int64_t> out_sizes = qkv.sizes().vec();
    out_sizes.back() = sh.w;
    at::Tensor out = at::empty(out_sizes, qkv.options());
    at::Tensor probs = at::empty({sh.sequences(), heads, sh.tmax, sh.tmax}, qkv.options());
    attention_forward(qkv, sh, mask ? *mask : at::Tensor(), scale, out, probs);
    ctx->save_for_backward({qkv, probs});
    ctx->saved_data["heads"] = heads;
    ctx->saved_data["lengths"] = lengths;
    return out;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_output) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor &qkv = saved[0], &probs = saved[1];
    const Shape sh(qkv, ctx->saved_data["lengths"].toIntVector(), ctx->saved_data["heads"].toInt());
    at::Tensor grad_qkv = at::empty_like(qkv);
    attention_backward(qkv, sh, probs, grad_output[0].contiguous(), 1.0 / std::sqrt(static_cast<double>(sh.d)), grad_qkv);
    return {grad_qkv, at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

}  // namespace

bool attention_is_fused(const at::Tensor& qkv, const at::Tensor& mask) {
  if (!qkv.device().is_cpu() || qkv.scalar_type() != at::kFloat || !qkv.is_contiguous()) return false;
  if (!mask.defined()) return true;
  const bool square = qkv.dim() == 3 && mask.dim() == 2 && mask.size(0) == qkv.size(1) && mask.size(1) == qkv.size(1);
  return square && mask.device().is_cpu() && mask.scalar_type() == at::kFloat && mask.is_contiguous() &&
         !mask.requires_grad();
}

at::Tensor attention(const at::Tensor& qkv, const at::Tensor& mask, int64_t heads) {
  return Attention::apply(qkv, &mask, std::vector<int64_t>(qkv.size(0), qkv.size(1)), heads);
}

at::Tensor attention_packed(const at::Tensor& qkv, const std::vector<int64_t>& lengths, const at::Tensor& mask,
                            int64_t heads) {
  return Attention::apply(qkv, &mask, lengths, heads);
}

}  // namespace kclip::detail
