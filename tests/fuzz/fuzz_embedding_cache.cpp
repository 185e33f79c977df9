// An embedding cache's index.json (format, teacher, dtype, sizes, the list of shards) beside one real shard:
// the cache is opened and every caption looked up.
#include "fuzz.h"

#include <kclip/embedding_cache.h>
#include <kclip/safetensors.h>

#include <ATen/ATen.h>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const bool shard_written = [] {
    std::filesystem::create_directories(kclip_fuzz::scratch() / "cache");
    kclip::TensorDict shard;
    shard.insert("embeddings", at::ones({2, 4}, at::kHalf));
    shard.insert("hashes", at::tensor({int64_t{11}, int64_t{22}}));
    kclip::save_safetensors(kclip_fuzz::scratch() / "cache" / "shard-00000.safetensors", shard, {{"teacher_id", "t"}});
    return true;
  }();
  (void)shard_written;
  kclip_fuzz::write("cache/index.json", data, size);
  KCLIP_FUZZ_EXPECT_CLEAR_ERRORS({
    kclip::EmbeddingCache cache(kclip_fuzz::scratch() / "cache");
    (void)cache.contains("a dog");
    (void)cache.get({});
  });
  return 0;
}
