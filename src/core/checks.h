#pragma once
// Argument checks shared by kclip's modules (private header). Each failure is one kclip::ValueError naming the
// module, the argument and what was expected.
#include <kclip/error.h>

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <fmt/ranges.h>  // fmt::join (in ranges.h since fmt 11)

namespace kclip::detail {

inline std::string shape_of(const at::Tensor& t) { return fmt::format("[{}]", fmt::join(t.sizes(), ", ")); }

// `t` is a defined floating-point matrix [rows, cols]; cols checked when >= 0.
inline void check_matrix(const char* who, const char* name, const at::Tensor& t, int64_t cols = -1) {
  if (!t.defined()) fail_value("{}: {} is missing", who, name);
  if (t.dim() != 2) fail_value("{}: {} has shape {}: expected [batch, dim]", who, name, shape_of(t));
  if (!at::isFloatingType(t.scalar_type()))
    fail_value("{}: {} has dtype {}: expected a floating-point tensor", who, name, c10::toString(t.scalar_type()));
  if (cols >= 0 && t.size(1) != cols)
    fail_value("{}: {} has shape {}: expected [batch, {}]", who, name, shape_of(t), cols);
  if (t.size(0) == 0) fail_value("{}: {} is an empty batch", who, name);
}

// `b` has the same batch size, dtype and device as `a`.
inline void check_same_batch(const char* who, const char* name_a, const at::Tensor& a, const char* name_b,
                             const at::Tensor& b) {
  if (a.size(0) != b.size(0))
    fail_value("{}: {} {} and {} {} have different batch sizes", who, name_a, shape_of(a), name_b, shape_of(b));
  if (a.scalar_type() != b.scalar_type())
    fail_value("{}: {} is {} but {} is {}: expected one dtype", who, name_a, c10::toString(a.scalar_type()), name_b,
               c10::toString(b.scalar_type()));
  if (a.device() != b.device())
    fail_value("{}: {} is on {} but {} is on {}", who, name_a, a.device().str(), name_b, b.device().str());
}

}  // namespace kclip::detail
