#pragma once
// safetensors I/O: the checkpoint format of everything in kclip (models, centroids, embedding caches).
//
// Format (https://huggingface.co/docs/safetensors): an 8-byte little-endian header length N, N bytes of JSON
// {"name": {"dtype": "F32", "shape": [2, 3], "data_offsets": [begin, end]}, ..., "__metadata__": {"k": "v"}},
// then the data area; offsets are relative to the data area and must tile it exactly (no gap, no overlap).
//
// Loading memory-maps the file (copy-on-write, so tensors are writable and never write back) and returns
// tensors that view the mapping without a copy when their offset is aligned to the element size; the mapping
// lives as long as any tensor from it. Every malformed file raises kclip::Error naming the file and the field.
#include <ATen/core/Tensor.h>
#include <torch/ordered_dict.h>

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace kclip {

// Name -> tensor in a stable order; the same type as torch::nn::Module::named_parameters().
using TensorDict = torch::OrderedDict<std::string, at::Tensor>;
// A file's "__metadata__": string -> string, as the format requires.
using Metadata = std::map<std::string, std::string>;

// "F32" <-> at::kFloat, and so on for F64, F16, BF16, I64, I32, I16, I8, U8, BOOL.
std::string safetensors_dtype_name(at::ScalarType dtype);   // ValueError if unsupported
at::ScalarType safetensors_dtype(const std::string& name);  // ValueError if unknown

// One entry of a header, in file (data offset) order.
struct TensorInfo {
  std::string name;
  std::string dtype;
  std::vector<int64_t> shape;
  uint64_t begin = 0;  // data_offsets, relative to the data area
  uint64_t end = 0;
};

// One validated, memory-mapped safetensors file; like safetensors' `safe_open`.
class SafetensorsFile {
 public:
  explicit SafetensorsFile(const std::filesystem::path& path);

  const std::filesystem::path& path() const { return path_; }
  const std::vector<TensorInfo>& entries() const { return entries_; }
  const Metadata& metadata() const { return metadata_; }
  std::vector<std::string> keys() const;
  bool contains(const std::string& name) const;

  // The tensor `name` (kclip::Error if absent): a zero-copy view of the mapping when aligned, else a copy.
  at::Tensor get(const std::string& name) const;
  TensorDict load() const;  // every tensor, in file order

  // The mapped data area; lets callers (and tests) check that a tensor is a view of it.
  const std::byte* data() const;
  std::size_t data_size() const;

 private:
  struct Mapping;
  std::filesystem::path path_;
  std::shared_ptr<Mapping> mapping_;
  std::size_t data_offset_ = 0;
  std::vector<TensorInfo> entries_;
  std::map<std::string, std::size_t> index_;  // name -> position in entries_
  Metadata metadata_;
};

// Loads a checkpoint: a .safetensors file, a `*.safetensors.index.json` (every shard it names), or a directory
// holding either one index or `model.safetensors`. Shards load in index order, tensors in file order.
TensorDict load_safetensors(const std::filesystem::path& path);

// The metadata without loading tensors. For a sharded checkpoint: the shards' "__metadata__" with the index's
// "metadata" on top (non-string values as their JSON text, e.g. total_size).
Metadata load_safetensors_metadata(const std::filesystem::path& path);

// Writes `tensors` (moved to CPU, made contiguous) and `metadata` to `path` through a temporary file in the same
// directory and a rename, so `path` is either the old file or the complete new one. Tensors are laid out by
// descending element size (stable), which keeps every tensor aligned for zero-copy loading; within one element
// size the given order is kept.
void save_safetensors(const std::filesystem::path& path, const TensorDict& tensors, const Metadata& metadata = {});

}  // namespace kclip
