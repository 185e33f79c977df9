// Embedding cache: dedup, resume after a simulated crash (byte-identical result), teacher-id mismatch, corrupt
// shards, caption files. The teacher is a real LlamaTeacher: Meta's vocabulary on a small random-weight Llama,
// read from llama2.c's tokenizer.bin by kclip's own code, so these cases also run under the sanitizers (which
// cannot load sentencepiece, see docs/reliability.md).
#include "small_llama.h"
#include "testing.h"

#include <kclip/embedding_cache.h>
#include <kclip/error.h>

#include <torch/torch.h>

#include <fstream>

using kclip::testing::have_shared;
using kclip::testing::shared_dir;
using kclip::testing::TempDir;
namespace fs = std::filesystem;

namespace {

const char* const kTokenizer = "models/stories15M/tokenizer.bin";

std::shared_ptr<kclip::LlamaTeacher> small_teacher(const std::string& pooling = "mean") {
  auto tok = std::make_shared<kclip::LlamaTokenizer>(shared_dir() / kTokenizer);
  return std::make_shared<kclip::LlamaTeacher>(kclip::testing::small_random_llama(), tok,
                                               kclip::LlamaTeacherOptions().pooling(pooling).max_length(64), "small");
}

std::vector<std::string> captions() {
  return {"A dog runs .", "A cat sleeps .", "A dog runs .", "Two men play chess .", "A child climbs stairs .",
          "A cat sleeps .", "Boats on a lake .", "A red car ."};  // 6 unique
}

std::string bytes(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

}  // namespace

TEST_CASE("embedding cache: unique captions are embedded once and looked up in any order") {
  if (!have_shared(kTokenizer)) return;
  TempDir dir;
  auto teacher = small_teacher();
  auto cache = kclip::EmbeddingCache::build(dir.path(), *teacher, captions(),
                                            kclip::EmbeddingCacheOptions().shard_size(4).dtype("F32").progress(false));
  CHECK(cache.count() == 6);
  CHECK(cache.complete());
  CHECK(cache.shards().size() == 2);
  auto rows = cache.get({"A red car .", "A dog runs .", "A dog runs ."});
  CHECK(torch::equal(rows[1], rows[2]));
  CHECK(torch::allclose(rows, teacher->embed({"A red car .", "A dog runs .", "A dog runs ."}), 0, 1e-4));
  CHECK_THROWS_WITH_AS(cache.get({"never seen"}), doctest::Contains("caption not in the cache"), kclip::Error);
  kclip::PrecomputedTeacher precomputed(kclip::EmbeddingCache(dir.path(), teacher->id()));
  CHECK(precomputed.id() == teacher->id());
  CHECK(torch::equal(precomputed.embed({"A cat sleeps ."}), cache.get({"A cat sleeps ."})));
  auto f16 = kclip::EmbeddingCache::build((dir / "f16").string(), *teacher, captions(),
                                          kclip::EmbeddingCacheOptions().shard_size(4).progress(false));
  CHECK((f16.shards()[0].scalar_type() == torch::kHalf));
  CHECK(torch::allclose(f16.get({"A red car ."}), rows[0].unsqueeze(0), 1e-2, 1e-2));
}

TEST_CASE("embedding cache: a build killed mid-way resumes and ends byte-identical to an uninterrupted one") {
  if (!have_shared(kTokenizer)) return;
  TempDir whole, resumed;
  auto teacher = small_teacher();
  auto options = kclip::EmbeddingCacheOptions().shard_size(2).dtype("F16").progress(false);
  kclip::EmbeddingCache::build(whole.path(), *teacher, captions(), options);

  // The "crash": one shard written, then a stray temporary file and a complete shard the index never recorded.
  auto partial = kclip::EmbeddingCache::build(resumed.path(), *teacher, captions(), kclip::EmbeddingCacheOptions(options).max_new_shards(1));
  CHECK_FALSE(partial.complete());
  CHECK(partial.count() == 2);
  std::ofstream(resumed / ".shard-00001.safetensors.tmp-1-dead") << "half a file";
  fs::copy_file(whole / "shard-00002.safetensors", resumed / "shard-00002.safetensors");
  auto done = kclip::EmbeddingCache::build(resumed.path(), *teacher, captions(), options);
  CHECK(done.complete());
  fs::remove(resumed / ".shard-00001.safetensors.tmp-1-dead");
  for (const char* name : {"index.json", "shard-00000.safetensors", "shard-00001.safetensors", "shard-00002.safetensors"}) {
    INFO(name);
    CHECK(bytes(whole / name) == bytes(resumed / name));
  }
}

TEST_CASE("embedding cache: another teacher, other captions and corrupt shards are clear errors") {
  if (!have_shared(kTokenizer)) return;
  TempDir dir;
  auto teacher = small_teacher();
  auto options = kclip::EmbeddingCacheOptions().shard_size(4).progress(false);
  kclip::EmbeddingCache::build(dir.path(), *teacher, captions(), options);
  auto other = small_teacher("last");
  CHECK_THROWS_WITH_AS(kclip::EmbeddingCache(dir.path(), other->id()), doctest::Contains("built by teacher"),
                       kclip::Error);
  CHECK_NOTHROW(kclip::EmbeddingCache(dir.path(), other->id(), /*force=*/true));
  CHECK_THROWS_WITH_AS(kclip::EmbeddingCache::build(dir.path(), *other, captions(), options),
                       doctest::Contains("force a rebuild"), kclip::Error);
  CHECK_THROWS_WITH_AS(kclip::EmbeddingCache::build(dir.path(), *teacher, {"Something else entirely ."}, options),
                       doctest::Contains("built from other captions"), kclip::Error);
  auto rebuilt = kclip::EmbeddingCache::build(dir.path(), *other, captions(), kclip::EmbeddingCacheOptions(options).force(true));
  CHECK(rebuilt.teacher_id() == other->id());

  fs::resize_file(dir / "shard-00001.safetensors", 100);  // truncated
  CHECK_THROWS_WITH_AS(kclip::EmbeddingCache(dir.path()), doctest::Contains("shard-00001.safetensors"), kclip::Error);
}

TEST_CASE("embedding cache: captions come from CSV/TSV columns or text lines") {
  TempDir dir;
  std::ofstream(dir / "c.csv") << "image,caption\na.jpg,\"A dog, running\"\nb.jpg,\"He said \"\"hi\"\"\"\r\nc.jpg,plain\n";
  CHECK(kclip::read_captions(dir / "c.csv") == std::vector<std::string>{"A dog, running", "He said \"hi\"", "plain"});
  std::ofstream(dir / "c.tsv") << "filepath\ttitle\nx\tfirst\ny\tsecond\n";
  CHECK(kclip::read_captions(dir / "c.tsv", "title") == std::vector<std::string>{"first", "second"});
  std::ofstream(dir / "c.txt") << "one\n\ntwo\r\n";
  CHECK(kclip::read_captions(dir / "c.txt") == std::vector<std::string>{"one", "two"});
  CHECK_THROWS_WITH_AS(kclip::read_captions(dir / "c.csv", "text"), doctest::Contains("no column 'text' in the header"),
                       kclip::Error);
  if (!have_shared("data/flickr8k-1k/captions.csv")) return;
  auto flickr = kclip::read_captions(shared_dir() / "data/flickr8k-1k/captions.csv");
  CHECK(flickr.size() == 5000);
  CHECK(flickr[0] == "A child in a pink dress is climbing up a set of stairs in an entry way .");
}
