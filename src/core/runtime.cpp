#include <kclip/error.h>
#include <kclip/runtime.h>
#include <kclip/version.h>

#include <ATen/Parallel.h>
#include <fmt/format.h>
#include <torch/version.h>

#include <dlfcn.h>
#if defined(__GLIBC__)
#include <malloc.h>
#endif
#include <sched.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <mutex>
#include <string>
#include <thread>

namespace kclip {
namespace {

std::once_flag g_init_once;
std::atomic<bool> g_threads_set_by_user{false};

// A positive integer from the environment variable `name`, 0 when unset or empty.
int env_thread_count(const char* name) {
  const char* value = std::getenv(name);
  if (value == nullptr || *value == '\0') return 0;
  char* end = nullptr;
  long parsed = std::strtol(value, &end, 10);
  // OMP_NUM_THREADS may be a list ("4,2"): its first entry is the outer level, which is what we want.
  bool list_ok = (*end == ',') && std::string(name) == "OMP_NUM_THREADS";
  if (end == value || (*end != '\0' && !list_ok) || parsed < 1 || parsed > 4096) {
    fail_value("environment variable {}='{}': expected a positive integer number of threads", name, value);
  }
  return static_cast<int>(parsed);
}

int affinity_cpu_count() {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof(set), &set) == 0) {
    int count = CPU_COUNT(&set);
    if (count > 0) return count;
  }
  unsigned hw = std::thread::hardware_concurrency();
  return hw > 0 ? static_cast<int>(hw) : 1;
}

// Netlib's reference BLAS (Debian's libblas.so.3), or none: the slow case. A BLAS inside LibTorch itself (the
// pip/conda wheels link MKL into libtorch_cpu) is fast.
bool is_reference_blas(const std::string& lib) {
  const std::string name = std::filesystem::path(lib).filename().string();
  return lib.empty() || name.rfind("libblas", 0) == 0 || lib.find("/blas/") != std::string::npos;
}

void warn_if_reference_blas() {
  std::string lib = blas_library();
  if (blas_is_openblas() || !is_reference_blas(lib)) return;
  std::fprintf(stderr,
               "\n"
               "kclip: WARNING: LibTorch is not using OpenBLAS (BLAS in use: %s).\n"
               "kclip: WARNING: reference BLAS makes matrix products about 35x slower.\n"
               "kclip: WARNING: install it with `apt-get install libopenblas0-pthread` "
               "(scripts/install-deps.sh does).\n\n",
               lib.empty() ? "none found" : lib.c_str());
}

}  // namespace

std::string blas_core() {
  if (!blas_is_openblas()) return "";
  using GetCorename = char* (*)();
  auto get_corename = reinterpret_cast<GetCorename>(dlsym(RTLD_DEFAULT, "openblas_get_corename"));
  const char* name = get_corename ? get_corename() : nullptr;
  return name ? name : "";
}

bool retain_freed_memory() {
#if defined(__GLIBC__)
  for (const char* name : {"MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_"})
    if (std::getenv(name) != nullptr) return false;
  static std::once_flag once;
  static bool changed = false;
  std::call_once(once, [] {
    changed = mallopt(M_MMAP_THRESHOLD, 32 << 20) == 1 && mallopt(M_TRIM_THRESHOLD, 1 << 30) == 1 &&
              mallopt(M_TOP_PAD, 64 << 20) == 1;
  });
  return changed;
#else
  return false;
#endif
}

int default_num_threads() {
  if (int n = env_thread_count("KCLIP_NUM_THREADS")) return n;
  if (int n = env_thread_count("OMP_NUM_THREADS")) return n;
  return blas_threading() == "pthreads" ? 1 : affinity_cpu_count();
}

int available_cpus() { return affinity_cpu_count(); }

void init() {
  std::call_once(g_init_once, [] {
    if (!g_threads_set_by_user.load()) at::set_num_threads(default_num_threads());
    warn_if_reference_blas();
  });
}

void set_num_threads(int threads) {
  if (threads < 1) fail_value("set_num_threads({}): expected a positive number of threads", threads);
  g_threads_set_by_user.store(true);
  init();  // the BLAS check still runs once
  at::set_num_threads(threads);
}

int num_threads() {
  init();
  return at::get_num_threads();
}

std::string blas_library() {
  // LibTorch calls the Fortran symbol sgemm_; whichever loaded library provides it is the BLAS in use.
  void* symbol = dlsym(RTLD_DEFAULT, "sgemm_");
  Dl_info info{};
  if (symbol == nullptr || dladdr(symbol, &info) == 0 || info.dli_fname == nullptr) return "";
  std::error_code ec;
  auto resolved = std::filesystem::canonical(info.dli_fname, ec);  // through /etc/alternatives
  return ec ? std::string(info.dli_fname) : resolved.string();
}

bool blas_is_openblas() { return blas_library().find("openblas") != std::string::npos; }

std::string blas_threading() {
  if (!blas_is_openblas()) return "";
  using GetParallel = int (*)();
  auto get_parallel = reinterpret_cast<GetParallel>(dlsym(RTLD_DEFAULT, "openblas_get_parallel"));
  if (get_parallel == nullptr) return "";
  switch (get_parallel()) {
    case 0: return "sequential";
    case 1: return "pthreads";
    case 2: return "openmp";
    default: return "";
  }
}

GemmBoundScope::GemmBoundScope() {
  init();
  static const bool own_pool = blas_threading() == "pthreads";
  if (own_pool && at::get_num_threads() > 1) {
    saved_threads_ = at::get_num_threads();
    at::set_num_threads(1);
  }
}

GemmBoundScope::~GemmBoundScope() {
  if (saved_threads_ > 0) at::set_num_threads(saved_threads_);
}

std::string runtime_summary() {
  init();
  std::string blas = blas_library();
  return fmt::format(
      "kclip {}\n"
      "libtorch {}\n"
      "threads {} (intra-op)\n"
      "blas {}{}{}{}\n",
      version(), TORCH_VERSION, at::get_num_threads(), blas.empty() ? "none found" : blas,
      blas_threading().empty() ? "" : " (" + blas_threading() + ")",
      blas_core().empty() ? "" : ", kernels " + blas_core(),
      blas_is_openblas() ? "" : "  <- NOT OpenBLAS: ~35x slower matrix products");
}

}  // namespace kclip
