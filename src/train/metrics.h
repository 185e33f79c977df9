#pragma once
// What a training run reports (private header): metrics.jsonl, the progress display and memory use.
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <string>

namespace kclip::detail {

// metrics.jsonl: one JSON object per line, appended and flushed as it comes; a resumed run first cuts the file
// back to the bytes its checkpoint had seen, so that no step appears twice.
class MetricsLog {
 public:
  ~MetricsLog();
  void open(const std::filesystem::path& path);
  bool is_open() const { return file_ != nullptr; }
  void truncate_to(int64_t bytes);
  void write(const std::string& json_object);
  int64_t bytes() const;  // the file's size so far
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
  std::FILE* file_ = nullptr;
};

// Progress on stderr: one line redrawn in place on a terminal, plain lines every `every` steps otherwise.
class ProgressDisplay {
 public:
  void configure(bool enabled, int64_t every);
  void update(int64_t step, int64_t total, const std::string& text, bool last);
  void note(const std::string& line);  // a line of its own (keeps the progress line intact on a terminal)

 private:
  bool enabled_ = false, tty_ = false, drawn_ = false;
  int64_t every_ = 10;
};

double resident_memory_mb();  // current RSS
double peak_memory_mb();      // peak RSS (VmHWM)

}  // namespace kclip::detail
