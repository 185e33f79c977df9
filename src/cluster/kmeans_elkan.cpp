// K-means iterations with Elkan's bounds (Elkan 2003), rows recomputed by GEMM.
//
// Lloyd's iterations without most of their distance computations. Each row keeps an upper bound u on the
// distance to its centroid and a lower bound l_c on the distance to every other centroid. When the centroids
// move by δ, u grows by δ of its own centroid and each l_c shrinks by δ_c; the row's assignment cannot change
// while u ≤ max(l_c, ½·d(own, c)) for every c. Only the rows where that fails are looked at: first u is made
// exact (one dot product), and the rows that still fail get all k distances from one GEMM, like Lloyd's pass.
// Distances are Euclidean (for the cosine metric, between unit vectors: the chord √(2 − 2·cos)); bounds are
// widened by the GEMM's rounding so that a skipped row is one whose assignment truly cannot change. The
// per-cluster sums are kept in float64 and updated by the rows that changed cluster; the inertia follows from
// them (Σ‖x‖² − 2·Σ c·S_c + Σ n_c·‖c‖²) without another pass.

#include "cluster/kmeans_internal.h"
#include "core/target_clones.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

namespace kclip::kmeans_internal {

namespace {

// Rounding slack of a float32 squared distance ‖x‖² − 2·x·c + ‖c‖² accumulated over D terms, per unit of
// ‖x‖² + ‖c‖² (a generous bound: it only makes fewer rows skip).
double slack_factor(int64_t dim) { return 4 * std::numeric_limits<float>::epsilon() * std::sqrt(double(dim)); }

at::Tensor rounding_slack(const at::Tensor& x_sq, double centroid_sq_max, int64_t dim) {
  return (x_sq + centroid_sq_max) * slack_factor(dim);
}

struct ElkanState {
  at::Tensor labels;  // [N] int64
  at::Tensor upper;   // [N] float32
  at::Tensor lower;   // [N, k] float32, +inf at the row's own centroid
  at::Tensor sums;    // [k, D] float64: Σ of each cluster's (prepared) rows
  at::Tensor counts;  // [k] float64
  // Reused between iterations: fresh large allocations cost a page fault per 4 KiB on every iteration.
  int64_t chunk = 0;           // rows per chunk (memory budget)
  at::Tensor rows_buffer;      // [chunk, D] float32: gathered rows
  at::Tensor distance_buffer;  // [chunk, k] float32: GEMM output
};

// Squared norms of the prepared rows (1 for the cosine metric).
at::Tensor prepared_sq(const Data& data, const at::Tensor& rows, bool cosine) {
  return cosine ? at::ones({rows.size(0)}, data.norms.options()) : data.norms.index_select(0, rows);
}

// Exact distances from `chunk` (the prepared rows `rows`) to every centroid by one GEMM; resets their labels and
// bounds in one pass over the [rows, k] block. Returns the new labels.
at::Tensor recompute_rows(ElkanState& s, const at::Tensor& rows, const at::Tensor& chunk, const at::Tensor& chunk_sq,
                          const at::Tensor& centroids, const at::Tensor& centroid_sq) {
  const int64_t m = chunk.size(0), k = centroids.size(0);
  if (s.distance_buffer.numel() < m * k) s.distance_buffer = at::empty({std::max(s.chunk, m) * k}, chunk.options());
  at::Tensor partial = s.distance_buffer.narrow(0, 0, m * k).view({m, k});
  at::addmm_out(partial, centroid_sq.unsqueeze(0), chunk, centroids.t(), 1, -2);  // ‖c‖² − 2·x·c
  const auto slack_per_sq = static_cast<float>(slack_factor(chunk.size(1)));
  const auto centroid_sq_max = static_cast<float>(centroid_sq.max().item<double>());
  at::Tensor labels = at::empty({m}, s.labels.options());
  const float* d = partial.data_ptr<float>();
  const float* x_sq = chunk_sq.data_ptr<float>();
  const int64_t* row = rows.data_ptr<int64_t>();
  int64_t* label = labels.data_ptr<int64_t>();
  float* lower = s.lower.data_ptr<float>();
  float* upper = s.upper.data_ptr<float>();
  int64_t* own = s.labels.data_ptr<int64_t>();
  for (int64_t i = 0; i < m; ++i) {
    const float* di = d + i * k;
    float* l = lower + row[i] * k;
    const float slack = slack_per_sq * (x_sq[i] + centroid_sq_max);
    int64_t best = 0;
    for (int64_t c = 1; c < k; ++c) best = di[c] < di[best] ? c : best;
    for (int64_t c = 0; c < k; ++c) l[c] = std::sqrt(std::max(di[c] + x_sq[i] - slack, 0.0f));
    l[best] = std::numeric_limits<float>::infinity();
    upper[row[i]] = std::sqrt(std::max(di[best] + x_sq[i], 0.0f) + slack);
    own[row[i]] = label[i] = best;
  }
  return labels;
}

double inertia_from_sums(const ElkanState& s, double total_sq, const at::Tensor& centroids, bool cosine) {
  const at::Tensor c = centroids.to(at::kDouble);
  const double cross = (c * s.sums).sum().item<double>();
  const double own = (s.counts * c.pow(2).sum(1)).sum().item<double>();
  const double squared = std::max(0.0, total_sq - 2 * cross + own);
  return cosine ? squared / 2 : squared;  // cosine: ‖x̂ − c‖² = 2·(1 − cos)
}

// Squared distance between a data row (scaled by `scale`: 1/‖x‖ for the cosine metric, else 1) and a
// centroid, summed directly (no cancellation); eight partial sums let the compiler vectorise.
KCLIP_TARGET_CLONES("avx2", "default") float row_distance_sq(const float* x, float scale, const float* c,
                                                                        int64_t dim) {
  float partial[8] = {};
  int64_t j = 0;
  for (; j + 8 <= dim; j += 8)
    for (int64_t t = 0; t < 8; ++t) {
      const float diff = x[j + t] * scale - c[j + t];
      partial[t] += diff * diff;
    }
  float total = 0;
  for (; j < dim; ++j) total += (x[j] * scale - c[j]) * (x[j] * scale - c[j]);
  for (float p : partial) total += p;
  return total;
}

// Shifts a row's lower bounds by the centroids' moves; true when some centroid may now be nearer than its own.
KCLIP_TARGET_CLONES("avx2", "default") bool shift_row(float* l, const float* g, const float* delta, float u,
                                                                 int64_t k) {
  bool any = false;
  for (int64_t j = 0; j < k; ++j) {
    l[j] -= delta[j];  // +inf at the own centroid stays +inf
    any |= (u > l[j]) & (u > g[j]);
  }
  return any;
}

KCLIP_TARGET_CLONES("avx2", "default") bool row_open(const float* l, const float* g, float u, int64_t k) {
  bool any = false;
  for (int64_t j = 0; j < k; ++j) any |= (u > l[j]) & (u > g[j]);  // l = +inf at the own centroid
  return any;
}

// After the centroids moved by `shift` [k]: shifts every row's bounds, makes u exact where the shifted bounds no
// longer prove the row's assignment, and returns the rows that even then may change (to recompute by GEMM).
at::Tensor rows_to_recompute(ElkanState& s, const Data& data, const at::Tensor& dense, bool cosine,
                             const at::Tensor& centroids, const at::Tensor& centroid_sq, const at::Tensor& shift,
                             const at::Tensor& half_gap) {
  const int64_t n = s.lower.size(0), k = s.lower.size(1), dim = dense.size(1);
  const double centroid_sq_max = centroid_sq.max().item<double>();
  const auto slack_per_sq = static_cast<float>(slack_factor(dim));
  at::Tensor maybe = at::empty({n}, s.labels.options().dtype(at::kBool));
  float* lower = s.lower.data_ptr<float>();
  float* upper = s.upper.data_ptr<float>();
  const int64_t* labels = s.labels.data_ptr<int64_t>();
  const float* delta = shift.data_ptr<float>();
  const float* gap = half_gap.data_ptr<float>();
  const float* x = dense.data_ptr<float>();
  const float* c = centroids.data_ptr<float>();
  const float* norms = data.norms.data_ptr<float>();  // ‖x‖² (l2) or 1/‖x‖ (cosine)
  bool* flag = maybe.data_ptr<bool>();
  auto open = [k](const float* l, const float* g, float u) { return row_open(l, g, u, k); };
  at::parallel_for(0, n, 1024, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      float* l = lower + i * k;
      const int64_t own = labels[i];
      const float* g = gap + own * k;
      float u = upper[i] += delta[own];
      if (!shift_row(l, g, delta, u, k)) {
        flag[i] = false;
        continue;
      }
      const float x_sq = cosine ? 1.0f : norms[i];
      const float d2 = row_distance_sq(x + i * dim, cosine ? norms[i] : 1.0f, c + own * dim, dim);
      u = upper[i] = std::sqrt(d2 + slack_per_sq * (x_sq + static_cast<float>(centroid_sq_max)));
      flag[i] = open(l, g, u);
    }
  });
  return maybe.nonzero().squeeze(1);
}

// Rows `ids` of the float32 [N, D] `dense` (scaled to unit length for the cosine metric), copied row by row:
// LibTorch's index_select copies several times slower here.
at::Tensor gather_dense(ElkanState& s, const at::Tensor& dense, const at::Tensor& ids, const Data& data, bool cosine) {
  const int64_t m = ids.numel(), dim = dense.size(1);
  if (s.rows_buffer.numel() < m * dim) s.rows_buffer = at::empty({s.chunk * dim}, dense.options());
  at::Tensor out = s.rows_buffer.narrow(0, 0, m * dim).view({m, dim});
  const float* src = dense.data_ptr<float>();
  const float* inverse_norm = data.norms.data_ptr<float>();
  const int64_t* id = ids.data_ptr<int64_t>();
  float* dst = out.data_ptr<float>();
  for (int64_t i = 0; i < m; ++i) {
    const float* row = src + id[i] * dim;
    if (cosine) {
      for (int64_t j = 0; j < dim; ++j) dst[i * dim + j] = row[j] * inverse_norm[id[i]];
    } else {
      std::memcpy(dst + i * dim, row, dim * sizeof(float));
    }
  }
  return out;
}

// Recomputes rows by GEMM (`rows`, or every row when undefined: contiguous chunks, no gather), in chunks
// within the memory budget, and moves the rows that changed cluster between the sums.
void recompute(ElkanState& s, const Data& data, const at::Tensor& dense, const at::Tensor& rows,
               const at::Tensor& centroids, const at::Tensor& centroid_sq, const KMeansOptions& o) {
  const bool cosine = is_cosine(o), all = !rows.defined();
  const int64_t total = all ? dense.size(0) : rows.numel(), step = chunk_rows(o, dense.size(1));
  for (int64_t start = 0; start < total; start += step) {
    const int64_t count = std::min(step, total - start);
    at::Tensor ids = all ? at::arange(start, start + count, s.labels.options()) : rows.narrow(0, start, count);
    at::Tensor chunk = all ? prepare(dense.narrow(0, start, count), cosine) : gather_dense(s, dense, ids, data, cosine);
    at::Tensor old_labels = all ? s.labels.narrow(0, start, count).clone() : s.labels.index_select(0, ids);
    at::Tensor new_labels = recompute_rows(s, ids, chunk, prepared_sq(data, ids, cosine), centroids, centroid_sq);
    add_rows(s.sums, s.counts, chunk, new_labels, old_labels);
  }
}

}  // namespace

Run elkan(const Data& data, at::Tensor centroids, const KMeansOptions& o) {
  const bool cosine = is_cosine(o);
  const int64_t n = data.x.size(0), k = centroids.size(0), dim = data.x.size(1), step = chunk_rows(o, dim);
  const double total_sq = cosine ? static_cast<double>(n) : data.norms.sum(at::kDouble).item<double>();
  const at::Tensor dense = data.x.to(at::kFloat).contiguous();  // no copy for float32 rows (the usual case)
  ElkanState s;
  s.chunk = std::min(step, n);
  s.labels = at::empty({n}, centroids.options().dtype(at::kLong));
  s.upper = at::empty({n}, centroids.options());
  s.lower = at::empty({n, k}, centroids.options());
  s.sums = at::zeros({k, dim}, centroids.options().dtype(at::kDouble));
  s.counts = at::zeros({k}, centroids.options().dtype(at::kDouble));
  at::Tensor centroid_sq = centroids.pow(2).sum(1);
  for (int64_t start = 0; start < n; start += step) {  // the first assignment: every distance
    const int64_t rows = std::min(step, n - start);
    at::Tensor ids = at::arange(start, start + rows, s.labels.options());
    at::Tensor chunk = prepare(dense.narrow(0, start, rows), cosine);
    add_rows(s.sums, s.counts, chunk, recompute_rows(s, ids, chunk, prepared_sq(data, ids, cosine), centroids, centroid_sq));
  }
  Run run;
  double inertia = inertia_from_sums(s, total_sq, centroids, cosine);
  run.history.push_back(inertia);
  for (int64_t it = 0; it < o.iters(); ++it) {
    at::Tensor updated = (s.sums / s.counts.clamp_min(1).unsqueeze(1)).to(at::kFloat);
    if (cosine) updated = updated / updated.norm(2, {1}, true).clamp_min(1e-12);
    at::Tensor empty = (s.counts == 0).nonzero().squeeze(1);
    if (empty.numel() > 0) {
      // As Lloyd: empty clusters restart at the rows farthest from their centroids, by exact distances.
      const Pass pass = assign_all(data, centroids, o, /*accumulate=*/false);
      at::Tensor farthest = std::get<1>(pass.distances.topk(empty.numel()));
      updated.index_copy_(0, empty, rows_at(data.x, farthest.cpu(), centroids.device(), cosine));
    }
    const at::Tensor shift = (updated - centroids).norm(2, {1}).contiguous();
    centroids = updated;
    centroid_sq = centroids.pow(2).sum(1);
    // Half the distance between centroids, widened down by rounding (a smaller gap only skips fewer rows).
    at::Tensor gap2 = at::addmm(centroid_sq.unsqueeze(1) + centroid_sq.unsqueeze(0), centroids, centroids.t(), 1, -2);
    const at::Tensor half_gap = (gap2 - 2 * rounding_slack(centroid_sq, centroid_sq.max().item<double>(), dim))
                                    .clamp_min_(0).sqrt_().mul_(0.5).contiguous();
    at::Tensor maybe_rows = rows_to_recompute(s, data, dense, cosine, centroids, centroid_sq, shift, half_gap);
    // When most rows are open (the first iterations), Lloyd's contiguous pass is cheaper than gathering them.
    recompute(s, data, dense, maybe_rows.numel() * 2 > n ? at::Tensor() : maybe_rows, centroids, centroid_sq, o);
    run.n_iter = it + 1;
    const double previous = inertia;
    inertia = inertia_from_sums(s, total_sq, centroids, cosine);
    run.history.push_back(inertia);
    if (previous - inertia <= o.tol() * previous) break;
  }
  run.centroids = centroids;
  run.inertia = inertia;
  return run;
}

}  // namespace kclip::kmeans_internal
