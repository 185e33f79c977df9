// LlamaTokenizer: SentencePiece through libkclip_sentencepiece, a shim loaded in its own symbol scope
// (see sentencepiece_shim.cpp for why).
#include <kclip/error.h>
#include <kclip/llama_tokenizer.h>

#include "teacher/llama2c_vocab.h"

#include <dlfcn.h>

#include <cstdlib>
#include <mutex>

#ifndef KCLIP_SPM_SHIM_BUILD_PATH
#define KCLIP_SPM_SHIM_BUILD_PATH ""
#endif
#ifndef KCLIP_SPM_SHIM_INSTALL_PATH
#define KCLIP_SPM_SHIM_INSTALL_PATH ""
#endif

namespace sentencepiece {
class SentencePieceProcessor {};  // opaque here: only the shim sees the real class
}  // namespace sentencepiece

namespace kclip {
namespace {

constexpr const char* kShimName = "libkclip_sentencepiece.so";

struct Shim {
  void* (*load)(const char*, char**);
  void (*destroy)(void*);
  void (*free)(void*);
  char* (*encode)(void*, const char*, std::size_t, int32_t**, std::size_t*);
  char* (*id_to_piece)(void*, int32_t);
  char* (*decode)(void*, const int32_t*, std::size_t, char**);
  int32_t (*bos_id)(void*);
  int32_t (*eos_id)(void*);
  int32_t (*size)(void*);
};

// Where the shim may be: $KCLIP_SENTENCEPIECE_SHIM, beside the binary that holds this code (the CLI, a test, the
// Python extension), its ../lib, then the build and install locations compiled in.
std::vector<std::string> shim_candidates() {
  std::vector<std::string> paths;
  if (const char* env = std::getenv("KCLIP_SENTENCEPIECE_SHIM"); env && *env) paths.push_back(env);
  Dl_info info{};
  if (dladdr(reinterpret_cast<void*>(&shim_candidates), &info) != 0 && info.dli_fname) {
    const auto dir = std::filesystem::path(info.dli_fname).parent_path();
    paths.push_back((dir / kShimName).string());
    paths.push_back((dir.parent_path() / "lib" / kShimName).string());
  }
  for (const char* p : {KCLIP_SPM_SHIM_BUILD_PATH, KCLIP_SPM_SHIM_INSTALL_PATH})
    if (*p) paths.push_back(p);
  return paths;
}

const Shim& shim() {
  static Shim loaded{};
  static std::once_flag once;
  static std::string error;
  std::call_once(once, [] {
    void* handle = nullptr;
    std::string tried;
    for (const auto& path : shim_candidates()) {
      if (!std::filesystem::exists(path)) {
        tried += " " + path;
        continue;
      }
      handle = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL | RTLD_DEEPBIND);
      if (handle) break;
      tried += " " + path + " (" + dlerror() + ")";
    }
    if (!handle) {
      error = "cannot load " + std::string(kShimName) + " (SentencePiece for LlamaTokenizer); tried:" + tried +
              ". Set KCLIP_SENTENCEPIECE_SHIM to its path.";
      return;
    }
    auto sym = [&](const char* name) {
      void* p = dlsym(handle, name);
      if (!p) error = std::string(kShimName) + " lacks " + name;
      return p;
    };
    loaded.load = reinterpret_cast<decltype(loaded.load)>(sym("kclip_spm_load"));
    loaded.destroy = reinterpret_cast<decltype(loaded.destroy)>(sym("kclip_spm_destroy"));
    loaded.free = reinterpret_cast<decltype(loaded.free)>(sym("kclip_spm_free"));
    loaded.encode = reinterpret_cast<decltype(loaded.encode)>(sym("kclip_spm_encode"));
    loaded.id_to_piece = reinterpret_cast<decltype(loaded.id_to_piece)>(sym("kclip_spm_id_to_piece"));
    loaded.decode = reinterpret_cast<decltype(loaded.decode)>(sym("kclip_spm_decode"));
    loaded.bos_id = reinterpret_cast<decltype(loaded.bos_id)>(sym("kclip_spm_bos_id"));
    loaded.eos_id = reinterpret_cast<decltype(loaded.eos_id)>(sym("kclip_spm_eos_id"));
    loaded.size = reinterpret_cast<decltype(loaded.size)>(sym("kclip_spm_size"));
  });
  if (!error.empty()) fail("{}", error);
  return loaded;
}

// Takes ownership of a malloc'ed C string from the shim.
std::string take(char* text) {
  std::string out = text ? text : "";
  shim().free(text);
  return out;
}

}  // namespace

LlamaTokenizer::LlamaTokenizer(const std::filesystem::path& path) : path_(path) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec))
    path_ = !std::filesystem::exists(path / "tokenizer.model", ec) && std::filesystem::exists(path / "tokenizer.bin", ec)
                ? path / "tokenizer.bin"
                : path / "tokenizer.model";
  if (!std::filesystem::is_regular_file(path_, ec))
    fail("{}: no tokenizer there (a SentencePiece tokenizer.model or llama2.c's tokenizer.bin)", path_.string());
  if (path_.extension() == ".bin") {
    llama2c_ = std::make_shared<const detail::Llama2cVocab>(path_);
    return;
  }
  const Shim& s = shim();
  char* error = nullptr;
  void* handle = s.load(path_.c_str(), &error);
  if (!handle) fail("{}: not a SentencePiece model: {}", path_.string(), take(error));
  processor_ = std::shared_ptr<sentencepiece::SentencePieceProcessor>(
      static_cast<sentencepiece::SentencePieceProcessor*>(handle), [](auto* p) { shim().destroy(p); });
}

std::vector<int64_t> LlamaTokenizer::encode(const std::string& text, bool bos, bool eos) const {
  if (llama2c_) {
    std::vector<int64_t> ids;
    if (bos) ids.push_back(bos_id());
    for (int64_t id : llama2c_->encode(text)) ids.push_back(id);
    if (eos) ids.push_back(eos_id());
    return ids;
  }
  int32_t* raw = nullptr;
  std::size_t count = 0;
  if (char* error = shim().encode(processor_.get(), text.data(), text.size(), &raw, &count))
    fail("{}: cannot encode text: {}", path_.string(), take(error));
  std::vector<int64_t> ids;
  ids.reserve(count + 2);
  if (bos) ids.push_back(bos_id());
  ids.insert(ids.end(), raw, raw + count);
  shim().free(raw);
  if (eos) ids.push_back(eos_id());
  return ids;
}

std::vector<std::string> LlamaTokenizer::encode_as_pieces(const std::string& text) const {
  std::vector<std::string> pieces;
  if (llama2c_) {
    for (int64_t id : encode(text)) pieces.push_back(llama2c_->piece(id));
    return pieces;
  }
  for (int64_t id : encode(text)) pieces.push_back(take(shim().id_to_piece(processor_.get(), static_cast<int32_t>(id))));
  return pieces;
}

std::string LlamaTokenizer::decode(const std::vector<int64_t>& ids) const {
  if (llama2c_) return llama2c_->decode(ids);
  std::vector<int32_t> narrow;
  for (int64_t id : ids) {
    if (id < 0 || id >= vocab_size()) fail_value("LlamaTokenizer.decode: id {} not in [0, {})", id, vocab_size());
    narrow.push_back(static_cast<int32_t>(id));
  }
  char* text = nullptr;
  if (char* error = shim().decode(processor_.get(), narrow.data(), narrow.size(), &text))
    fail("{}: cannot decode: {}", path_.string(), take(error));
  return take(text);
}

// llama2.c's vocabulary is Llama 2's: <s> = 1, </s> = 2.
int64_t LlamaTokenizer::bos_id() const { return llama2c_ ? 1 : shim().bos_id(processor_.get()); }
int64_t LlamaTokenizer::eos_id() const { return llama2c_ ? 2 : shim().eos_id(processor_.get()); }
int64_t LlamaTokenizer::vocab_size() const { return llama2c_ ? llama2c_->size() : shim().size(processor_.get()); }

}  // namespace kclip
