// K-means: options, distance passes over row chunks, k-means++ seeding, Lloyd, mini-batch, and the artifact
// (Elkan's bounded iterations: kmeans_elkan.cpp).
#include <kclip/cluster.h>
#include <kclip/error.h>
#include <kclip/runtime.h>

#include "cluster/kmeans_internal.h"
#include "core/checks.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <fmt/format.h>

#include <algorithm>
#include <cstring>
#include <cmath>
#include <limits>
#include <optional>

namespace kclip {

namespace kmeans_internal {

constexpr const char* kWho = "KMeans";
constexpr int64_t kDefaultMiniBatch = 1024;

bool is_cosine(const KMeansOptions& o) { return o.metric() == "cosine"; }

// Rows per chunk so that the [rows, k] distance block and a float32 copy of [rows, D] fit the memory budget.
int64_t chunk_rows(const KMeansOptions& o, int64_t dim) {
  const int64_t bytes_per_row = (o.k() + dim) * 4 * 2;
  return std::max<int64_t>(1, o.memory_budget_mb() * (int64_t{1} << 20) / bytes_per_row);
}

// A chunk as the algorithm sees it: float32, L2-normalised for the cosine metric. No copy for float32 l2 data.
at::Tensor prepare(const at::Tensor& rows, bool cosine) {
  at::Tensor x = rows.to(at::kFloat);
  return cosine ? x / x.norm(2, {1}, true).clamp_min(1e-12) : x;
}

// Per-row quantity computed once per data set so that no pass recomputes it: ‖x‖² for l2, 1/‖x‖ for cosine
// (the cosine metric then scales GEMM outputs instead of normalising a copy of the data).
at::Tensor row_norms(const at::Tensor& x, const KMeansOptions& o, const at::Device& device) {
  const bool cosine = is_cosine(o);
  const int64_t n = x.size(0), step = chunk_rows(o, x.size(1));
  at::Tensor out = at::empty({n}, at::TensorOptions().dtype(at::kFloat).device(device));
  for (int64_t start = 0; start < n; start += step) {
    const int64_t rows = std::min(step, n - start);
    at::Tensor norm = at::linalg_vector_norm(x.narrow(0, start, rows).to(device, at::kFloat), 2, {1});
    out.narrow(0, start, rows).copy_(cosine ? norm.clamp_min(1e-12).reciprocal() : norm.pow(2));
  }
  // A NaN or infinity in a row makes its norm non-finite: one cheap check on [N] instead of one on [N, D].
  if (!at::isfinite(cosine ? out.reciprocal() : out).all().item<bool>()) {
    if (!at::isfinite(x).all().item<bool>()) fail_value("{}: the data contains NaN or infinite values", kWho);
    fail_value("{}: the data has rows whose squared norm overflows float32 (|x| above ~1e19)", kWho);
  }
  return out;
}

// Nearest centroid of each row (float32, raw) given its row_norms: labels and the distance that inertia sums
// (‖x − c‖² or 1 − cos). The GEMM is C·xᵀ ([k, rows]): OpenBLAS runs this orientation ~20% faster here.
std::pair<at::Tensor, at::Tensor> nearest(const at::Tensor& x, const at::Tensor& norms, const at::Tensor& centroids,
                                          const at::Tensor& centroid_sq, bool cosine) {
  if (cosine) {
    // 1/‖x‖ is positive per row, so it does not change the argmax: scale only the winner.
    auto [dot, labels] = centroids.mm(x.t()).max(0);
    return {labels, (1 - dot * norms).clamp_min(0)};
  }
  // One GEMM: ‖c‖² − 2·c·xᵀ ranks the centroids; ‖x‖² is added only to the winner.
  auto [partial, labels] = at::addmm(centroid_sq.unsqueeze(1), centroids, x.t(), 1, -2).min(0);
  return {labels, (partial + norms).clamp_min(0)};
}

Data describe(const at::Tensor& x, const KMeansOptions& o, const at::Device& device) {
  return {x, row_norms(x, o, device)};
}

// On CPU a plain loop: LibTorch's index_add_ costs microseconds per row there.
void add_rows(at::Tensor& sums, at::Tensor& counts, const at::Tensor& chunk, const at::Tensor& to,
              const at::Tensor& from) {
  if (!sums.is_cpu()) {
    at::Tensor rows = from.defined() ? (from != to).nonzero().squeeze(1) : at::Tensor();
    at::Tensor x = (rows.defined() ? chunk.index_select(0, rows) : chunk).to(at::kDouble);
    at::Tensor into = rows.defined() ? to.index_select(0, rows) : to;
    const at::Tensor one = at::ones({x.size(0)}, counts.options());
    sums.index_add_(0, into, x);
    counts.index_add_(0, into, one);
    if (rows.defined()) {
      const at::Tensor out_of = from.index_select(0, rows);
      sums.index_add_(0, out_of, x, -1);
      counts.index_add_(0, out_of, one, -1);
    }
    return;
  }
  const at::Tensor x = chunk.contiguous();
  const int64_t m = x.size(0), dim = x.size(1);
  const float* row = x.data_ptr<float>();
  const int64_t* add_to = to.data_ptr<int64_t>();
  const int64_t* take_from = from.defined() ? from.data_ptr<int64_t>() : nullptr;
  double* sum = sums.data_ptr<double>();
  double* count = counts.data_ptr<double>();
  for (int64_t i = 0; i < m; ++i, row += dim) {
    if (take_from != nullptr && take_from[i] == add_to[i]) continue;
    double* add = sum + add_to[i] * dim;
    for (int64_t j = 0; j < dim; ++j) add[j] += row[j];
    count[add_to[i]] += 1;
    if (take_from == nullptr) continue;
    double* sub = sum + take_from[i] * dim;
    for (int64_t j = 0; j < dim; ++j) sub[j] -= row[j];
    count[take_from[i]] -= 1;
  }
}

Pass assign_all(const Data& data, const at::Tensor& centroids, const KMeansOptions& o, bool accumulate) {
  const bool cosine = is_cosine(o);
  const int64_t n = data.x.size(0), k = centroids.size(0), step = chunk_rows(o, data.x.size(1));
  const at::Tensor centroid_sq = centroids.pow(2).sum(1);
  Pass pass;
  pass.labels = at::empty({n}, centroids.options().dtype(at::kLong));
  pass.distances = at::empty({n}, centroids.options());
  if (accumulate) {
    pass.sums = at::zeros_like(centroids, at::kDouble);
    pass.counts = at::zeros({k}, centroids.options().dtype(at::kDouble));
  }
  for (int64_t start = 0; start < n; start += step) {
    const int64_t rows = std::min(step, n - start);
    at::Tensor chunk = data.x.narrow(0, start, rows).to(centroids.device(), at::kFloat);
    at::Tensor norms = data.norms.narrow(0, start, rows);
    auto [labels, distances] = nearest(chunk, norms, centroids, centroid_sq, cosine);
    pass.labels.narrow(0, start, rows).copy_(labels);
    pass.distances.narrow(0, start, rows).copy_(distances);
    if (accumulate) {
      add_rows(pass.sums, pass.counts, cosine ? chunk * norms.unsqueeze(1) : chunk, labels);
    }
  }
  pass.inertia = pass.distances.sum(at::kDouble).item<double>();
  return pass;
}

Pass assign_all(const at::Tensor& x, const at::Tensor& centroids, const KMeansOptions& o, bool accumulate) {
  return assign_all(describe(x, o, centroids.device()), centroids, o, accumulate);
}

// Squared distances [P, N] from each (prepared) point to every row, chunked; a single point takes a GEMV.
at::Tensor squared_distances(const Data& data, const at::Tensor& points, const KMeansOptions& o) {
  const bool cosine = is_cosine(o);
  const int64_t n = data.x.size(0), step = chunk_rows(o, data.x.size(1));
  at::Tensor out = at::empty({points.size(0), n}, points.options());
  const at::Tensor points_sq = points.pow(2).sum(1).unsqueeze(1);
  for (int64_t start = 0; start < n; start += step) {
    const int64_t rows = std::min(step, n - start);
    at::Tensor chunk = data.x.narrow(0, start, rows).to(points.device(), at::kFloat);
    at::Tensor norms = data.norms.narrow(0, start, rows).unsqueeze(0);
    at::Tensor dot = points.size(0) == 1 ? chunk.mv(points[0]).unsqueeze(0) : points.mm(chunk.t());
    // cosine: both sides unit length, so ‖x̂ − p‖² = 2 − 2·x̂·p.
    at::Tensor d = cosine ? 2 - 2 * dot * norms : norms - 2 * dot + points_sq;
    out.narrow(1, start, rows).copy_(d.clamp_min(0));
  }
  return out;
}

// `count` indices drawn with probability proportional to `weights` (uniformly if they are all zero).
at::Tensor draw(const at::Tensor& weights, int64_t count, at::Generator& generator) {
  at::Tensor w = weights.to(at::kCPU, at::kDouble);
  if (!(w.sum().item<double>() > 0)) w = at::ones_like(w);
  return at::multinomial(w, count, /*replacement=*/true, generator);
}

at::Tensor rows_at(const at::Tensor& x, const at::Tensor& cpu_indices, const at::Device& device, bool cosine) {
  return prepare(x.index_select(0, cpu_indices.to(x.device())).to(device), cosine);
}

at::Generator make_generator(uint64_t seed) { return at::detail::createCPUGenerator(seed); }

// Rows `indices` (CPU int64, positions in the concatenation of shards) gathered from the shards.
at::Tensor gather_rows(const std::vector<at::Tensor>& shards, const std::vector<int64_t>& offsets,
                       const at::Tensor& indices, const at::Device& device, bool cosine) {
  std::vector<at::Tensor> parts;
  for (std::size_t s = 0; s < shards.size(); ++s) {
    at::Tensor mask = (indices >= offsets[s]) & (indices < offsets[s + 1]);
    at::Tensor local = indices.masked_select(mask) - offsets[s];
    if (local.numel() > 0) parts.push_back(rows_at(shards[s], local, device, cosine));
  }
  return parts.size() == 1 ? parts[0] : at::cat(parts, 0);
}

}  // namespace kmeans_internal

using namespace kmeans_internal;  // this file's helpers, shared with kmeans_elkan.cpp

KMeans::KMeans(KMeansOptions options) : options_(std::move(options)) {
  const auto& o = options_;
  if (o.k() < 1) fail_value("{}: k={}: expected at least 1 cluster", kWho, o.k());
  if (o.iters() < 0 || o.n_init() < 1 || o.memory_budget_mb() < 1 || o.batch_size() < 0 || o.n_local_trials() < 0 ||
      o.init_sample() < -1)
    fail_value("{}: iters={}, n_init={}, memory_budget_mb={}, batch_size={}, n_local_trials={}, init_sample={}: "
               "expected iters >= 0, n_init >= 1, memory_budget_mb >= 1, init_sample >= -1 and the others >= 0",
               kWho, o.iters(), o.n_init(), o.memory_budget_mb(), o.batch_size(), o.n_local_trials(), o.init_sample());
  if (!(o.tol() >= 0)) fail_value("{}: tol={}: expected >= 0", kWho, o.tol());
  if (o.init() != "k-means++" && o.init() != "greedy-k-means++" && o.init() != "random")
    fail_value("{}: init='{}': expected 'k-means++', 'greedy-k-means++' or 'random'", kWho, o.init());
  if (o.metric() != "l2" && o.metric() != "cosine")
    fail_value("{}: metric='{}': expected 'l2' or 'cosine'", kWho, o.metric());
  if (o.algorithm() != "auto" && o.algorithm() != "lloyd" && o.algorithm() != "elkan")
    fail_value("{}: algorithm='{}': expected 'auto', 'elkan' or 'lloyd'", kWho, o.algorithm());
}

void KMeans::check_data(const at::Tensor& x, const char* what) const {
  if (!x.defined() || x.dim() != 2)
    fail_value("{}: {} has shape {}: expected [N, D]", kWho, what, x.defined() ? detail::shape_of(x) : "undefined");
  if (!at::isFloatingType(x.scalar_type()))
    fail_value("{}: {} has dtype {}: expected floating point", kWho, what, c10::toString(x.scalar_type()));
  if (x.size(0) == 0 || x.size(1) == 0) fail_value("{}: {} is empty ({})", kWho, what, detail::shape_of(x));
  // Non-finite values are caught where the row norms are computed (row_norms), without an extra pass.
}

const at::Tensor& KMeans::centroids() const {
  if (!fitted()) fail_value("{}: not fitted: call fit() or KMeans::load() first", kWho);
  return centroids_;
}

// ---- seeding and Lloyd (free functions over the described data) ------------------------------------------

namespace {

at::Tensor initial_centroids(const Data& data, const KMeansOptions& o, at::Generator& generator) {
  const bool cosine = is_cosine(o);
  const at::Device device = data.norms.device();
  const int64_t n = data.x.size(0), k = o.k();
  if (o.init() == "random") return rows_at(data.x, at::randperm(n, generator).narrow(0, 0, k), device, cosine);

  // k-means++ (Arthur & Vassilvitskii 2007): each new centroid is drawn with probability ∝ squared distance to
  // the nearest one chosen so far. The greedy variant draws several candidates and keeps the one that lowers
  // the potential Σ min-distance most (scikit-learn's default).
  const int64_t trials = o.init() == "greedy-k-means++"
                             ? (o.n_local_trials() > 0 ? o.n_local_trials() : 2 + int64_t(std::log(double(k))))
                             : 1;
  at::Tensor centroids = at::empty({k, data.x.size(1)}, at::TensorOptions().dtype(at::kFloat).device(device));
  at::Tensor first = at::randint(n, {1}, generator);
  centroids.narrow(0, 0, 1).copy_(rows_at(data.x, first, device, cosine));
  at::Tensor closest = squared_distances(data, centroids.narrow(0, 0, 1), o)[0];
  for (int64_t c = 1; c < k; ++c) {
    at::Tensor candidates = draw(closest, trials, generator);
    at::Tensor points = rows_at(data.x, candidates, device, cosine);
    at::Tensor distances = squared_distances(data, points, o);  // [trials, N]
    int64_t best = 0;
    if (trials > 1) best = at::minimum(closest.unsqueeze(0), distances).sum(1).argmin().item<int64_t>();
    centroids.narrow(0, c, 1).copy_(points.narrow(0, best, 1));
    closest = at::minimum(closest, distances[best]);
  }
  return centroids;
}

Run lloyd(const Data& data, at::Tensor centroids, const KMeansOptions& o) {
  Run run;
  Pass pass = assign_all(data, centroids, o, /*accumulate=*/true);
  run.history.push_back(pass.inertia);
  for (int64_t it = 0; it < o.iters(); ++it) {
    // Update: each centroid moves to the mean of its rows (normalised for cosine).
    at::Tensor updated = (pass.sums / pass.counts.clamp_min(1).unsqueeze(1)).to(centroids.scalar_type());
    if (is_cosine(o)) updated = updated / updated.norm(2, {1}, true).clamp_min(1e-12);
    // Empty clusters restart at the rows farthest from their centroids (distinct rows, farthest first).
    at::Tensor empty = (pass.counts == 0).nonzero().squeeze(1);
    if (empty.numel() > 0) {
      at::Tensor farthest = std::get<1>(pass.distances.topk(empty.numel()));
      updated.index_copy_(0, empty, rows_at(data.x, farthest.cpu(), centroids.device(), is_cosine(o)));
    }
    centroids = updated;
    run.n_iter = it + 1;
    const double previous = pass.inertia;
    pass = assign_all(data, centroids, o, /*accumulate=*/true);
    run.history.push_back(pass.inertia);
    if (previous - pass.inertia <= o.tol() * previous) break;
  }
  run.centroids = centroids;
  run.inertia = pass.inertia;
  return run;
}

// "auto": Elkan's bounds where they fit (CPU, [N, k] float32 within the memory budget), else Lloyd.
Run iterate(const Data& data, const at::Tensor& centroids, const KMeansOptions& o) {
  const bool cpu = data.norms.device().is_cpu();
  const bool fits = data.x.size(0) * centroids.size(0) * 4 <= o.memory_budget_mb() * (int64_t{1} << 20);
  if (o.algorithm() == "elkan" && !cpu)
    fail_value("{}: algorithm='elkan' runs on CPU data only; use 'lloyd' or 'auto' on {}", kWho,
               data.norms.device().str());
  const bool use_elkan = o.algorithm() == "elkan" || (o.algorithm() == "auto" && cpu && fits);
  return use_elkan ? elkan(data, centroids, o) : lloyd(data, centroids, o);
}

}  // namespace

KMeans& KMeans::fit(const at::Tensor& x) {
  std::optional<GemmBoundScope> gemm_bound;
  if (x.defined() && x.is_cpu()) gemm_bound.emplace();
  check_data(x, "x");
  if (options_.batch_size() > 0) return fit_minibatch({x});
  if (x.size(0) < options_.k())
    fail_value("{}: k={} exceeds the number of rows N={}", kWho, options_.k(), x.size(0));
  at::Generator generator = make_generator(options_.seed());
  const Data data = describe(x, options_, x.device());
  const int64_t n = x.size(0);
  const int64_t sample =
      options_.init_sample() == -1 ? std::max<int64_t>(5000, 50 * options_.k()) : options_.init_sample();
  Run best;
  for (int64_t r = 0; r < options_.n_init(); ++r) {
    at::Tensor seeds;
    if (sample > 0 && sample < n) {
      at::Tensor rows = at::randperm(n, generator).narrow(0, 0, std::max(sample, options_.k()));
      seeds = initial_centroids(describe(x.index_select(0, rows.to(x.device())), options_, x.device()), options_,
                                generator);
    } else {
      seeds = initial_centroids(data, options_, generator);
    }
    Run run = iterate(data, seeds, options_);
    if (run.inertia < best.inertia) best = std::move(run);
  }
  centroids_ = best.centroids;
  inertia_ = best.inertia;
  n_iter_ = best.n_iter;
  history_ = std::move(best.history);
  return *this;
}

KMeans& KMeans::fit(const at::Tensor& x, const at::Tensor& init_centroids) {
  std::optional<GemmBoundScope> gemm_bound;
  if (x.defined() && x.is_cpu()) gemm_bound.emplace();
  check_data(x, "x");
  check_data(init_centroids, "init_centroids");
  if (init_centroids.size(0) != options_.k() || init_centroids.size(1) != x.size(1))
    fail_value("{}: init_centroids has shape {}: expected [{}, {}]", kWho, detail::shape_of(init_centroids),
               options_.k(), x.size(1));
  if (x.size(0) < options_.k()) fail_value("{}: k={} exceeds the number of rows N={}", kWho, options_.k(), x.size(0));
  Run run = iterate(describe(x, options_, x.device()), prepare(init_centroids.to(x.device()), is_cosine(options_)).clone(),
                  options_);
  centroids_ = run.centroids;
  inertia_ = run.inertia;
  n_iter_ = run.n_iter;
  history_ = std::move(run.history);
  return *this;
}

// ---- mini-batch ------------------------------------------------------------------------------------------

KMeans& KMeans::fit_minibatch(const std::vector<at::Tensor>& shards) {
  std::optional<GemmBoundScope> gemm_bound;
  if (!shards.empty() && shards[0].defined() && shards[0].is_cpu()) gemm_bound.emplace();
  const auto& o = options_;
  const bool cosine = is_cosine(o);
  if (shards.empty()) fail_value("{}: fit_minibatch needs at least one tensor", kWho);
  std::vector<int64_t> offsets{0};
  for (std::size_t s = 0; s < shards.size(); ++s) {
    const auto& shard = shards[s];
    if (!shard.defined() || shard.dim() != 2 || shard.size(0) == 0 || !at::isFloatingType(shard.scalar_type()))
      fail_value("{}: shard {} must be a non-empty floating [N, D] tensor", kWho, s);
    if (shard.size(1) != shards[0].size(1))
      fail_value("{}: shard {} has {} columns, shard 0 has {}", kWho, s, shard.size(1), shards[0].size(1));
    offsets.push_back(offsets.back() + shard.size(0));
  }
  const int64_t n = offsets.back(), k = o.k();
  if (n < k) fail_value("{}: k={} exceeds the number of rows N={}", kWho, k, n);
  const int64_t batch = o.batch_size() > 0 ? o.batch_size() : kDefaultMiniBatch;
  const at::Device device = shards[0].device();
  at::Generator generator = make_generator(o.seed());

  // Seed on a random sample (as scikit-learn's init_size), keeping the best of n_init seedings on it.
  const int64_t sample_size = std::min(n, std::max(3 * batch, 3 * k));
  at::Tensor sample = gather_rows(shards, offsets, at::randperm(n, generator).narrow(0, 0, sample_size), device, cosine);
  check_data(sample, "a sample of the data");
  const Data sample_data = describe(sample, o, device);
  at::Tensor centroids;
  double best = std::numeric_limits<double>::infinity();
  for (int64_t r = 0; r < o.n_init(); ++r) {
    at::Tensor candidate = initial_centroids(sample_data, o, generator);
    const double inertia = assign_all(sample_data, candidate, o, false).inertia;
    if (inertia < best) best = inertia, centroids = candidate;
  }

  // Sculley's update, batched: a centroid is the running mean of every row ever assigned to it, so each row
  // moves it by 1/count.
  at::Tensor counts = at::zeros({k}, centroids.options());
  const at::Tensor unit = at::ones({batch}, centroids.options());
  std::vector<double> history;
  int64_t epochs = 0;
  for (int64_t epoch = 0; epoch < o.iters(); ++epoch) {
    at::Tensor order = at::randperm(n, generator);
    double epoch_inertia = 0;
    for (int64_t start = 0; start < n; start += batch) {
      at::Tensor rows = gather_rows(shards, offsets, order.narrow(0, start, std::min(batch, n - start)), device, cosine);
      auto [labels, distances] = nearest(rows, row_norms(rows, o, device), centroids, centroids.pow(2).sum(1), cosine);
      epoch_inertia += distances.sum(at::kDouble).item<double>();
      at::Tensor batch_counts = at::zeros({k}, centroids.options()).index_add_(0, labels, unit.narrow(0, 0, rows.size(0)));
      at::Tensor batch_sums = at::zeros_like(centroids).index_add_(0, labels, rows);
      at::Tensor total = counts + batch_counts;
      at::Tensor moved = (centroids * counts.unsqueeze(1) + batch_sums) / total.clamp_min(1).unsqueeze(1);
      if (cosine) moved = moved / moved.norm(2, {1}, true).clamp_min(1e-12);
      centroids = at::where((batch_counts > 0).unsqueeze(1), moved, centroids);
      counts = total;
    }
    history.push_back(epoch_inertia);
    epochs = epoch + 1;
    if (epoch > 0 && history[epoch - 1] - epoch_inertia <= o.tol() * history[epoch - 1]) break;
  }

  // Final inertia: one streaming pass over all rows with the final centroids.
  double inertia = 0;
  for (std::size_t s = 0; s < shards.size(); ++s) inertia += assign_all(shards[s], centroids, o, false).inertia;
  history.push_back(inertia);
  centroids_ = centroids;
  inertia_ = inertia;
  n_iter_ = epochs;
  history_ = std::move(history);
  return *this;
}

// ---- using the centroids ---------------------------------------------------------------------------------

namespace {

void check_query(const at::Tensor& x, const at::Tensor& centroids, const char* who) {
  if (!x.defined() || x.dim() != 2 || !at::isFloatingType(x.scalar_type()))
    fail_value("{}: x must be a floating [N, D] tensor, got {}", who, x.defined() ? detail::shape_of(x) : "undefined");
  if (x.size(1) != centroids.size(1))
    fail_value("{}: x has {} columns but the centroids have {}", who, x.size(1), centroids.size(1));
}

}  // namespace

at::Tensor KMeans::predict(const at::Tensor& x) const {
  check_query(x, centroids(), "KMeans.predict");
  if (x.size(0) == 0) return at::empty({0}, centroids_.options().dtype(at::kLong));
  return assign_all(x, centroids_, options_, false).labels;
}

double KMeans::score(const at::Tensor& x) const {
  check_query(x, centroids(), "KMeans.score");
  return x.size(0) == 0 ? 0.0 : assign_all(x, centroids_, options_, false).inertia;
}

at::Tensor KMeans::transform(const at::Tensor& x) const {
  check_query(x, centroids(), "KMeans.transform");
  if (is_cosine(options_)) return 1 - prepare(x.to(centroids_.device()), true).mm(centroids_.t());
  return squared_distances(describe(x, options_, centroids_.device()), centroids_, options_).t().sqrt();
}

at::Tensor KMeans::soft_labels(const at::Tensor& x, double temperature, int64_t top_k) const {
  check_query(x, centroids(), "KMeans.soft_labels");
  const int64_t k = options_.k();
  if (!(temperature >= 0) || !std::isfinite(temperature))
    fail_value("KMeans.soft_labels: temperature={}: expected a finite value >= 0", temperature);
  if (top_k < 0 || top_k > k) fail_value("KMeans.soft_labels: top_k={}: expected 0 (all) to k={}", top_k, k);
  if (temperature == 0) return at::one_hot(predict(x), k).to(at::kFloat);  // the τ → 0 limit
  at::Tensor logits = is_cosine(options_)
                          ? prepare(x.to(centroids_.device()), true).mm(centroids_.t()) / temperature
                          : squared_distances(describe(x, options_, centroids_.device()), centroids_, options_).t() /
                                -temperature;
  at::Tensor probabilities = at::softmax(logits, 1);
  if (top_k == 0 || top_k == k) return probabilities;
  auto [values, indices] = probabilities.topk(top_k, 1);
  return at::zeros_like(probabilities).scatter_(1, indices, values / values.sum(1, true));
}

// ---- the artifact ----------------------------------------------------------------------------------------

void KMeans::save(const std::filesystem::path& path, const Metadata& extra) const {
  Metadata metadata = extra;
  metadata["format"] = "kclip-kmeans";
  metadata["k"] = std::to_string(options_.k());
  metadata["dim"] = std::to_string(centroids().size(1));
  metadata["metric"] = options_.metric();
  metadata["seed"] = std::to_string(options_.seed());
  metadata["inertia"] = fmt::format("{:.17g}", inertia_);
  metadata["n_iter"] = std::to_string(n_iter_);
  TensorDict tensors;
  tensors.insert("centroids", centroids_.to(at::kCPU, at::kFloat));
  save_safetensors(path, tensors, metadata);
}

KMeans KMeans::load(const std::filesystem::path& path) {
  SafetensorsFile file(path);
  const Metadata& meta = file.metadata();
  const std::string where = path.string();
  if (!file.contains("centroids")) fail("{}: no tensor 'centroids': not a kclip K-means file", where);
  at::Tensor centroids = file.get("centroids").to(at::kFloat).clone();
  if (centroids.dim() != 2 || centroids.size(0) < 1) fail("{}: 'centroids' must be [k, dim]", where);
  auto field = [&](const char* key) -> std::string {
    auto it = meta.find(key);
    if (it == meta.end()) fail("{}: metadata field '{}' is missing", where, key);
    return it->second;
  };
  auto number = [&](const char* key) -> double {
    const std::string text = field(key);
    try {
      std::size_t used = 0;
      double v = std::stod(text, &used);
      if (used == text.size()) return v;
    } catch (const std::exception&) {
    }
    fail("{}: metadata field '{}' = '{}': expected a number", where, key, text);
  };
  if (number("k") != centroids.size(0) || number("dim") != centroids.size(1))
    fail("{}: metadata k={} dim={} disagree with centroids {}", where, field("k"), field("dim"),
         detail::shape_of(centroids));
  const std::string metric = field("metric");
  if (metric != "l2" && metric != "cosine") fail("{}: metadata field 'metric' = '{}': expected l2 or cosine", where, metric);
  KMeans model(KMeansOptions(centroids.size(0)).metric(metric).seed(static_cast<uint64_t>(number("seed"))));
  model.centroids_ = centroids;
  model.inertia_ = number("inertia");
  model.n_iter_ = static_cast<int64_t>(number("n_iter"));
  model.metadata_ = meta;
  return model;
}

}  // namespace kclip
