#pragma once
// kclip's own CPU threads (private header), for work outside the GEMMs: LibTorch's intra-op pool stays at one
// thread beside a pthread BLAS (runtime.h), so loops that are worth every core (image decoding, the optimizer's
// pass over all parameters) start their own threads, one per core of this process's affinity mask.
#include <kclip/runtime.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <exception>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace kclip::detail {

// Runs fn(i) for i in [0, n) on up to available_cpus() threads; the first exception is rethrown once all threads
// have finished.
inline void parallel_for_each(int64_t n, const std::function<void(int64_t)>& fn) {
  const int64_t workers = std::min<int64_t>(n, available_cpus());
  if (workers <= 1) {
    for (int64_t i = 0; i < n; ++i) fn(i);
    return;
  }
  std::atomic<int64_t> next{0};
  std::exception_ptr error;
  std::mutex error_mutex;
  auto work = [&] {
    for (int64_t i = next++; i < n; i = next++) {
      try {
        fn(i);
      } catch (...) {
        std::lock_guard<std::mutex> lock(error_mutex);
        if (!error) error = std::current_exception();
        next = n;
      }
    }
  };
  std::vector<std::thread> threads;
  for (int64_t t = 1; t < workers; ++t) threads.emplace_back(work);
  work();
  for (auto& thread : threads) thread.join();
  if (error) std::rethrow_exception(error);
}

// fn(begin, end) over [0, n) in ranges of `chunk` elements, handed out to the threads as they finish: when another
// process or OpenBLAS's spinning worker shares a core, the threads on free cores take more of the ranges.
inline void parallel_chunks(int64_t n, int64_t chunk, const std::function<void(int64_t, int64_t)>& fn) {
  chunk = std::max<int64_t>(chunk, 1);
  parallel_for_each((n + chunk - 1) / chunk, [&](int64_t i) { fn(i * chunk, std::min(n, (i + 1) * chunk)); });
}

}  // namespace kclip::detail
