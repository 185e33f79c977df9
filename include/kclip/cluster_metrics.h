#pragma once
// Clustering quality against reference labels (any integer ids, any device): normalised mutual information,
// purity and the adjusted Rand index, with scikit-learn's definitions (NMI with the arithmetic-mean normaliser).
#include <ATen/core/Tensor.h>

namespace kclip {

double nmi(const at::Tensor& labels_a, const at::Tensor& labels_b);
// Fraction of rows whose predicted cluster's most common true label is their own.
double purity(const at::Tensor& labels_true, const at::Tensor& labels_pred);
double adjusted_rand_index(const at::Tensor& labels_a, const at::Tensor& labels_b);

}  // namespace kclip
