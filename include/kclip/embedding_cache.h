#pragma once
// The teacher-embedding cache: captions are embedded once, deduplicated, and stored as safetensors shards that
// K-means and the trainer memory-map. A build killed mid-way resumes after its last complete shard and ends
// byte-identical to an uninterrupted build.
//
// Layout of a cache directory:
//   index.json              format, teacher_id, dim, dtype, shard_size, count, shards (complete shards, in order)
//   shard-00000.safetensors "embeddings" [rows, dim] (F16 or F32) and "hashes" [rows] I64 (64-bit FNV-1a of each
//                           caption's UTF-8): the caption-hash -> (shard, row) index, rebuilt when a cache opens.
#include <kclip/teacher.h>

#include <ATen/core/Tensor.h>
#include <torch/arg.h>

#include <filesystem>
#include <string>
#include <unordered_map>
#include <vector>

namespace kclip {

// Captions from a CSV/TSV (open_clip style, e.g. `filepath,caption`; a header row names the columns; quotes as
// in RFC 4180) or, for any other extension, a text file with one caption per line.
std::vector<std::string> read_captions(const std::filesystem::path& path, const std::string& column = "caption",
                                       char separator = 0 /* 0: ',' for .csv, '\t' for .tsv */);

uint64_t caption_hash(const std::string& caption);

struct EmbeddingCacheOptions {
  TORCH_ARG(int64_t, shard_size) = 65536;  // unique captions per shard
  TORCH_ARG(std::string, dtype) = "F16";   // "F16" or "F32"
  TORCH_ARG(int64_t, batch_size) = 256;    // captions per teacher call
  TORCH_ARG(bool, force) = false;          // rebuild a cache made by another teacher or from other captions
  TORCH_ARG(int64_t, max_new_shards) = 0;  // > 0: stop after writing this many shards (incremental builds)
  TORCH_ARG(bool, progress) = true;        // a progress line on stderr (captions/s, ETA)
};

class EmbeddingCache {
 public:
  // Opens a complete or partial cache. expected_teacher_id, if given, must match unless force.
  explicit EmbeddingCache(const std::filesystem::path& directory, const std::string& expected_teacher_id = "",
                          bool force = false);

  // Embeds the unique captions not yet cached, shard by shard, and returns the opened cache.
  static EmbeddingCache build(const std::filesystem::path& directory, Teacher& teacher,
                              const std::vector<std::string>& captions, EmbeddingCacheOptions options = {});

  // float32 [N, dim] rows for the captions (any order, repeats allowed); kclip::Error names a missing caption.
  at::Tensor get(const std::vector<std::string>& captions) const;
  bool contains(const std::string& caption) const;
  std::vector<at::Tensor> shards() const;  // each shard's "embeddings", memory-mapped (for K-means)

  int64_t count() const { return count_; }
  int64_t dim() const { return dim_; }
  const std::string& teacher_id() const { return teacher_id_; }
  bool complete() const { return complete_; }
  const std::filesystem::path& directory() const { return directory_; }

 private:
  std::filesystem::path directory_;
  std::string teacher_id_, dtype_;
  int64_t dim_ = 0, count_ = 0, shard_size_ = 0;
  bool complete_ = false;
  std::vector<at::Tensor> embeddings_;                          // per shard, mapped
  std::unordered_map<uint64_t, std::pair<int64_t, int64_t>> rows_;  // hash -> (shard, row)
};

// A Teacher that answers from a cache: the trainer's teacher when embeddings were computed offline.
class PrecomputedTeacher : public Teacher {
 public:
  explicit PrecomputedTeacher(EmbeddingCache cache) : cache_(std::move(cache)) {}
  at::Tensor embed(const std::vector<std::string>& texts) override { return cache_.get(texts); }
  int64_t dim() const override { return cache_.dim(); }
  std::string id() const override { return cache_.teacher_id(); }
  const EmbeddingCache& cache() const { return cache_; }

 private:
  EmbeddingCache cache_;
};

}  // namespace kclip
