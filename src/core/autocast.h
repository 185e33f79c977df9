#pragma once
// Autocast state (private header): saved and restored around recomputation (gradient checkpointing), and a scope
// that enables autocast for one device type, as `with torch.autocast(device_type, dtype)`. LibTorch 2.4 replaced
// the CUDA/CPU-specific calls by per-device ones (the old ones are deprecated).
#include <ATen/autocast_mode.h>
#include <c10/core/DeviceType.h>
#include <torch/version.h>

namespace kclip::detail {

// The autocast settings of both device types.
struct AutocastState {
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 4)
  bool cuda = at::autocast::is_autocast_enabled(at::kCUDA), cpu = at::autocast::is_autocast_enabled(at::kCPU);
  at::ScalarType cuda_dtype = at::autocast::get_autocast_dtype(at::kCUDA);
  at::ScalarType cpu_dtype = at::autocast::get_autocast_dtype(at::kCPU);
  void apply() const {
    at::autocast::set_autocast_enabled(at::kCUDA, cuda);
    at::autocast::set_autocast_enabled(at::kCPU, cpu);
    at::autocast::set_autocast_dtype(at::kCUDA, cuda_dtype);
    at::autocast::set_autocast_dtype(at::kCPU, cpu_dtype);
  }
#else
  bool cuda = at::autocast::is_enabled(), cpu = at::autocast::is_cpu_enabled();
  at::ScalarType cuda_dtype = at::autocast::get_autocast_gpu_dtype(), cpu_dtype = at::autocast::get_autocast_cpu_dtype();
  void apply() const {
    at::autocast::set_enabled(cuda);
    at::autocast::set_cpu_enabled(cpu);
    at::autocast::set_autocast_gpu_dtype(cuda_dtype);
    at::autocast::set_autocast_cpu_dtype(cpu_dtype);
  }
#endif
};

// Enables autocast to `dtype` for `device` while alive (when `enabled`), restoring the previous state after; the
// outermost scope clears autocast's cast cache on exit, as torch.autocast does.
class AutocastGuard {
 public:
  AutocastGuard(c10::DeviceType device, at::ScalarType dtype, bool enabled) : enabled_(enabled) {
    if (!enabled_) return;
    AutocastState next = saved_;
    if (device == c10::DeviceType::CUDA) next.cuda = true, next.cuda_dtype = dtype;
    else next.cpu = true, next.cpu_dtype = dtype;
    next.apply();
    at::autocast::increment_nesting();
  }
  ~AutocastGuard() {
    if (!enabled_) return;
    if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
    saved_.apply();
  }
  AutocastGuard(const AutocastGuard&) = delete;
  AutocastGuard& operator=(const AutocastGuard&) = delete;

 private:
  bool enabled_;
  AutocastState saved_;
};

}  // namespace kclip::detail
