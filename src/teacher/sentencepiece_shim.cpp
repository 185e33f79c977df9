// libkclip_sentencepiece: a C interface over SentencePiece, loaded by kclip with dlopen(RTLD_LOCAL | RTLD_DEEPBIND).
//
// Why: Debian's libsentencepiece.so.0 embeds and exports its own protobuf-lite. Linked into a process that also
// loads LibTorch's libprotobuf.so.32, the two bind to each other's symbols and the process crashes at start-up.
// Kept in its own local symbol scope, each uses its own. Never link this library directly.
#include <sentencepiece_processor.h>

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

namespace {

// Copies `text` into a malloc'ed C string the caller frees with kclip_spm_free.
char* duplicate(const std::string& text) {
  char* out = static_cast<char*>(std::malloc(text.size() + 1));
  std::memcpy(out, text.c_str(), text.size() + 1);
  return out;
}

}  // namespace

extern "C" {

// Returns a processor, or nullptr with *error set (free it with kclip_spm_free).
void* kclip_spm_load(const char* path, char** error) {
  auto* processor = new sentencepiece::SentencePieceProcessor();
  const auto status = processor->Load(path);
  if (!status.ok()) {
    *error = duplicate(status.ToString());
    delete processor;
    return nullptr;
  }
  return processor;
}

void kclip_spm_destroy(void* processor) { delete static_cast<sentencepiece::SentencePieceProcessor*>(processor); }

void kclip_spm_free(void* p) { std::free(p); }

// Encodes into malloc'ed ids (*ids, *count); returns an error string or nullptr.
char* kclip_spm_encode(void* processor, const char* text, std::size_t length, int32_t** ids, std::size_t* count) {
  std::vector<int> out;
  const auto status = static_cast<sentencepiece::SentencePieceProcessor*>(processor)->Encode(std::string(text, length), &out);
  if (!status.ok()) return duplicate(status.ToString());
  *count = out.size();
  *ids = static_cast<int32_t*>(std::malloc(sizeof(int32_t) * (out.size() + 1)));
  for (std::size_t i = 0; i < out.size(); ++i) (*ids)[i] = out[i];
  return nullptr;
}

// The piece of `id` (malloc'ed).
char* kclip_spm_id_to_piece(void* processor, int32_t id) {
  return duplicate(static_cast<sentencepiece::SentencePieceProcessor*>(processor)->IdToPiece(id));
}

// Decodes ids into malloc'ed text (*text); returns an error string or nullptr.
char* kclip_spm_decode(void* processor, const int32_t* ids, std::size_t count, char** text) {
  std::vector<int> in(ids, ids + count);
  std::string out;
  const auto status = static_cast<sentencepiece::SentencePieceProcessor*>(processor)->Decode(in, &out);
  if (!status.ok()) return duplicate(status.ToString());
  *text = duplicate(out);
  return nullptr;
}

int32_t kclip_spm_bos_id(void* processor) { return static_cast<sentencepiece::SentencePieceProcessor*>(processor)->bos_id(); }
int32_t kclip_spm_eos_id(void* processor) { return static_cast<sentencepiece::SentencePieceProcessor*>(processor)->eos_id(); }
int32_t kclip_spm_size(void* processor) {
  return static_cast<sentencepiece::SentencePieceProcessor*>(processor)->GetPieceSize();
}

}  // extern "C"
