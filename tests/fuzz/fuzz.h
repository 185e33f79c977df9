#pragma once
// Shared by the libFuzzer harnesses (tests/fuzz/README.md): each feeds one parser an input as the file a user
// would hand kclip. The contract under test: any input ends in a result or one kclip::Error (a clear message),
// never a crash, a hang, an out-of-memory or another exception type (kclip::Error for bad data,
// kclip::ValueError for bad arguments, e.g. text that is not UTF-8). Anything else escapes and libFuzzer
// reports it with the input that caused it.
#include <kclip/error.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <unistd.h>

namespace kclip_fuzz {

// A per-process scratch directory in /dev/shm (memory) when it exists.
inline const std::filesystem::path& scratch() {
  static const std::filesystem::path dir = [] {
    std::filesystem::path base = std::filesystem::exists("/dev/shm") ? "/dev/shm" : std::filesystem::temp_directory_path();
    std::filesystem::path d = base / ("kclip-fuzz-" + std::to_string(::getpid()));
    std::filesystem::create_directories(d);
    return d;
  }();
  return dir;
}

inline std::filesystem::path write(const std::string& name, const uint8_t* data, size_t size) {
  const std::filesystem::path path = scratch() / name;
  std::ofstream(path, std::ios::binary | std::ios::trunc).write(reinterpret_cast<const char*>(data), size);
  return path;
}

// A reference file (a real vocabulary, tokenizer) from the environment variable `var`; the harness cannot run
// without it.
inline std::filesystem::path required_file(const char* var) {
  const char* value = std::getenv(var);
  if (value == nullptr || !std::filesystem::exists(value)) {
    std::fprintf(stderr, "set %s to an existing file (make fuzz does)\n", var);
    std::exit(2);
  }
  return value;
}

}  // namespace kclip_fuzz

// Runs `body`; kclip's two error types are the expected outcome for bad input.
#define KCLIP_FUZZ_EXPECT_CLEAR_ERRORS(body) \
  try {                                      \
    body;                                    \
  } catch (const kclip::Error&) {            \
  } catch (const kclip::ValueError&) {       \
  }
