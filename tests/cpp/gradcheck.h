#pragma once
// Gradient check for scalar-valued functions (LibTorch's C++ API has no gradcheck): compares autograd's gradient
// with central finite differences, element by element, for every tensor in `wrt` (inputs and parameters alike).
// Use float64 tensors.
#include <doctest/doctest.h>
#include <torch/torch.h>

#include <functional>
#include <string>
#include <vector>

namespace kclip::testing {

inline bool gradcheck(const std::function<torch::Tensor()>& f, const std::vector<torch::Tensor>& wrt,
                      double eps = 1e-6, double atol = 1e-5, double rtol = 1e-3) {
  for (const auto& t : wrt) REQUIRE((t.scalar_type() == torch::kDouble));
  std::vector<torch::Tensor> analytic = torch::autograd::grad({f()}, wrt, {}, /*retain_graph=*/false,
                                                              /*create_graph=*/false, /*allow_unused=*/true);
  torch::NoGradGuard no_grad;
  bool ok = true;
  for (std::size_t i = 0; i < wrt.size(); ++i) {
    torch::Tensor flat = wrt[i].view(-1);  // shares storage: perturbing it perturbs the tensor
    torch::Tensor grad = analytic[i].defined() ? analytic[i].reshape(-1) : torch::zeros_like(flat);
    for (int64_t j = 0; j < flat.numel(); ++j) {
      const double saved = flat[j].item<double>();
      flat[j] = saved + eps;
      const double up = f().item<double>();
      flat[j] = saved - eps;
      const double down = f().item<double>();
      flat[j] = saved;
      const double numeric = (up - down) / (2 * eps), exact = grad[j].item<double>();
      if (std::abs(numeric - exact) > atol + rtol * std::abs(numeric)) {
        MESSAGE("gradcheck: tensor " << i << " element " << j << ": autograd " << exact << " vs numeric " << numeric);
        ok = false;
      }
    }
  }
  return ok;
}

// Every parameter of `module` followed by `extra` (the inputs).
inline std::vector<torch::Tensor> with_parameters(torch::nn::Module& module, std::vector<torch::Tensor> extra) {
  std::vector<torch::Tensor> all = module.parameters();
  all.insert(all.end(), extra.begin(), extra.end());
  return all;
}

}  // namespace kclip::testing
