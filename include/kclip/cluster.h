#pragma once
// K-means on LibTorch: the concept clusterer of Knowledge-CLIP (K-means over teacher caption embeddings; each
// pair's soft concept label comes from its distances to the centroids).
//
// Runs on the data's device. Lloyd iterations take all distances from one GEMM per row chunk
// (‖x‖² − 2·x·Cᵀ + ‖c‖²), with chunks sized to a memory budget. On CPU the default algorithm keeps Elkan's
// triangle-inequality bounds (an upper bound to each row's own centroid, a lower bound to every other) and
// recomputes, again by GEMM, only the rows whose nearest centroid may have changed: the same assignments as
// Lloyd at a fraction of the distance computations. The mini-batch mode (Sculley 2010) streams
// over data larger than memory, such as memory-mapped safetensors shards. metric "cosine" is spherical k-means:
// data and centroids are L2-normalised and the distance is 1 − cos.
#include <kclip/safetensors.h>

#include <ATen/core/Tensor.h>
#include <torch/arg.h>

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

namespace kclip {

struct KMeansOptions {
  explicit KMeansOptions(int64_t k) : k_(k) {}
  TORCH_ARG(int64_t, k);
  TORCH_ARG(int64_t, iters) = 100;  // Lloyd iterations (mini-batch: epochs)
  TORCH_ARG(double, tol) = 1e-4;    // stop when inertia falls by less than tol × inertia
  // "greedy-k-means++" (default: n_local_trials candidates per step, keep the best, as scikit-learn),
  // "k-means++" (one candidate per step), or "random" (k distinct points). fit(x, centroids) starts from given
  // centroids.
  TORCH_ARG(std::string, init) = "greedy-k-means++";
  TORCH_ARG(int64_t, n_local_trials) = 0;  // greedy: 0 means 2 + floor(ln k)
  TORCH_ARG(int64_t, n_init) = 1;          // restarts; the lowest inertia wins
  // Seed on this many random rows (0: all; -1, the default: max(5000, 50·k)). Seeding reads its rows once
  // per centroid; on Fashion-MNIST (60000 rows, K = 100) greedy seeding on 5000 of them ends, after 20 Lloyd
  // iterations, at scikit-learn's inertia (seeded on all rows) for a twelfth of the seeding cost
  // (bench/bench_kmeans.py).
  TORCH_ARG(int64_t, init_sample) = -1;
  TORCH_ARG(uint64_t, seed) = 0;
  TORCH_ARG(std::string, metric) = "l2";   // "l2" or "cosine"
  TORCH_ARG(int64_t, memory_budget_mb) = 256;  // bound on each distance chunk
  TORCH_ARG(int64_t, batch_size) = 0;  // > 0: mini-batch mode with batches of this many rows
  // "auto" (default): "elkan" for CPU data whose [N, k] float32 bounds fit memory_budget_mb, else "lloyd".
  // "elkan" (CPU only) gives Lloyd's iterations with fewer distance computations; "lloyd" computes them all.
  TORCH_ARG(std::string, algorithm) = "auto";
};

class KMeans {
 public:
  explicit KMeans(KMeansOptions options);

  // x: [N, D] floating (any device). Returns *this.
  KMeans& fit(const at::Tensor& x);
  // Starts from the given [k, D] centroids (one run: n_init and init are ignored).
  KMeans& fit(const at::Tensor& x, const at::Tensor& init_centroids);
  // Mini-batch k-means over rows of several [N_i, D] tensors (e.g. memory-mapped shards), visited in random
  // batches of batch_size (default 1024 if unset); only the rows of each batch are read.
  KMeans& fit_minibatch(const std::vector<at::Tensor>& shards);

  at::Tensor predict(const at::Tensor& x) const;    // [N] int64: nearest centroid
  at::Tensor transform(const at::Tensor& x) const;  // [N, k]: Euclidean distance (l2) or 1 − cos (cosine)
  // softmax(−d²/τ) for l2, softmax(cos/τ) for cosine; τ = 0 gives one-hot rows of predict(x). top_k > 0 keeps
  // each row's k largest probabilities, renormalised (zeros elsewhere).
  at::Tensor soft_labels(const at::Tensor& x, double temperature, int64_t top_k = 0) const;
  // Σ over rows of the squared distance (l2) or 1 − cos (cosine) to the nearest centroid.
  double score(const at::Tensor& x) const;

  bool fitted() const { return centroids_.defined(); }
  const at::Tensor& centroids() const;  // [k, D] float32, on the data's device
  double inertia() const { return inertia_; }
  int64_t n_iter() const { return n_iter_; }
  // Inertia at each assignment step of the kept run (Lloyd: non-increasing), the last one for the final centroids.
  const std::vector<double>& inertia_history() const { return history_; }
  const KMeansOptions& options() const { return options_; }

  // Centroids as safetensors ("centroids" [k, D] F32) with metadata k, dim, metric, seed, inertia, n_iter and
  // `extra` (e.g. {"teacher_id", ...}).
  void save(const std::filesystem::path& path, const Metadata& extra = {}) const;
  static KMeans load(const std::filesystem::path& path);
  const Metadata& metadata() const { return metadata_; }  // what load() read

 private:
  void check_data(const at::Tensor& x, const char* what) const;

  KMeansOptions options_;
  at::Tensor centroids_;
  double inertia_ = 0;
  int64_t n_iter_ = 0;
  std::vector<double> history_;
  Metadata metadata_;
};

}  // namespace kclip
