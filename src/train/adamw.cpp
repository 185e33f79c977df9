// AdamW over flat parameter and gradient buffers: one fused pass per group instead of a loop of per-tensor ops.
#include <kclip/error.h>
#include <kclip/train.h>

#include "core/parallel.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <cmath>

namespace kclip {

AdamW::AdamW(std::vector<Group> groups, double beta1, double beta2, double eps)
    : groups_(std::move(groups)), beta1_(beta1), beta2_(beta2), eps_(eps) {
  if (!(beta1 >= 0 && beta1 < 1 && beta2 >= 0 && beta2 < 1 && eps >= 0))
    fail_value("AdamW: betas ({}, {}) must lie in [0, 1) and eps {} must be >= 0", beta1, beta2, eps);
  at::NoGradGuard no_grad;
  for (auto& group : groups_) {
    int64_t total = 0;
    at::TensorOptions options = at::TensorOptions().dtype(at::kFloat);
    for (size_t i = 0; i < group.params.size(); ++i) {
      const auto& [name, p] = group.params[i];
      if (!p.defined() || !p.requires_grad() || !p.is_leaf() || !at::isFloatingType(p.scalar_type()))
        fail_value("AdamW: parameter '{}' must be a floating-point leaf tensor that requires grad", name);
      if (i == 0) options = p.options();
      else if (p.device() != options.device() || p.scalar_type() != c10::typeMetaToScalarType(options.dtype()))
        fail_value("AdamW: parameter '{}' is {} on {}, unlike the rest of its group", name,
                   c10::toString(p.scalar_type()), p.device().str());
      total += p.numel();
    }
    at::Tensor flat = at::empty({total}, options), grad = at::zeros({total}, options);
    int64_t offset = 0;
    for (auto& [name, p] : group.params) {
      const int64_t n = p.numel();
      at::Tensor slot = flat.narrow(0, offset, n).view(p.sizes());
      slot.copy_(p);
      p.set_data(slot);  // the module's tensor now lives in the buffer (as `p.data = slot` in Python)
      p.mutable_grad() = grad.narrow(0, offset, n).view(p.sizes());
      offset += n;
    }
    flat_.push_back(flat);
    grads_.push_back(grad);
    exp_avg_.push_back(at::zeros_like(flat));
    exp_avg_sq_.push_back(at::zeros_like(flat));
  }
}

namespace {

// Keeps each parameter's .grad a view of its slot in the buffer: a caller may have set it to None (e.g.
// Module::zero_grad) or replaced it; the values are moved into the buffer. A parameter moved off the buffer
// (module.to() after the optimizer was built) is an error.
void attach_grads(std::vector<AdamW::Group>& groups, const std::vector<at::Tensor>& flat, const std::vector<at::Tensor>& grads) {
  at::NoGradGuard no_grad;
  for (size_t g = 0; g < groups.size(); ++g) {
    int64_t offset = 0;
    for (auto& [name, p] : groups[g].params) {
      const int64_t n = p.numel();
      if (p.data_ptr() != static_cast<char*>(flat[g].data_ptr()) + offset * flat[g].element_size())
        fail_value("AdamW: parameter '{}' was moved or replaced after the optimizer was built (move modules first)", name);
      const at::Tensor slot = grads[g].narrow(0, offset, n);
      at::Tensor& grad = p.mutable_grad();
      if (!grad.defined()) {
        slot.zero_();
        grad = slot.view(p.sizes());
      } else if (grad.data_ptr() != slot.data_ptr()) {
        slot.copy_(grad.reshape({-1}));
        grad = slot.view(p.sizes());
      }
      offset += n;
    }
  }
}

// torch.optim.AdamW's update in one pass over float32 buffers on the CPU (no errno: sqrt vectorises). The pass
// is memory-bound (7 floats moved per parameter): it runs on every core (bench-s: 48 -> 29 ms on 2 cores).
__attribute__((optimize("no-math-errno"))) void fused_adamw(float* p, const float* g, float* m, float* v, int64_t n, float decay, float beta1, float beta2,
                 float step_size, float bias2_sqrt, float eps) {
  detail::parallel_chunks(n, 1 << 18, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      p[i] *= decay;
      m[i] = m[i] * beta1 + g[i] * (1.0f - beta1);
      v[i] = v[i] * beta2 + g[i] * g[i] * (1.0f - beta2);
      p[i] -= step_size * (m[i] / (std::sqrt(v[i]) / bias2_sqrt + eps));
    }
  });
}

}  // namespace

void AdamW::step(double lr) {
  if (!(lr >= 0) || !std::isfinite(lr)) fail_value("AdamW.step: lr {} must be finite and >= 0", lr);
  attach_grads(groups_, flat_, grads_);
  ++steps_;
  last_lr_ = lr;
  const double bias1 = 1 - std::pow(beta1_, static_cast<double>(steps_));
  const double bias2_sqrt = std::sqrt(1 - std::pow(beta2_, static_cast<double>(steps_)));
  const double step_size = lr / bias1;
  at::NoGradGuard no_grad;
  for (size_t g = 0; g < groups_.size(); ++g) {
    at::Tensor &p = flat_[g], &m = exp_avg_[g], &v = exp_avg_sq_[g];
    const at::Tensor& grad = grads_[g];
    const double decay = 1 - lr * groups_[g].weight_decay;
    if (p.numel() == 0) continue;
    if (p.device().is_cpu() && p.scalar_type() == at::kFloat) {
      fused_adamw(p.data_ptr<float>(), grad.data_ptr<float>(), m.data_ptr<float>(), v.data_ptr<float>(), p.numel(),
                  static_cast<float>(decay), static_cast<float>(beta1_), static_cast<float>(beta2_),
                  static_cast<float>(step_size), static_cast<float>(bias2_sqrt), static_cast<float>(eps_));
    } else {  // the same arithmetic as torch.optim.AdamW's single-tensor path, on the whole buffer
      p.mul_(decay);
      m.mul_(beta1_).add_(grad, 1 - beta1_);
      v.mul_(beta2_).addcmul_(grad, grad, 1 - beta2_);
      p.addcdiv_(m, (v.sqrt() / bias2_sqrt).add_(eps_), -step_size);
    }
  }
}

void AdamW::zero_grad() {
  attach_grads(groups_, flat_, grads_);
  for (auto& g : grads_) g.zero_();
}

double AdamW::grad_norm() {
  sync_grads();
  double sum = 0;  // per buffer in its own precision (torch's norm sums pairwise), across buffers in double
  for (const auto& g : grads_)
    if (g.numel()) sum += std::pow(g.norm().item<double>(), 2);
  return std::sqrt(sum);
}

void AdamW::sync_grads() { attach_grads(groups_, flat_, grads_); }

void AdamW::scale_grads(double factor) {
  for (auto& g : grads_) g.mul_(factor);
}

std::string AdamW::first_nonfinite_grad() {
  for (size_t g = 0; g < groups_.size(); ++g) {
    if (grads_[g].numel() == 0 || at::isfinite(grads_[g]).all().item<bool>()) continue;
    int64_t offset = 0;
    for (const auto& [name, p] : groups_[g].params) {
      if (!at::isfinite(grads_[g].narrow(0, offset, p.numel())).all().item<bool>()) return name;
      offset += p.numel();
    }
  }
  return "";
}

TensorDict AdamW::state_dict() const {
  TensorDict state;
  for (size_t g = 0; g < groups_.size(); ++g) {
    state.insert(fmt::format("group{}.exp_avg", g), exp_avg_[g].to(at::kCPU));
    state.insert(fmt::format("group{}.exp_avg_sq", g), exp_avg_sq_[g].to(at::kCPU));
  }
  return state;
}

Metadata AdamW::state_metadata() const {
  nlohmann::json groups = nlohmann::json::array();
  for (const auto& group : groups_) {
    nlohmann::json names = nlohmann::json::array();
    for (const auto& [name, p] : group.params) names.push_back(name);
    groups.push_back({{"weight_decay", group.weight_decay}, {"params", names}});
  }
  return {{"format", "kclip-adamw"},
          {"steps", std::to_string(steps_)},
          {"betas", fmt::format("{:.17g},{:.17g}", beta1_, beta2_)},
          {"eps", fmt::format("{:.17g}", eps_)},
          {"groups", groups.dump()}};
}

void AdamW::load_state_dict(const TensorDict& state, const Metadata& metadata, const std::string& source) {
  auto meta = [&](const char* key) {
    auto it = metadata.find(key);
    if (it == metadata.end()) fail("{}: optimizer state lacks metadata '{}'", source, key);
    return it->second;
  };
  if (meta("format") != "kclip-adamw") fail("{}: not a kclip AdamW state (format '{}')", source, meta("format"));
  nlohmann::json groups;
  try {
    groups = nlohmann::json::parse(meta("groups"));
  } catch (const nlohmann::json::exception& e) {
    fail("{}: optimizer metadata 'groups' is not valid JSON: {}", source, e.what());
  }
  if (!groups.is_array() || groups.size() != groups_.size())
    fail("{}: optimizer state has {} parameter groups, this optimizer {}", source, groups.is_array() ? groups.size() : 0,
         groups_.size());
  for (size_t g = 0; g < groups_.size(); ++g) {
    std::vector<std::string> mine, theirs;
    for (const auto& [name, p] : groups_[g].params) mine.push_back(name);
    try {
      theirs = groups[g].at("params").get<std::vector<std::string>>();
    } catch (const nlohmann::json::exception&) {
      fail("{}: optimizer group {} has no parameter list", source, g);
    }
    if (mine != theirs)
      fail("{}: optimizer group {} holds other parameters ({} saved, {} here): the model or loss settings changed",
           source, g, theirs.size(), mine.size());
  }
  int64_t steps = 0;
  try {
    steps = std::stoll(meta("steps"));
  } catch (const std::exception&) {
    fail("{}: optimizer metadata 'steps' is '{}': expected an integer", source, meta("steps"));
  }
  at::NoGradGuard no_grad;
  for (size_t g = 0; g < groups_.size(); ++g)
    for (auto [key, target] : {std::pair{"exp_avg", &exp_avg_[g]}, {"exp_avg_sq", &exp_avg_sq_[g]}}) {
      const std::string name = fmt::format("group{}.{}", g, key);
      if (!state.contains(name)) fail("{}: optimizer state lacks '{}'", source, name);
      const at::Tensor& t = state[name];
      if (t.sizes() != target->sizes())
        fail("{}: optimizer tensor '{}' has {} elements, expected {}", source, name, t.numel(), target->numel());
      target->copy_(t);
    }
  steps_ = steps;
}

}  // namespace kclip
