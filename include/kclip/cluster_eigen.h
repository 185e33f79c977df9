#pragma once
// Eigen interop for the clusterer: callers holding row-major float matrices pass them without a copy.
// Include only where Eigen is wanted; kclip::kclip carries Eigen's include path.
#include <kclip/cluster.h>

#include <Eigen/Core>
#include <torch/types.h>

namespace kclip {

using RowMatrixXf = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

// A CPU float tensor viewing the matrix's memory (rows may be strided); valid while the matrix lives.
inline at::Tensor as_tensor(const Eigen::Ref<const RowMatrixXf>& m) {
  return torch::from_blob(const_cast<float*>(m.data()), {m.rows(), m.cols()}, {m.outerStride(), 1}, torch::kFloat);
}

inline KMeans& fit(KMeans& kmeans, const Eigen::Ref<const RowMatrixXf>& x) { return kmeans.fit(as_tensor(x)); }

// Nearest centroid per row, as an Eigen vector.
inline Eigen::Matrix<int64_t, Eigen::Dynamic, 1> predict(const KMeans& kmeans, const Eigen::Ref<const RowMatrixXf>& x) {
  at::Tensor labels = kmeans.predict(as_tensor(x)).to(torch::kCPU).contiguous();
  return Eigen::Map<const Eigen::Matrix<int64_t, Eigen::Dynamic, 1>>(labels.data_ptr<int64_t>(), labels.numel());
}

}  // namespace kclip
