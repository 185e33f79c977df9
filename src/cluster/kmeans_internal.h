#pragma once
// What cluster.cpp (options, Lloyd, seeding, mini-batch) and kmeans_elkan.cpp (Elkan's bounded iterations) share
// (private header).
#include <kclip/cluster.h>

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <limits>
#include <vector>

namespace kclip::kmeans_internal {

// The data with its row norms (‖x‖² for l2, 1/‖x‖ for cosine), on the compute device's terms.
struct Data {
  at::Tensor x, norms;
};

// One pass over all rows: labels, distances, inertia and (optionally) per-cluster sums and counts.
struct Pass {
  at::Tensor labels, distances, sums, counts;
  double inertia = 0;
};

// One run of iterations from one start.
struct Run {
  at::Tensor centroids;
  double inertia = std::numeric_limits<double>::infinity();
  int64_t n_iter = 0;
  std::vector<double> history;
};

bool is_cosine(const KMeansOptions& o);
// Rows per chunk so that the [rows, k] distance block and a float32 copy of [rows, D] fit the memory budget.
int64_t chunk_rows(const KMeansOptions& o, int64_t dim);
// A chunk as the algorithm sees it: float32, L2-normalised for the cosine metric.
at::Tensor prepare(const at::Tensor& rows, bool cosine);
at::Tensor rows_at(const at::Tensor& x, const at::Tensor& cpu_indices, const at::Device& device, bool cosine);
Pass assign_all(const Data& data, const at::Tensor& centroids, const KMeansOptions& o, bool accumulate);
// Adds each row of `chunk` (float32) to the float64 sums and counts of its cluster `to`; with `from` given, only
// rows whose cluster changed, also subtracted from cluster `from`. float64 makes the sums independent of the
// order rows are added in (far below float32 rounding), so Lloyd's full sums and Elkan's updates by moved rows
// give the same centroids.
void add_rows(at::Tensor& sums, at::Tensor& counts, const at::Tensor& chunk, const at::Tensor& to,
              const at::Tensor& from = {});

// Lloyd's iterations with Elkan's bounds, on CPU data (kmeans_elkan.cpp).
Run elkan(const Data& data, at::Tensor centroids, const KMeansOptions& o);

}  // namespace kclip::kmeans_internal
