#pragma once
// Helpers shared by kclip's C++ tests: the reference data folder and scratch directories.
#include <doctest/doctest.h>
#include <kclip_test_config.h>

#include <ATen/core/Tensor.h>

#include <cstdlib>
#include <filesystem>
#include <random>
#include <string>

namespace kclip::testing {

// ../shared (or $KCLIP_SHARED) if present. When absent, a test skips: it returns early after a message,
// unless KCLIP_REQUIRE_SHARED=1 (CI), where absence is a failure.
inline std::filesystem::path shared_dir() {
  const char* env = std::getenv("KCLIP_SHARED");
  return env && *env ? std::filesystem::path(env)
                     : std::filesystem::path(KCLIP_TEST_SOURCE_DIR).parent_path() / "shared";
}

inline bool shared_required() {
  const char* env = std::getenv("KCLIP_REQUIRE_SHARED");
  return env && std::string(env) == "1";
}

// True when `relative` exists under shared_dir(); otherwise skips (message) or fails (KCLIP_REQUIRE_SHARED=1).
inline bool have_shared(const std::string& relative) {
  if (std::filesystem::exists(shared_dir() / relative)) return true;
  if (shared_required()) {
    FAIL("reference data missing: " << (shared_dir() / relative).string() << " (KCLIP_REQUIRE_SHARED=1)");
  } else {
    MESSAGE("SKIPPED: reference data not found at " << (shared_dir() / relative).string());
  }
  return false;
}

// A tensor's dtype as text, for CHECKs (doctest cannot print c10::ScalarType: c10::toString returns char*).
inline std::string dtype_of(const at::Tensor& t) { return c10::toString(t.scalar_type()); }
inline std::string dtype_of(c10::ScalarType t) { return c10::toString(t); }

// A fresh directory removed at scope exit.
class TempDir {
 public:
  TempDir() {
    std::random_device rd;
    path_ = std::filesystem::temp_directory_path() / ("kclip-test-" + std::to_string(rd()) + std::to_string(rd()));
    std::filesystem::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  const std::filesystem::path& path() const { return path_; }
  std::filesystem::path operator/(const std::string& name) const { return path_ / name; }

 private:
  std::filesystem::path path_;
};

}  // namespace kclip::testing
