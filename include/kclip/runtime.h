#pragma once
// Process-wide runtime set-up: LibTorch's intra-op thread count and the BLAS check.
//
// Without OpenBLAS LibTorch falls back to reference BLAS (~35x slower): kclip warns loudly on stderr then.
// On first use (any loader, model or `import kclip`) kclip sets LibTorch's intra-op threads, unless
// KCLIP_NUM_THREADS or OMP_NUM_THREADS says otherwise:
//   * 1 when the BLAS runs GEMMs on its own pthread pool (Debian's libopenblas0-pthread): OpenBLAS then has every
//     core for the GEMMs that dominate training, and no LibTorch OpenMP worker spins between ops taking a core
//     from it. Measured on 2 cores (bench/bench_clip.py, bench-s training step): 2 LibTorch threads 2.09 s,
//     1 thread 1.22 s; the same holds for K-means and the Llama forward.
//   * the cores this process may run on (its CPU affinity) otherwise.
// kclip's own CPU loops (image decoding and preprocessing) use available_cpus() threads either way.
#include <string>

namespace kclip {

// Threads kclip would choose: KCLIP_NUM_THREADS, else OMP_NUM_THREADS, else 1 if the BLAS has its own pthread
// pool, else available_cpus(). Invalid values (not a positive integer) raise kclip::ValueError naming the variable.
int default_num_threads();

// The CPUs in this process's affinity mask.
int available_cpus();

// Idempotent and thread-safe: the first call applies default_num_threads() and checks the BLAS; later calls
// do nothing. kclip's entry points call it; applications may call it early.
void init();

// Sets LibTorch's intra-op threads and marks the runtime initialised, so init() will not override it.
void set_num_threads(int threads);
int num_threads();

// Path (symlinks resolved) of the shared library that provides sgemm_ to LibTorch, "" if none was found.
std::string blas_library();
bool blas_is_openblas();

// OpenBLAS's threading: "pthreads" (its own thread pool), "openmp", "sequential", or "" if not OpenBLAS.
std::string blas_threading();

// OpenBLAS's kernel set in use ("Haswell", "SkylakeX", ...: openblas_get_corename, chosen for the CPU or by
// OPENBLAS_CORETYPE when OpenBLAS loads), "" if not OpenBLAS.
std::string blas_core();

// For training processes (the Trainer calls it): glibc's malloc keeps freed blocks of up to 32 MiB (its maximum
// mmap threshold) in the heap, and up to 1 GiB free at the heap's top, so each step's activations and gradients
// reuse the previous step's memory instead of mapping fresh pages that the kernel must fault in and zero
// (bench-s step on 2 cores: ~57 000 page faults and ~40 ms per step without). Process-wide; freed memory is not
// returned to the system until exit. Does nothing outside glibc, or where MALLOC_MMAP_THRESHOLD_,
// MALLOC_TRIM_THRESHOLD_ or MALLOC_TOP_PAD_ is set (that choice stands). Returns whether it changed anything.
bool retain_freed_memory();

// For GEMM-dominated CPU work (K-means). While alive, LibTorch's own intra-op threads drop to 1 if the BLAS
// runs GEMMs on its own pthread pool: otherwise LibTorch's OpenMP workers spin between ops and take cores from
// the BLAS threads (measured: K-means on 2 cores 3.98 s -> 2.59 s). No effect for other BLAS set-ups. The thread
// count is process-wide: other threads using LibTorch meanwhile also see it.
class GemmBoundScope {
 public:
  GemmBoundScope();
  ~GemmBoundScope();
  GemmBoundScope(const GemmBoundScope&) = delete;
  GemmBoundScope& operator=(const GemmBoundScope&) = delete;

 private:
  int saved_threads_ = 0;  // 0: nothing changed
};

// One line per fact: kclip and LibTorch versions, threads, BLAS; what `kclip info` prints.
std::string runtime_summary();

}  // namespace kclip
