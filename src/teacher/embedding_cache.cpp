// Embedding cache: caption files, the build (dedup, shards, resume) and lookups.
#include <kclip/embedding_cache.h>
#include <kclip/error.h>
#include <kclip/safetensors.h>

#include "core/file_lock.h"
#include "core/model_files.h"
#include "data/csv.h"

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <fmt/ranges.h>  // fmt::join (in ranges.h since fmt 11)
#include <nlohmann/json.hpp>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <random>
#include <sstream>
#include <unistd.h>

namespace kclip {
namespace fs = std::filesystem;
using json = nlohmann::ordered_json;

// ---- captions --------------------------------------------------------------------------------------------

uint64_t caption_hash(const std::string& caption) {
  uint64_t hash = 14695981039346656037ull;  // FNV-1a, 64-bit
  for (unsigned char c : caption) hash = (hash ^ c) * 1099511628211ull;
  return hash;
}

namespace {

std::string shard_name(int64_t index) { return fmt::format("shard-{:05d}.safetensors", index); }

at::ScalarType cache_dtype(const std::string& name) {
  if (name == "F16") return at::kHalf;
  if (name == "F32") return at::kFloat;
  fail_value("embedding cache dtype '{}': expected F16 or F32", name);
}

}  // namespace

std::vector<std::string> read_captions(const fs::path& path, const std::string& column, char separator) {
  const std::string where = path.string(), ext = path.extension().string();
  const std::string text = detail::read_text_file(path);
  if (separator == 0 && ext != ".csv" && ext != ".tsv") {  // plain text: one caption per non-empty line
    std::vector<std::string> captions;
    std::istringstream lines(text);
    for (std::string line; std::getline(lines, line);) {
      if (!line.empty() && line.back() == '\r') line.pop_back();
      if (!line.empty()) captions.push_back(line);
    }
    return captions;
  }
  auto rows = detail::parse_csv(text, separator ? separator : (ext == ".tsv" ? '\t' : ','), where);
  if (rows.empty()) fail("{}: empty file: expected a header row", where);
  const auto& header = rows[0];
  const auto it = std::find(header.begin(), header.end(), column);
  if (it == header.end()) fail("{}: no column '{}' in the header [{}]", where, column, fmt::join(header, ", "));
  const std::size_t index = static_cast<std::size_t>(it - header.begin());
  std::vector<std::string> captions;
  for (std::size_t r = 1; r < rows.size(); ++r) {
    if (rows[r].size() <= index)
      fail("{}: record {} has {} fields: no '{}' column", where, r + 1, rows[r].size(), column);
    captions.push_back(rows[r][index]);
  }
  return captions;
}

// ---- opening a cache -------------------------------------------------------------------------------------

EmbeddingCache::EmbeddingCache(const fs::path& directory, const std::string& expected_teacher_id, bool force)
    : directory_(directory) {
  const fs::path index_path = directory / "index.json";
  const std::string where = index_path.string();
  json index;
  try {
    index = json::parse(detail::read_text_file(index_path));
  } catch (const json::exception& e) {  // syntax, and numbers out of range (1e309)
    fail("{}: not valid JSON: {}", where, e.what());
  }
  if (!detail::json_field_is(index, "format", "kclip-embedding-cache"))
    fail("{}: not a kclip embedding cache index (format 'kclip-embedding-cache')", where);
  try {
    teacher_id_ = index.at("teacher_id").get<std::string>();
    dtype_ = index.at("dtype").get<std::string>();
    dim_ = detail::json_int(index.at("dim"));
    shard_size_ = detail::json_int(index.at("shard_size"));
    complete_ = index.at("complete").get<bool>();
  } catch (const json::exception& e) {
    fail("{}: missing or mistyped field: {}", where, e.what());
  }
  if (!expected_teacher_id.empty() && expected_teacher_id != teacher_id_ && !force)
    fail("{}: built by teacher '{}', not '{}' (force to use it anyway)", where, teacher_id_, expected_teacher_id);
  const json shards = index.contains("shards") ? index["shards"] : json::array();
  if (!shards.is_array()) fail("{}: field 'shards' must be a list of file names", where);
  for (std::size_t s = 0; s < shards.size(); ++s) {
    if (!shards[s].is_string()) fail("{}: shards[{}] = {}: expected a file name", where, s, shards[s].dump());
    const fs::path path = directory / shards[s].get<std::string>();
    SafetensorsFile file(path);  // validates the file
    if (!file.contains("embeddings") || !file.contains("hashes"))
      fail("{}: shard lacks 'embeddings' or 'hashes'", path.string());
    at::Tensor embeddings = file.get("embeddings"), hashes = file.get("hashes");
    if (embeddings.dim() != 2 || embeddings.size(1) != dim_ || hashes.dim() != 1 ||
        hashes.size(0) != embeddings.size(0) || hashes.scalar_type() != at::kLong)
      fail("{}: shard holds embeddings {} and hashes {}: expected [rows, {}] and I64 [rows]", path.string(),
           fmt::format("[{}]", fmt::join(embeddings.sizes(), ", ")), fmt::format("[{}]", fmt::join(hashes.sizes(), ", ")),
           dim_);
    const int64_t* h = hashes.data_ptr<int64_t>();
    for (int64_t r = 0; r < hashes.size(0); ++r) rows_[static_cast<uint64_t>(h[r])] = {static_cast<int64_t>(s), r};
    count_ += embeddings.size(0);
    embeddings_.push_back(embeddings);
  }
}

bool EmbeddingCache::contains(const std::string& caption) const { return rows_.count(caption_hash(caption)) != 0; }

std::vector<at::Tensor> EmbeddingCache::shards() const { return embeddings_; }

at::Tensor EmbeddingCache::get(const std::vector<std::string>& captions) const {
  const int64_t n = static_cast<int64_t>(captions.size());
  at::Tensor out = at::empty({n, dim_}, at::kFloat);
  // Gather shard by shard: one index_select per shard instead of one copy per row.
  std::vector<std::vector<int64_t>> wanted(embeddings_.size()), positions(embeddings_.size());
  for (int64_t i = 0; i < n; ++i) {
    auto it = rows_.find(caption_hash(captions[i]));
    if (it == rows_.end()) fail("{}: caption not in the cache: \"{}\"", directory_.string(), captions[i]);
    wanted[it->second.first].push_back(it->second.second);
    positions[it->second.first].push_back(i);
  }
  for (std::size_t s = 0; s < embeddings_.size(); ++s) {
    if (wanted[s].empty()) continue;
    at::Tensor rows = embeddings_[s].index_select(0, at::tensor(wanted[s], at::kLong)).to(at::kFloat);
    out.index_copy_(0, at::tensor(positions[s], at::kLong), rows);
  }
  return out;
}

// ---- building --------------------------------------------------------------------------------------------

EmbeddingCache EmbeddingCache::build(const fs::path& directory, Teacher& teacher, const std::vector<std::string>& captions,
                                     EmbeddingCacheOptions options) {
  const at::ScalarType dtype = cache_dtype(options.dtype());
  if (options.shard_size() < 1 || options.batch_size() < 1)
    fail_value("embedding cache: shard_size and batch_size must be positive");
  // Unique captions in first-appearance order: the order (and so every shard) depends on the input alone.
  std::vector<std::string> unique;
  std::unordered_map<uint64_t, std::size_t> seen;
  for (const auto& caption : captions) {
    const uint64_t h = caption_hash(caption);
    auto [it, inserted] = seen.emplace(h, unique.size());
    if (inserted) unique.push_back(caption);
    else if (unique[it->second] != caption)
      fail("embedding cache: captions \"{}\" and \"{}\" share a 64-bit hash", unique[it->second], caption);
  }
  const int64_t total = static_cast<int64_t>(unique.size()), shard_size = options.shard_size();
  const int64_t shard_count = (total + shard_size - 1) / shard_size;
  const std::string teacher_id = teacher.id();
  fs::create_directories(directory);
  const detail::DirectoryLock lock(directory, "another process is writing this embedding cache (wait for it or use another directory)");
  const fs::path index_path = directory / "index.json";

  // Resume: the shards an earlier run completed are kept if they were made the same way from the same captions.
  std::vector<std::string> done;
  if (fs::exists(index_path)) {
    EmbeddingCache existing(directory);
    const bool same_setup = existing.teacher_id_ == teacher_id && existing.dtype_ == options.dtype() &&
                            existing.shard_size_ == shard_size && existing.dim_ == teacher.dim();
    if (!same_setup && !options.force())
      fail("{}: cache was built by teacher '{}' ({} x {}, shard size {}); this build is '{}' ({}, shard size {}). "
           "Use another directory or force a rebuild", directory.string(), existing.teacher_id_, existing.dtype_,
           existing.dim_, existing.shard_size_, teacher_id, options.dtype(), shard_size);
    bool same_captions = same_setup;
    for (std::size_t s = 0; same_captions && s < existing.embeddings_.size(); ++s)
      for (int64_t r = 0; same_captions && r < existing.embeddings_[s].size(0); ++r) {
        const int64_t position = static_cast<int64_t>(s) * shard_size + r;
        auto it = existing.rows_.find(position < total ? caption_hash(unique[position]) : 0);
        same_captions = position < total && it != existing.rows_.end() &&
                        it->second == std::make_pair(static_cast<int64_t>(s), r);
      }
    if (!same_captions && same_setup && !options.force())
      fail("{}: cache was built from other captions; use another directory or force a rebuild", directory.string());
    if (same_captions)
      for (std::size_t s = 0; s < existing.embeddings_.size(); ++s) done.push_back(shard_name(static_cast<int64_t>(s)));
  }

  auto write_index = [&](bool complete) {
    json index = {{"format", "kclip-embedding-cache"}, {"teacher_id", teacher_id}, {"dim", teacher.dim()},
                  {"dtype", options.dtype()},          {"shard_size", shard_size},  {"count", 0},
                  {"shards", done},                    {"complete", complete}};
    index["count"] = std::min<int64_t>(total, static_cast<int64_t>(done.size()) * shard_size);
    detail::write_text_atomically(index_path, index.dump(2) + "\n");
  };

  const auto start = std::chrono::steady_clock::now();
  int64_t written = 0;
  const int64_t first = static_cast<int64_t>(done.size());
  for (int64_t s = first; s < shard_count; ++s) {
    if (options.max_new_shards() > 0 && written == options.max_new_shards()) break;
    const int64_t begin = s * shard_size, end = std::min(total, begin + shard_size);
    std::vector<at::Tensor> parts;
    for (int64_t b = begin; b < end; b += options.batch_size()) {
      std::vector<std::string> batch(unique.begin() + b, unique.begin() + std::min(end, b + options.batch_size()));
      at::Tensor e = teacher.embed(batch);
      if (!e.defined() || e.dim() != 2 || e.size(0) != static_cast<int64_t>(batch.size()) || e.size(1) != teacher.dim())
        fail("teacher '{}' returned {} for {} captions: expected [{}, {}]", teacher_id,
             e.defined() ? fmt::format("[{}]", fmt::join(e.sizes(), ", ")) : "nothing", batch.size(), batch.size(),
             teacher.dim());
      at::Tensor rows = e.detach().to(at::kCPU, at::kFloat);
      // A NaN or infinity would poison K-means and the distillation loss far from its cause: stop here, naming
      // the caption (the rows are also checked after the cast to the cache's dtype, where f16 can overflow).
      for (const at::Tensor& checked : {rows, rows.to(dtype)}) {
        const at::Tensor bad = (~at::isfinite(checked).all(1)).nonzero();
        if (bad.numel() > 0)
          fail("{}: teacher '{}' gave a non-finite embedding for caption \"{}\"{}; nothing of shard {} was written",
               directory.string(), teacher_id, batch[bad[0][0].item<int64_t>()],
               checked.scalar_type() == at::kFloat ? "" : " once cast to " + options.dtype() + " (use dtype f32)", s);
      }
      parts.push_back(rows);
    }
    std::vector<int64_t> hashes;
    for (int64_t i = begin; i < end; ++i) hashes.push_back(static_cast<int64_t>(caption_hash(unique[i])));
    TensorDict shard;
    shard.insert("embeddings", at::cat(parts, 0).to(dtype));
    shard.insert("hashes", at::tensor(hashes, at::kLong));
    save_safetensors(directory / shard_name(s), shard, {{"teacher_id", teacher_id}});
    done.push_back(shard_name(s));
    write_index(static_cast<int64_t>(done.size()) == shard_count);
    ++written;
    if (options.progress()) {
      const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      const double rate = static_cast<double>(end - first * shard_size) / std::max(seconds, 1e-9);
      std::fprintf(stderr, "embedded %lld/%lld captions, %.1f captions/s, ETA %.0f s\n", static_cast<long long>(end),
                   static_cast<long long>(total), rate, static_cast<double>(total - end) / std::max(rate, 1e-9));
    }
  }
  if (written == 0) write_index(static_cast<int64_t>(done.size()) == shard_count);  // nothing new: settle the index
  return EmbeddingCache(directory, teacher_id);
}

}  // namespace kclip
