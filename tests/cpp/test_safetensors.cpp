// safetensors: round trips of every dtype, zero-copy views, sharded checkpoints, and every malformed-file error.
#include "testing.h"

#include <kclip/error.h>
#include <kclip/safetensors.h>

#include <torch/torch.h>

#include <cstring>
#include <fstream>
#include <string>
#include <vector>

using kclip::testing::dtype_of;
using kclip::testing::TempDir;
namespace fs = std::filesystem;

namespace {

// Writes a safetensors file by hand: header length, header text, data. `declared` overrides the length field.
void write_raw(const fs::path& path, const std::string& header, const std::string& data = "", int64_t declared = -1) {
  std::ofstream out(path, std::ios::binary);
  uint64_t n = declared >= 0 ? static_cast<uint64_t>(declared) : header.size();
  out.write(reinterpret_cast<const char*>(&n), 8);
  out << header << data;
}

std::string read_bytes(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// The message of the kclip::Error that loading `path` raises ("" if none).
std::string load_error(const fs::path& path) {
  try {
    kclip::load_safetensors(path);
  } catch (const kclip::Error& e) {
    return e.what();
  }
  return "";
}

torch::Tensor sample(torch::ScalarType dtype, std::vector<int64_t> shape) {
  if (dtype == torch::kBool) return torch::rand(shape) > 0.5;
  if (torch::isFloatingType(dtype)) return torch::randn(shape, torch::kDouble).mul(100).to(dtype);
  return torch::randint(-100, 100, shape, torch::kLong).to(dtype);
}

}  // namespace

TEST_CASE("safetensors: every dtype round-trips bit-exactly, with metadata") {
  TempDir dir;
  const std::vector<torch::ScalarType> dtypes = {torch::kFloat, torch::kDouble, torch::kHalf,  torch::kBFloat16,
                                                 torch::kLong,  torch::kInt,    torch::kShort, torch::kChar,
                                                 torch::kByte,  torch::kBool};
  kclip::TensorDict saved;
  for (auto dtype : dtypes) saved.insert(std::string("t_") + c10::toString(dtype), sample(dtype, {3, 5}));
  saved.insert("scalar", torch::tensor(3.5));
  saved.insert("empty", torch::zeros({0, 4}));
  saved.insert("non_contiguous", torch::arange(12, torch::kFloat).reshape({3, 4}).t());
  kclip::Metadata metadata{{"format", "pt"}, {"note", "unicode ✓ and \"quotes\""}};
  kclip::save_safetensors(dir / "all.safetensors", saved, metadata);

  kclip::TensorDict loaded = kclip::load_safetensors(dir / "all.safetensors");
  REQUIRE(loaded.size() == saved.size());
  for (const auto& item : saved) {
    INFO("tensor " << item.key());
    REQUIRE(loaded.contains(item.key()));
    const torch::Tensor& got = loaded[item.key()];
    CHECK(dtype_of(got) == dtype_of(item.value()));
    CHECK(got.sizes() == item.value().sizes());
    CHECK(torch::equal(got, item.value()));
  }
  CHECK((kclip::load_safetensors_metadata(dir / "all.safetensors") == metadata));
  kclip::SafetensorsFile file(dir / "all.safetensors");
  CHECK((file.metadata() == metadata));
}

TEST_CASE("safetensors: tensors view the mapping without a copy and outlive the file object") {
  TempDir dir;
  kclip::TensorDict saved;
  saved.insert("a", torch::arange(10, torch::kFloat));
  saved.insert("b", torch::arange(6, torch::kShort));
  saved.insert("c", torch::arange(4, torch::kDouble));
  kclip::save_safetensors(dir / "v.safetensors", saved);

  torch::Tensor kept;
  {
    kclip::SafetensorsFile file(dir / "v.safetensors");
    for (const auto& name : file.keys()) {
      torch::Tensor t = file.get(name);
      auto* p = static_cast<const std::byte*>(t.data_ptr());
      INFO("tensor " << name);
      CHECK(p >= file.data());
      CHECK(p + t.nbytes() <= file.data() + file.data_size());
    }
    kept = file.get("a");
  }
  CHECK(torch::equal(kept, torch::arange(10, torch::kFloat)));  // the mapping is still alive
  kept.add_(1);  // copy-on-write: writable, and the file is unchanged
  CHECK(torch::equal(kclip::load_safetensors(dir / "v.safetensors")["a"], torch::arange(10, torch::kFloat)));
}

TEST_CASE("safetensors: the writer keeps every tensor aligned and the given order within one element size") {
  TempDir dir;
  kclip::TensorDict saved;
  saved.insert("z_byte", torch::ones({3}, torch::kByte));
  saved.insert("y_float", torch::ones({3}));
  saved.insert("x_half", torch::ones({1}, torch::kHalf));
  saved.insert("w_double", torch::ones({1}, torch::kDouble));
  saved.insert("v_float", torch::ones({2}));
  kclip::save_safetensors(dir / "o.safetensors", saved);
  kclip::SafetensorsFile file(dir / "o.safetensors");
  CHECK(file.keys() == std::vector<std::string>{"w_double", "y_float", "v_float", "x_half", "z_byte"});
  for (const auto& e : file.entries()) CHECK(e.begin % torch::elementSize(kclip::safetensors_dtype(e.dtype)) == 0);
}

TEST_CASE("safetensors: unaligned data is copied, with the right values") {
  TempDir dir;
  // A 1-byte U8 tensor first puts the F32 tensor at data offset 1 (valid, but not viewable in place).
  std::string header =
      R"({"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},"b":{"dtype":"F32","shape":[2],"data_offsets":[1,9]}})";
  float values[2] = {1.5f, -2.25f};
  std::string data(1, '\x07');
  data.append(reinterpret_cast<const char*>(values), 8);
  write_raw(dir / "u.safetensors", header, data);
  auto t = kclip::load_safetensors(dir / "u.safetensors");
  CHECK(t["a"].item<uint8_t>() == 7);
  CHECK(torch::equal(t["b"], torch::tensor({1.5f, -2.25f})));
  CHECK(reinterpret_cast<std::uintptr_t>(t["b"].data_ptr()) % 4 == 0);
}

TEST_CASE("safetensors: malformed files raise one clear error naming the file and the field") {
  TempDir dir;
  const std::string ok_entry = R"("t":{"dtype":"F32","shape":[2],"data_offsets":[0,8]})";
  const std::string eight(8, '\0');
  struct Case {
    const char* what;
    std::string header;
    std::string data;
    int64_t declared;
    const char* expected;
  };
  const std::vector<Case> cases = {
      {"header length beyond the file", "{}", "", 4096, "runs past the end"},
      {"header length over 100 MB", "{}", "", int64_t(200'000'000), "exceeds the 100 MB limit"},
      {"invalid JSON", "{\"t\": [", "", -1, "not valid JSON"},
      {"header not an object", "[1, 2]", "", -1, "must be a JSON object"},
      {"unknown dtype", R"({"t":{"dtype":"F8_E4M3","shape":[2],"data_offsets":[0,2]}})", "xx", -1,
       "tensor 't': unknown dtype 'F8_E4M3'"},
      {"missing shape", R"({"t":{"dtype":"F32","data_offsets":[0,8]}})", eight, -1, "field 'shape'"},
      {"negative dim", R"({"t":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", eight, -1, "non-negative"},
      {"bad offsets", R"({"t":{"dtype":"F32","shape":[2],"data_offsets":[0]}})", eight, -1, "'data_offsets' must be"},
      {"offsets outside the data area", R"({"t":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})", eight, -1,
       "outside the data area of 8 bytes"},
      {"end before begin", R"({"t":{"dtype":"F32","shape":[2],"data_offsets":[8,0]}})", eight, -1, "end before"},
      {"byte length != dtype x shape", R"({"t":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", eight, -1,
       "hold 8 bytes, expected 12 (F32 x [3])"},
      {"overlapping offsets",
       R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
       eight, -1, "overlap"},
      {"gap between tensors",
       R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}})",
       eight + "abcd", -1, "gap in the data area: bytes [4, 8)"},
      {"trailing bytes", "{" + ok_entry + "}", eight + "xy", -1, "bytes [8, 10) at its end"},
      {"metadata not strings", "{" + ok_entry + R"(,"__metadata__":{"k":1}})", eight, -1, "expected a string"},
      {"bool not 0/1", R"({"t":{"dtype":"BOOL","shape":[2],"data_offsets":[0,2]}})", std::string("\x01\x05", 2), -1,
       "expected 0 or 1"},
  };
  for (const auto& c : cases) {
    INFO(c.what);
    const fs::path path = dir / "bad.safetensors";
    write_raw(path, c.header, c.data, c.declared);
    const std::string message = load_error(path);
    CHECK_MESSAGE(message.find(c.expected) != std::string::npos, "message was: " << message);
    CHECK_MESSAGE(message.find(path.string()) != std::string::npos, "message was: " << message);
  }

  SUBCASE("file shorter than 8 bytes") {
    std::ofstream(dir / "short.safetensors") << "abc";
    CHECK(load_error(dir / "short.safetensors").find("shorter than the 8-byte header") != std::string::npos);
  }
  SUBCASE("missing file") { CHECK(load_error(dir / "nope.safetensors").find("no such file") != std::string::npos); }
  SUBCASE("unknown tensor name") {
    kclip::TensorDict t;
    t.insert("a", torch::ones({1}));
    kclip::save_safetensors(dir / "one.safetensors", t);
    CHECK_THROWS_AS(kclip::SafetensorsFile(dir / "one.safetensors").get("b"), kclip::Error);
  }
}

TEST_CASE("safetensors: sharded checkpoints load every shard, and index problems are errors") {
  TempDir dir;
  kclip::TensorDict first, second;
  first.insert("a", torch::arange(4, torch::kFloat));
  first.insert("b", torch::ones({2, 2}, torch::kHalf));
  second.insert("c", torch::arange(3, torch::kLong));
  kclip::save_safetensors(dir / "s-1.safetensors", first, {{"format", "pt"}});
  kclip::save_safetensors(dir / "s-2.safetensors", second, {{"format", "pt"}});
  auto write_index = [&](const std::string& weight_map) {
    std::ofstream(dir / "model.safetensors.index.json")
        << R"({"metadata": {"total_size": 36}, "weight_map": )" << weight_map << "}";
  };
  write_index(R"({"a": "s-1.safetensors", "b": "s-1.safetensors", "c": "s-2.safetensors"})");

  for (const fs::path& path : {dir.path(), dir / "model.safetensors.index.json"}) {
    auto all = kclip::load_safetensors(path);
    CHECK(all.keys() == std::vector<std::string>{"a", "b", "c"});
    CHECK(torch::equal(all["c"], torch::arange(3, torch::kLong)));
    auto meta = kclip::load_safetensors_metadata(path);
    CHECK(meta.at("total_size") == "36");
    CHECK(meta.at("format") == "pt");
  }

  SUBCASE("a shard named in the index is missing") {
    write_index(R"({"a": "s-1.safetensors", "c": "s-9.safetensors"})");
    CHECK(load_error(dir.path()).find("shard 's-9.safetensors' named in the index is missing") != std::string::npos);
  }
  SUBCASE("the same tensor in two shards") {
    kclip::save_safetensors(dir / "s-2.safetensors", first);
    write_index(R"({"a": "s-1.safetensors", "c": "s-2.safetensors"})");
    CHECK(load_error(dir.path()).find("appears in two shards") != std::string::npos);
  }
  SUBCASE("a mapped tensor its shard lacks") {
    write_index(R"({"a": "s-1.safetensors", "zz": "s-2.safetensors"})");
    CHECK(load_error(dir.path()).find("'zz' is mapped to shard 's-2.safetensors'") != std::string::npos);
  }
  SUBCASE("a shard path leaving the directory") {
    write_index(R"({"a": "../s-1.safetensors"})");
    CHECK(load_error(dir.path()).find("expected a file name in the index's directory") != std::string::npos);
  }
  SUBCASE("invalid index JSON") {
    std::ofstream(dir / "model.safetensors.index.json") << "{not json";
    CHECK(load_error(dir.path()).find("not valid JSON") != std::string::npos);
  }
  SUBCASE("a directory with no checkpoint") {
    TempDir empty;
    CHECK(load_error(empty.path()).find("neither a *.safetensors.index.json nor model.safetensors") !=
          std::string::npos);
  }
}

TEST_CASE("safetensors: saving is atomic and rejects what the format cannot hold") {
  TempDir dir;
  const fs::path path = dir / "keep.safetensors";
  kclip::TensorDict good;
  good.insert("w", torch::arange(5, torch::kFloat));
  kclip::save_safetensors(path, good);
  const std::string before = read_bytes(path);

  kclip::TensorDict bad;
  bad.insert("ok", torch::ones({2}));
  bad.insert("complex", torch::ones({2}, torch::kComplexFloat));
  CHECK_THROWS_WITH_AS(kclip::save_safetensors(path, bad), doctest::Contains("tensor 'complex'"), kclip::ValueError);
  kclip::TensorDict reserved;
  reserved.insert("__metadata__", torch::ones({1}));
  CHECK_THROWS_AS(kclip::save_safetensors(path, reserved), kclip::ValueError);
  CHECK_THROWS_WITH_AS(kclip::save_safetensors(dir / "no/such/dir/x.safetensors", good),
                       doctest::Contains("does not exist"), kclip::Error);

  CHECK(read_bytes(path) == before);  // the failed saves left the old file whole
  int files = 0;
  for (const auto& entry : fs::directory_iterator(dir.path())) files += entry.is_regular_file();
  CHECK(files == 1);  // and no temporary file behind

  kclip::TensorDict replaced;
  replaced.insert("w", torch::zeros({2}, torch::kDouble));
  kclip::save_safetensors(path, replaced);  // overwrite in place
  CHECK(torch::equal(kclip::load_safetensors(path)["w"], torch::zeros({2}, torch::kDouble)));
}

TEST_CASE("safetensors: dtype names map both ways and unknown ones are ValueErrors") {
  for (const char* name : {"F64", "F32", "F16", "BF16", "I64", "I32", "I16", "I8", "U8", "BOOL"})
    CHECK(kclip::safetensors_dtype_name(kclip::safetensors_dtype(name)) == name);
  CHECK_THROWS_AS(kclip::safetensors_dtype("F8_E5M2"), kclip::ValueError);
  CHECK_THROWS_AS(kclip::safetensors_dtype_name(torch::kComplexDouble), kclip::ValueError);
}
