// safetensors reader and writer. Read top to bottom: dtypes, the memory mapping, header validation,
// SafetensorsFile, sharded checkpoints, then the writer.
#include <kclip/error.h>
#include <kclip/runtime.h>
#include <kclip/safetensors.h>

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <fmt/ranges.h>  // fmt::join (in ranges.h since fmt 11)
#include <nlohmann/json.hpp>

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <random>
#include <set>
#include <sstream>

namespace kclip {
namespace fs = std::filesystem;
using json = nlohmann::ordered_json;

// The format stores little-endian data; kclip maps it as-is.
static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "kclip's safetensors I/O assumes a little-endian host");

// ---- dtypes ----------------------------------------------------------------------------------------------

namespace {

struct DtypeName {
  const char* name;
  at::ScalarType type;
};

constexpr DtypeName kDtypes[] = {
    {"F64", at::kDouble}, {"F32", at::kFloat}, {"F16", at::kHalf}, {"BF16", at::kBFloat16},
    {"I64", at::kLong},   {"I32", at::kInt},   {"I16", at::kShort}, {"I8", at::kChar},
    {"U8", at::kByte},    {"BOOL", at::kBool},
};

const char* kSupportedDtypes = "F64, F32, F16, BF16, I64, I32, I16, I8, U8, BOOL";

// The largest header the reference implementation accepts; guards against allocating for a garbage length.
constexpr uint64_t kMaxHeaderBytes = 100'000'000;

}  // namespace

std::string safetensors_dtype_name(at::ScalarType dtype) {
  for (const auto& d : kDtypes)
    if (d.type == dtype) return d.name;
  fail_value("safetensors cannot store dtype {}: expected one of {}", c10::toString(dtype), kSupportedDtypes);
}

at::ScalarType safetensors_dtype(const std::string& name) {
  for (const auto& d : kDtypes)
    if (name == d.name) return d.type;
  fail_value("unknown safetensors dtype '{}': expected one of {}", name, kSupportedDtypes);
}

// ---- the memory mapping ----------------------------------------------------------------------------------

// A private (copy-on-write) read mapping of a whole file. Tensors handed out hold a shared_ptr to it, so the
// mapping outlives the SafetensorsFile that made it as long as any tensor needs it.
struct SafetensorsFile::Mapping {
  std::byte* bytes = nullptr;
  std::size_t size = 0;

  explicit Mapping(const fs::path& path) {
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) fail("{}: cannot open: {}", path.string(), std::strerror(errno));
    struct stat st {};
    if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
      ::close(fd);
      fail("{}: not a regular file", path.string());
    }
    size = static_cast<std::size_t>(st.st_size);
    if (size < 8) {
      ::close(fd);
      fail("{}: file is {} bytes, shorter than the 8-byte header length of a safetensors file", path.string(), size);
    }
    void* p = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
    ::close(fd);  // the mapping keeps the file alive
    if (p == MAP_FAILED) fail("{}: cannot memory-map {} bytes: {}", path.string(), size, std::strerror(errno));
    bytes = static_cast<std::byte*>(p);
  }
  ~Mapping() {
    if (bytes != nullptr) ::munmap(bytes, size);
  }
  Mapping(const Mapping&) = delete;
  Mapping& operator=(const Mapping&) = delete;
};

// ---- header validation -----------------------------------------------------------------------------------

namespace {

uint64_t read_u64_le(const std::byte* p) {
  uint64_t v = 0;
  std::memcpy(&v, p, sizeof(v));
  return v;
}

// shape × element size, or nullopt-like false on overflow.
bool byte_length(const std::vector<int64_t>& shape, std::size_t element_size, uint64_t* out) {
  uint64_t n = element_size;
  for (int64_t d : shape)
    if (__builtin_mul_overflow(n, static_cast<uint64_t>(d), &n)) return false;
  *out = n;
  return true;
}

std::string shape_text(const std::vector<int64_t>& shape) { return fmt::format("[{}]", fmt::join(shape, ", ")); }

// Parses one tensor entry, checking every field a reader relies on.
TensorInfo parse_entry(const std::string& file, const std::string& name, const json& entry, uint64_t data_size) {
  auto where = [&] { return fmt::format("{}: tensor '{}'", file, name); };
  if (!entry.is_object()) fail("{}: expected an object with dtype, shape and data_offsets", where());

  TensorInfo info;
  info.name = name;
  auto dtype = entry.find("dtype");
  if (dtype == entry.end() || !dtype->is_string()) fail("{}: field 'dtype' missing or not a string", where());
  info.dtype = dtype->get<std::string>();
  at::ScalarType type;
  try {
    type = safetensors_dtype(info.dtype);
  } catch (const ValueError&) {
    fail("{}: unknown dtype '{}': expected one of {}", where(), info.dtype, kSupportedDtypes);
  }

  auto shape = entry.find("shape");
  if (shape == entry.end() || !shape->is_array()) fail("{}: field 'shape' missing or not a list", where());
  for (const auto& d : *shape) {
    if (!d.is_number_integer() || d.get<int64_t>() < 0)
      fail("{}: field 'shape' is {}: expected non-negative integers", where(), shape->dump());
    info.shape.push_back(d.get<int64_t>());
  }

  auto offsets = entry.find("data_offsets");
  if (offsets == entry.end() || !offsets->is_array() || offsets->size() != 2 || !(*offsets)[0].is_number_unsigned() ||
      !(*offsets)[1].is_number_unsigned())
    fail("{}: field 'data_offsets' must be [begin, end] with non-negative integers", where());
  info.begin = (*offsets)[0].get<uint64_t>();
  info.end = (*offsets)[1].get<uint64_t>();
  if (info.begin > info.end)
    fail("{}: data_offsets [{}, {}] end before they begin", where(), info.begin, info.end);
  if (info.end > data_size)
    fail("{}: data_offsets [{}, {}] lie outside the data area of {} bytes", where(), info.begin, info.end, data_size);

  uint64_t expected = 0;
  if (!byte_length(info.shape, at::elementSize(type), &expected))
    fail("{}: shape {} overflows a 64-bit byte count", where(), shape_text(info.shape));
  if (info.end - info.begin != expected)
    fail("{}: data_offsets [{}, {}] hold {} bytes, expected {} ({} x {})", where(), info.begin, info.end,
         info.end - info.begin, expected, info.dtype, shape_text(info.shape));
  return info;
}

// The tensors must tile the data area exactly: sorted by offset, each begins where the previous ended.
void check_tiling(const std::string& file, std::vector<TensorInfo>& entries, uint64_t data_size) {
  std::stable_sort(entries.begin(), entries.end(),
                   [](const TensorInfo& a, const TensorInfo& b) { return a.begin < b.begin; });
  uint64_t position = 0;
  const TensorInfo* previous = nullptr;
  for (const auto& e : entries) {
    if (e.begin < position)
      fail("{}: tensors '{}' and '{}' overlap: '{}' begins at byte {} but '{}' ends at byte {}", file, previous->name,
           e.name, e.name, e.begin, previous->name, position);
    if (e.begin > position)
      fail("{}: gap in the data area: bytes [{}, {}) belong to no tensor (before '{}')", file, position, e.begin,
           e.name);
    position = e.end;
    previous = &e;
  }
  if (position != data_size)
    fail("{}: gap in the data area: bytes [{}, {}) at its end belong to no tensor", file, position, data_size);
}

}  // namespace

// ---- SafetensorsFile -------------------------------------------------------------------------------------

SafetensorsFile::SafetensorsFile(const fs::path& path) : path_(path) {
  init();
  mapping_ = std::make_shared<Mapping>(path);
  const std::string file = path.string();
  const uint64_t header_size = read_u64_le(mapping_->bytes);
  if (header_size > kMaxHeaderBytes)
    fail("{}: header length {} exceeds the 100 MB limit (not a safetensors file?)", file, header_size);
  if (header_size > mapping_->size - 8)
    fail("{}: header length {} runs past the end of the {}-byte file", file, header_size, mapping_->size);
  data_offset_ = 8 + header_size;
  const uint64_t data_size = mapping_->size - data_offset_;

  json header;
  try {
    header = json::parse(reinterpret_cast<const char*>(mapping_->bytes) + 8,
                         reinterpret_cast<const char*>(mapping_->bytes) + data_offset_);
  } catch (const json::exception& e) {  // syntax, and numbers out of range (1e309)
    fail("{}: header is not valid JSON: {}", file, e.what());
  }
  if (!header.is_object()) fail("{}: header must be a JSON object, found {}", file, header.type_name());

  for (const auto& [name, entry] : header.items()) {
    if (name == "__metadata__") {
      if (!entry.is_object()) fail("{}: '__metadata__' must be an object of strings", file);
      for (const auto& [key, value] : entry.items()) {
        if (!value.is_string()) fail("{}: '__metadata__' field '{}' is {}: expected a string", file, key, value.dump());
        metadata_[key] = value.get<std::string>();
      }
      continue;
    }
    entries_.push_back(parse_entry(file, name, entry, data_size));
  }
  check_tiling(file, entries_, data_size);
  for (std::size_t i = 0; i < entries_.size(); ++i) index_[entries_[i].name] = i;
}

std::vector<std::string> SafetensorsFile::keys() const {
  std::vector<std::string> names;
  names.reserve(entries_.size());
  for (const auto& e : entries_) names.push_back(e.name);
  return names;
}

bool SafetensorsFile::contains(const std::string& name) const { return index_.count(name) != 0; }

const std::byte* SafetensorsFile::data() const { return mapping_->bytes + data_offset_; }
std::size_t SafetensorsFile::data_size() const { return mapping_->size - data_offset_; }

at::Tensor SafetensorsFile::get(const std::string& name) const {
  auto it = index_.find(name);
  if (it == index_.end()) fail("{}: no tensor named '{}'", path_.string(), name);
  const TensorInfo& info = entries_[it->second];
  const at::ScalarType type = safetensors_dtype(info.dtype);
  std::byte* start = mapping_->bytes + data_offset_ + info.begin;
  const auto options = at::TensorOptions().dtype(type).device(at::kCPU);

  if (type == at::kBool) {  // a bool byte other than 0/1 is undefined behaviour in LibTorch's kernels
    for (uint64_t i = info.begin; i < info.end; ++i)
      if (static_cast<uint8_t>(mapping_->bytes[data_offset_ + i]) > 1)
        fail("{}: tensor '{}' (BOOL) holds byte {} at offset {}: expected 0 or 1", path_.string(), name,
             static_cast<int>(mapping_->bytes[data_offset_ + i]), i);
  }
  const bool aligned = reinterpret_cast<std::uintptr_t>(start) % at::elementSize(type) == 0;
  if (!aligned) {
    // Unaligned data cannot be viewed safely: copy it into a fresh, aligned tensor.
    at::Tensor copy = at::empty(info.shape, options);
    std::memcpy(copy.data_ptr(), start, info.end - info.begin);
    return copy;
  }
  auto keep_alive = mapping_;
  return at::from_blob(
      start, info.shape, [keep_alive](void*) mutable { keep_alive.reset(); }, options);
}

TensorDict SafetensorsFile::load() const {
  TensorDict tensors;
  tensors.reserve(entries_.size());
  for (const auto& e : entries_) tensors.insert(e.name, get(e.name));
  return tensors;
}

// ---- sharded checkpoints ---------------------------------------------------------------------------------

namespace {

struct ShardedIndex {
  fs::path index_path;
  std::vector<fs::path> shards;                 // in first-mention order
  std::map<std::string, std::string> weight_map;  // tensor -> shard file name
  Metadata metadata;
};

bool is_index_file(const fs::path& p) {
  const std::string n = p.filename().string();
  const std::string suffix = ".safetensors.index.json";
  return n.size() >= suffix.size() && n.compare(n.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// A directory resolves to its single `*.safetensors.index.json`, else to `model.safetensors`.
fs::path resolve_checkpoint(const fs::path& path) {
  std::error_code ec;
  if (!fs::exists(path, ec)) fail("{}: no such file or directory", path.string());
  if (!fs::is_directory(path, ec)) return path;
  std::vector<fs::path> indexes;
  for (const auto& entry : fs::directory_iterator(path, ec))
    if (entry.is_regular_file() && is_index_file(entry.path())) indexes.push_back(entry.path());
  std::sort(indexes.begin(), indexes.end());
  if (indexes.size() > 1)
    fail("{}: several *.safetensors.index.json files ({}, {}, ...): name the one to load", path.string(),
         indexes[0].filename().string(), indexes[1].filename().string());
  if (indexes.size() == 1) return indexes[0];
  if (fs::is_regular_file(path / "model.safetensors", ec)) return path / "model.safetensors";
  fail("{}: directory holds neither a *.safetensors.index.json nor model.safetensors", path.string());
}

ShardedIndex read_index(const fs::path& index_path) {
  const std::string file = index_path.string();
  std::ifstream in(index_path);
  if (!in) fail("{}: cannot open: {}", file, std::strerror(errno));
  json index;
  try {
    index = json::parse(in);
  } catch (const json::exception& e) {  // syntax, and numbers out of range (1e309)
    fail("{}: not valid JSON: {}", file, e.what());
  }
  if (!index.is_object()) fail("{}: expected a JSON object with 'weight_map'", file);
  auto map = index.find("weight_map");
  if (map == index.end() || !map->is_object() || map->empty())
    fail("{}: field 'weight_map' missing or empty: expected {{tensor name: shard file}}", file);

  ShardedIndex result;
  result.index_path = index_path;
  std::set<std::string> seen;
  for (const auto& [name, shard] : map->items()) {
    if (!shard.is_string()) fail("{}: weight_map['{}'] is {}: expected a shard file name", file, name, shard.dump());
    std::string shard_name = shard.get<std::string>();
    fs::path shard_path(shard_name);
    // Shards live beside the index: a path that leaves the directory is refused rather than followed.
    if (shard_path.is_absolute() || shard_path.filename() != shard_path || shard_name == ".." || shard_name.empty())
      fail("{}: weight_map['{}'] = '{}': expected a file name in the index's directory", file, name, shard_name);
    result.weight_map[name] = shard_name;
    if (seen.insert(shard_name).second) result.shards.push_back(index_path.parent_path() / shard_name);
  }
  if (auto meta = index.find("metadata"); meta != index.end() && meta->is_object())
    for (const auto& [key, value] : meta->items())
      result.metadata[key] = value.is_string() ? value.get<std::string>() : value.dump();
  return result;
}

void check_shard_exists(const ShardedIndex& index, const fs::path& shard) {
  std::error_code ec;
  if (!fs::is_regular_file(shard, ec))
    fail("{}: shard '{}' named in the index is missing", index.index_path.string(), shard.filename().string());
}

TensorDict load_sharded(const ShardedIndex& index) {
  for (const auto& shard : index.shards) check_shard_exists(index, shard);  // fail before mapping any shard
  TensorDict tensors;
  std::map<std::string, std::string> origin;  // tensor -> shard it was found in
  for (const auto& shard_path : index.shards) {
    SafetensorsFile shard(shard_path);
    const std::string shard_name = shard_path.filename().string();
    for (const auto& entry : shard.entries()) {
      if (auto it = origin.find(entry.name); it != origin.end())
        fail("{}: tensor '{}' appears in two shards: '{}' and '{}'", index.index_path.string(), entry.name, it->second,
             shard_name);
      origin[entry.name] = shard_name;
      tensors.insert(entry.name, shard.get(entry.name));
    }
  }
  for (const auto& [name, shard] : index.weight_map)
    if (origin.count(name) == 0)
      fail("{}: tensor '{}' is mapped to shard '{}', which does not contain it", index.index_path.string(), name, shard);
  return tensors;
}

}  // namespace

TensorDict load_safetensors(const fs::path& path) {
  init();
  const fs::path resolved = resolve_checkpoint(path);
  if (is_index_file(resolved)) return load_sharded(read_index(resolved));
  return SafetensorsFile(resolved).load();
}

Metadata load_safetensors_metadata(const fs::path& path) {
  const fs::path resolved = resolve_checkpoint(path);
  if (!is_index_file(resolved)) return SafetensorsFile(resolved).metadata();
  ShardedIndex index = read_index(resolved);
  Metadata merged;
  for (const auto& shard : index.shards) {
    check_shard_exists(index, shard);
    SafetensorsFile file(shard);  // named: a range-for over a temporary's member would dangle
    for (const auto& [key, value] : file.metadata()) merged.emplace(key, value);
  }
  for (const auto& [key, value] : index.metadata) merged[key] = value;
  return merged;
}

// ---- the writer ------------------------------------------------------------------------------------------

namespace {

// Writes all of `size` bytes or throws; write(2) may write less than asked.
void write_all(int fd, const void* data, std::size_t size, const std::string& file) {
  const char* p = static_cast<const char*>(data);
  while (size > 0) {
    ssize_t n = ::write(fd, p, std::min<std::size_t>(size, std::size_t{1} << 30));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) fail("{}: write failed: {}", file, std::strerror(errno));
    p += n;
    size -= static_cast<std::size_t>(n);
  }
}

fs::path temporary_sibling(const fs::path& path) {
  std::random_device rd;
  return path.parent_path() /
         fmt::format(".{}.tmp-{}-{:08x}", path.filename().string(), static_cast<long>(::getpid()), rd());
}

}  // namespace

void save_safetensors(const fs::path& path, const TensorDict& tensors, const Metadata& metadata) {
  init();
  const std::string file = path.string();
  struct Item {
    std::string name;
    at::Tensor data;  // CPU, contiguous
    std::string dtype;
  };
  std::vector<Item> items;
  items.reserve(tensors.size());
  for (const auto& entry : tensors) {
    const at::Tensor& t = entry.value();
    if (entry.key() == "__metadata__") fail_value("{}: '__metadata__' is reserved and cannot name a tensor", file);
    if (!t.defined()) fail_value("{}: tensor '{}' is undefined", file, entry.key());
    if (t.layout() != at::kStrided) fail_value("{}: tensor '{}' is not dense (layout {})", file, entry.key(), c10::str(t.layout()));
    std::string dtype;
    try {
      dtype = safetensors_dtype_name(t.scalar_type());
    } catch (const ValueError& e) {
      fail_value("{}: tensor '{}': {}", file, entry.key(), e.what());
    }
    items.push_back({entry.key(), t.detach().to(at::kCPU).contiguous(), dtype});
  }
  // Widest elements first keeps every tensor's offset a multiple of its element size (the data area starts at a
  // multiple of 8), so a reader can view it in place.
  std::stable_sort(items.begin(), items.end(),
                   [](const Item& a, const Item& b) { return a.data.element_size() > b.data.element_size(); });

  json header = json::object();
  uint64_t offset = 0;
  for (const auto& item : items) {
    const uint64_t bytes = item.data.numel() * item.data.element_size();
    header[item.name] = {{"dtype", item.dtype}, {"shape", item.data.sizes().vec()}, {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
  }
  if (!metadata.empty()) header["__metadata__"] = metadata;
  std::string header_text = header.dump();
  header_text.append((8 - header_text.size() % 8) % 8, ' ');  // pad so the data area is 8-byte aligned

  std::error_code ec;
  if (!path.parent_path().empty() && !fs::is_directory(path.parent_path(), ec))
    fail("{}: directory '{}' does not exist", file, path.parent_path().string());
  const fs::path temp = temporary_sibling(path);
  int fd = ::open(temp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd < 0) fail("{}: cannot create temporary file '{}': {}", file, temp.string(), std::strerror(errno));
  try {
    uint64_t length = header_text.size();
    write_all(fd, &length, sizeof(length), file);
    write_all(fd, header_text.data(), header_text.size(), file);
    for (const auto& item : items) write_all(fd, item.data.data_ptr(), item.data.numel() * item.data.element_size(), file);
    if (::fsync(fd) != 0) fail("{}: fsync failed: {}", file, std::strerror(errno));
    if (::close(fd) != 0) {
      fd = -1;
      fail("{}: close failed: {}", file, std::strerror(errno));
    }
    fd = -1;
    if (::rename(temp.c_str(), path.c_str()) != 0) fail("{}: cannot rename temporary file: {}", file, std::strerror(errno));
  } catch (...) {
    if (fd >= 0) ::close(fd);
    ::unlink(temp.c_str());
    throw;
  }
}

}  // namespace kclip
