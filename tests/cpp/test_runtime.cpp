// Runtime: thread defaults from the environment and affinity, and the BLAS check.
#include "testing.h"

#include <kclip/error.h>
#include <kclip/runtime.h>

#include <ATen/Parallel.h>

#include <cstdlib>
#include <optional>
#include <string>

namespace {

// Sets an environment variable for one scope and restores it afterwards.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const char* value) : name_(name) {
    if (const char* old = std::getenv(name)) old_ = old;
    if (value) setenv(name, value, 1); else unsetenv(name);
  }
  ~ScopedEnv() {
    if (old_) setenv(name_, old_->c_str(), 1); else unsetenv(name_);
  }

 private:
  const char* name_;
  std::optional<std::string> old_;
};

}  // namespace

TEST_CASE("runtime: the thread count follows KCLIP_NUM_THREADS, then OMP_NUM_THREADS, then the BLAS and the affinity mask") {
  cpu_set_t set;
  CPU_ZERO(&set);
  REQUIRE(sched_getaffinity(0, sizeof(set), &set) == 0);
  {
    ScopedEnv a("KCLIP_NUM_THREADS", nullptr), b("OMP_NUM_THREADS", nullptr);
    // OpenBLAS with its own pthread pool gets the cores; LibTorch's OpenMP pool stays at one thread.
    CHECK(kclip::default_num_threads() == (kclip::blas_threading() == "pthreads" ? 1 : CPU_COUNT(&set)));
    CHECK(kclip::available_cpus() == CPU_COUNT(&set));
  }
  {
    ScopedEnv a("KCLIP_NUM_THREADS", nullptr), b("OMP_NUM_THREADS", "3,1");
    CHECK(kclip::default_num_threads() == 3);
  }
  {
    ScopedEnv a("KCLIP_NUM_THREADS", "5"), b("OMP_NUM_THREADS", "3");
    CHECK(kclip::default_num_threads() == 5);
  }
  {
    ScopedEnv a("KCLIP_NUM_THREADS", "lots"), b("OMP_NUM_THREADS", nullptr);
    CHECK_THROWS_WITH_AS(kclip::default_num_threads(), doctest::Contains("KCLIP_NUM_THREADS='lots'"),
                         kclip::ValueError);
  }
}

TEST_CASE("runtime: init applies the default once and set_num_threads overrides it") {
  kclip::init();
  const int chosen = at::get_num_threads();
  CHECK(chosen >= 1);
  kclip::set_num_threads(1);
  CHECK(kclip::num_threads() == 1);
  kclip::init();  // no effect any more
  CHECK(at::get_num_threads() == 1);
  kclip::set_num_threads(chosen);
  CHECK_THROWS_AS(kclip::set_num_threads(0), kclip::ValueError);
}

TEST_CASE("runtime: the BLAS in use is reported") {
  const std::string blas = kclip::blas_library();
  CHECK_FALSE(blas.empty());
  CHECK(kclip::blas_is_openblas() == (blas.find("openblas") != std::string::npos));
  CHECK(kclip::runtime_summary().find("blas " + blas) != std::string::npos);
}
