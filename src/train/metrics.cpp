// metrics.jsonl, the progress display, and memory figures from /proc.
#include "train/metrics.h"

#include <kclip/error.h>

#include <fmt/format.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <unistd.h>

namespace kclip::detail {

MetricsLog::~MetricsLog() {
  if (file_) std::fclose(file_);
}

void MetricsLog::open(const std::filesystem::path& path) {
  path_ = path;
  file_ = std::fopen(path.c_str(), "ab");
  if (!file_) fail("{}: cannot open for appending: {}", path.string(), std::strerror(errno));
}

void MetricsLog::truncate_to(int64_t bytes) {
  if (!file_ || bytes < 0 || bytes >= this->bytes()) return;
  std::fflush(file_);
  if (::ftruncate(fileno(file_), bytes) != 0) fail("{}: cannot truncate: {}", path_.string(), std::strerror(errno));
  std::fseek(file_, 0, SEEK_END);
}

void MetricsLog::write(const std::string& json_object) {
  if (!file_) return;
  if (std::fwrite(json_object.data(), 1, json_object.size(), file_) != json_object.size() || std::fputc('\n', file_) == EOF ||
      std::fflush(file_) != 0)
    fail("{}: write failed: {}", path_.string(), std::strerror(errno));
}

int64_t MetricsLog::bytes() const {
  if (!file_) return 0;
  std::fflush(file_);
  std::error_code ec;
  const auto size = std::filesystem::file_size(path_, ec);
  return ec ? 0 : static_cast<int64_t>(size);
}

void ProgressDisplay::configure(bool enabled, int64_t every) {
  enabled_ = enabled;
  every_ = every;
  tty_ = ::isatty(STDERR_FILENO) == 1;
}

void ProgressDisplay::update(int64_t step, int64_t total, const std::string& text, bool last) {
  if (!enabled_) return;
  if (tty_) {
    constexpr int kWidth = 20;
    const int filled = total > 0 ? static_cast<int>(kWidth * std::min<int64_t>(step, total) / total) : 0;
    fmt::print(stderr, "\r\033[K[{}{}] {}", std::string(static_cast<size_t>(filled), '#'),
               std::string(static_cast<size_t>(kWidth - filled), '.'), text);
    drawn_ = !last;
    if (last) fmt::print(stderr, "\n");
    std::fflush(stderr);
  } else if (last || step % every_ == 0 || step == 1) {
    fmt::print(stderr, "{}\n", text);
    std::fflush(stderr);
  }
}

void ProgressDisplay::note(const std::string& line) {
  if (!enabled_) return;
  fmt::print(stderr, "{}{}\n", tty_ && drawn_ ? "\r\033[K" : "", line);
  drawn_ = false;
  std::fflush(stderr);
}

namespace {
double status_kb(const char* field) {
  std::ifstream in("/proc/self/status");
  std::string line;
  const size_t n = std::strlen(field);
  while (std::getline(in, line))
    if (line.compare(0, n, field) == 0) return std::atof(line.c_str() + n + 1);
  return 0;
}
}  // namespace

double resident_memory_mb() { return status_kb("VmRSS") / 1024.0; }
double peak_memory_mb() { return status_kb("VmHWM") / 1024.0; }

}  // namespace kclip::detail
