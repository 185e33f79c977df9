#pragma once
// Pulls webdataset samples out of one tar shard, in order, with libarchive (private header): members sharing a
// key (the path up to the first '.' of the file name) form a sample; it is complete with an image and a caption.
#include <kclip/data.h>

#include <cstdint>
#include <optional>
#include <string>

struct archive;

namespace kclip::detail {

class TarSampleReader {
 public:
  // read_images = false passes over image data (counting samples reads headers only).
  TarSampleReader(std::string shard, const WebDatasetOptions& options, bool read_images = true);
  ~TarSampleReader();
  TarSampleReader(const TarSampleReader&) = delete;
  TarSampleReader& operator=(const TarSampleReader&) = delete;

  // The next complete sample, nullopt at the end of the shard. A damaged archive or member is a kclip::Error
  // naming the shard and the member.
  std::optional<Sample> next();
  int64_t incomplete() const { return incomplete_; }

 private:
  bool read_header();  // the next regular file into pending_name_; false at the end
  std::string read_data(const std::string& name);
  void skip_data(const std::string& name);

  std::string shard_;
  WebDatasetOptions options_;
  bool read_images_;
  archive* archive_ = nullptr;
  bool has_pending_ = false, done_ = false;
  std::string pending_name_;
  int64_t pending_size_ = 0;
  int64_t incomplete_ = 0;
};

}  // namespace kclip::detail
