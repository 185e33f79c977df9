#include <kclip/cluster_metrics.h>
#include <kclip/error.h>

#include <ATen/ATen.h>

#include <cmath>

namespace kclip {
namespace {

// Contingency table [classes of a, classes of b] as float64 counts.
at::Tensor contingency(const at::Tensor& a, const at::Tensor& b, const char* who) {
  if (!a.defined() || !b.defined() || a.dim() != 1 || b.dim() != 1 || a.numel() != b.numel())
    fail_value("{}: expected two 1-D label tensors of one length", who);
  if (a.numel() == 0) fail_value("{}: labels are empty", who);
  if (at::isFloatingType(a.scalar_type()) || at::isFloatingType(b.scalar_type()))
    fail_value("{}: labels must be integer ids", who);
  auto ia = std::get<1>(at::_unique(a.to(at::kCPU, at::kLong), true, true));
  auto ib = std::get<1>(at::_unique(b.to(at::kCPU, at::kLong), true, true));
  const int64_t na = ia.max().item<int64_t>() + 1, nb = ib.max().item<int64_t>() + 1;
  return at::bincount(ia * nb + ib, {}, na * nb).to(at::kDouble).view({na, nb});
}

double entropy(const at::Tensor& counts, double n) {
  at::Tensor p = counts.masked_select(counts > 0) / n;
  return -(p * p.log()).sum().item<double>();
}

double pairs(const at::Tensor& counts) { return (counts * (counts - 1) / 2).sum().item<double>(); }

}  // namespace

double nmi(const at::Tensor& labels_a, const at::Tensor& labels_b) {
  at::Tensor table = contingency(labels_a, labels_b, "nmi");
  const double n = table.sum().item<double>();
  // Both labelings constant: identical partitions (scikit-learn's convention).
  if (table.size(0) == 1 && table.size(1) == 1) return 1.0;
  at::Tensor row = table.sum(1), col = table.sum(0);
  at::Tensor nz = table > 0;
  at::Tensor p = table.masked_select(nz) / n;
  at::Tensor outer = (row.unsqueeze(1) * col.unsqueeze(0)).masked_select(nz) / (n * n);
  const double mi = std::max(0.0, (p * (p / outer).log()).sum().item<double>());
  const double norm = (entropy(row, n) + entropy(col, n)) / 2;
  return norm > 0 ? std::min(1.0, mi / norm) : 0.0;
}

double purity(const at::Tensor& labels_true, const at::Tensor& labels_pred) {
  at::Tensor table = contingency(labels_true, labels_pred, "purity");  // [true, pred]
  return std::get<0>(table.max(0)).sum().item<double>() / table.sum().item<double>();
}

double adjusted_rand_index(const at::Tensor& labels_a, const at::Tensor& labels_b) {
  at::Tensor table = contingency(labels_a, labels_b, "adjusted_rand_index");
  const double n = table.sum().item<double>();
  const double index = pairs(table), rows = pairs(table.sum(1)), cols = pairs(table.sum(0));
  const double expected = rows * cols / (n * (n - 1) / 2), maximum = (rows + cols) / 2;
  // Degenerate partitions (all in one cluster, or all singletons, on both sides) agree perfectly.
  if (maximum == expected) return 1.0;
  return (index - expected) / (maximum - expected);
}

}  // namespace kclip
