// DataLoader: worker threads decode and preprocess samples in the order of each rank's epoch, ahead of the
// consumer, into a bounded window; the consumer fills batches in that order, skipping (and counting) samples
// whose image cannot be read, and attaches teacher embeddings and concept labels.
//
// Positions: each rank sees its epoch as a sequence of sample positions 0, 1, 2, ... (a shuffled slice of the
// data set, or its share of the tar stream). Workers claim positions in order and may run into the next epoch;
// a batch is the next batch_size readable samples; the cursor (epoch, position) says where the next batch starts.
#include <kclip/data.h>
#include <kclip/error.h>
#include <kclip/runtime.h>

#include "data/tar_reader.h"

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <fmt/ranges.h>  // fmt::join (in ranges.h since fmt 11)

#include <chrono>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <exception>
#include <fstream>
#include <map>
#include <mutex>
#include <numeric>
#include <random>
#include <thread>
#include <unordered_map>

namespace kclip {
namespace {

uint64_t mix(uint64_t x) {  // SplitMix64's finaliser
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}
uint64_t mix(uint64_t a, uint64_t b) { return mix(mix(a) ^ b); }
uint64_t mix(uint64_t a, uint64_t b, uint64_t c) { return mix(mix(a, b) ^ c); }

// Fisher–Yates with a fixed generator and our own bounded draw: the same order on every platform (std::shuffle
// and std::uniform_int_distribution are implementation-defined).
template <typename T>
void shuffle(std::vector<T>& v, uint64_t seed) {
  std::mt19937_64 rng(seed);
  for (size_t i = v.size(); i > 1; --i) std::swap(v[i - 1], v[rng() % i]);
}

// One position of a rank's epoch, as fetched (before decoding).
struct Item {
  Sample sample;
  std::string error;  // the source itself failed here (a damaged shard): a bad sample
  bool end = false;   // the epoch ended before this position
  uint64_t crop_seed = 0;
};

// One rank's samples of one epoch. fetch() is called with positions 0, 1, 2, ... from `start` on, one at a time.
class EpochSource {
 public:
  virtual ~EpochSource() = default;
  virtual Item fetch(int64_t position) = 0;
};

// A map-style data set: the rank's slice of a shuffled permutation.
class MapSource : public EpochSource {
 public:
  MapSource(const Dataset& dataset, std::vector<int64_t> order, uint64_t seed, int64_t epoch)
      : dataset_(dataset), order_(std::move(order)), seed_(seed), epoch_(epoch) {}
  Item fetch(int64_t position) override {
    Item item;
    if (position >= static_cast<int64_t>(order_.size())) {
      item.end = true;
      return item;
    }
    const int64_t index = order_[static_cast<size_t>(position)];
    item.sample = dataset_.get(index);
    item.crop_seed = mix(seed_, static_cast<uint64_t>(epoch_), static_cast<uint64_t>(index));
    return item;
  }

 private:
  const Dataset& dataset_;
  std::vector<int64_t> order_;
  uint64_t seed_;
  int64_t epoch_;
};

uint64_t fnv1a(const std::string& s) {
  uint64_t h = 14695981039346656037ull;
  for (unsigned char c : s) h = (h ^ c) * 1099511628211ull;
  return h;
}

// Tar shards, streamed: the rank's shards in a per-epoch shuffled order (or every shard, keeping every
// world_size-th sample, when there are fewer shards than ranks), then a shuffle buffer.
class WebSource : public EpochSource {
 public:
  WebSource(const WebDataset& web, std::vector<size_t> shards, int64_t keep_every, int64_t keep_offset, int64_t buffer,
            uint64_t seed, int64_t epoch, int64_t rank, int64_t start)
      : web_(web),
        shards_(std::move(shards)),
        keep_every_(keep_every),
        keep_offset_(keep_offset),
        buffer_size_(std::max<int64_t>(buffer, 1)),
        seed_(seed),
        epoch_(epoch),
        rng_(mix(seed, static_cast<uint64_t>(epoch), 0x5eed0000ull + static_cast<uint64_t>(rank))) {
    for (int64_t p = 0; p < start; ++p) next_item();  // replay to the cursor (reads, does not decode)
  }
  Item fetch(int64_t) override { return next_item(); }

 private:
  Item next_item() {
    while (static_cast<int64_t>(buffer_.size()) < buffer_size_ && !raw_done_) {
      std::optional<Item> raw = next_raw();
      if (!raw) raw_done_ = true;
      else buffer_.push_back(std::move(*raw));
    }
    Item item;
    if (buffer_.empty()) {
      item.end = true;
      return item;
    }
    std::swap(buffer_[rng_() % buffer_.size()], buffer_.back());
    item = std::move(buffer_.back());
    buffer_.pop_back();
    return item;
  }

  // The next sample of this rank's share of the stream; a damaged shard yields one error item and is left.
  std::optional<Item> next_raw() {
    while (true) {
      if (!reader_) {
        if (next_shard_ >= shards_.size()) return std::nullopt;
        current_ = web_.shards()[shards_[next_shard_++]];
        try {
          reader_ = std::make_unique<detail::TarSampleReader>(current_, web_.options());
        } catch (const Error& e) {
          return error_item(e.what());
        }
      }
      std::optional<Sample> sample;
      try {
        sample = reader_->next();
      } catch (const Error& e) {
        reader_.reset();
        return error_item(e.what());
      }
      if (!sample) {
        reader_.reset();
        continue;
      }
      if (stream_index_++ % keep_every_ != keep_offset_) continue;
      Item item;
      item.crop_seed = mix(seed_, static_cast<uint64_t>(epoch_), fnv1a(sample->key));
      item.sample = std::move(*sample);
      return item;
    }
  }

  Item error_item(const std::string& message) {
    Item item;
    item.error = message;
    item.sample.key = current_;
    return item;
  }

  const WebDataset& web_;
  std::vector<size_t> shards_;
  int64_t keep_every_, keep_offset_, buffer_size_;
  uint64_t seed_;
  int64_t epoch_;
  std::mt19937_64 rng_;
  size_t next_shard_ = 0;
  std::string current_;
  std::unique_ptr<detail::TarSampleReader> reader_;
  int64_t stream_index_ = 0;
  bool raw_done_ = false;
  std::vector<Item> buffer_;
};

std::string read_bytes(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail("{}: cannot open: {}", path.string(), std::strerror(errno));
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (in.bad()) fail("{}: read error", path.string());
  return bytes;
}

}  // namespace

// ---- the loader -------------------------------------------------------------------------------------------------

struct DataLoader::Impl {
  std::shared_ptr<const Dataset> dataset;
  std::shared_ptr<const WebDataset> web;
  DataLoaderOptions options;
  std::shared_ptr<const ClipTokenizer> tokenizer;
  TeacherTargets targets;

  int64_t per_rank = 0, nominal_batches = 0;
  std::vector<size_t> web_shards;     // this rank's shards (split by shard) or all (split by sample)
  int64_t keep_every = 1, keep_offset = 0;

  // A claimed position: decoded by a worker, then taken by the consumer.
  struct Slot {
    bool ready = false, end = false;
    std::string key, caption, error;  // error: an unreadable sample (skipped or reported, as configured)
    std::exception_ptr fatal;         // anything else stops the loader
    int64_t label = -1;
    at::Tensor image, ids;
  };
  using Key = std::pair<int64_t, int64_t>;  // (epoch, position)

  mutable std::mutex mutex;
  std::condition_variable work_cv, result_cv;
  std::map<Key, Slot> slots;
  int64_t claim_epoch = 0, claim_position = 0;
  std::unique_ptr<EpochSource> claim_source;
  int64_t claim_source_epoch = -1;
  DataCursor cursor;
  bool exhausted = false;  // the current epoch's samples ran out (the next call ends the epoch)
  std::exception_ptr fatal;
  bool stopping = false;
  std::vector<std::thread> workers;
  double waited = 0;

  // Concept labels computed once per caption (hash -> row of concept_rows).
  std::unordered_map<uint64_t, int64_t> concept_row;
  std::vector<float> concept_rows;

  Impl(DataLoaderOptions o, std::shared_ptr<const ClipTokenizer> t, TeacherTargets targets_)
      : options(std::move(o)), tokenizer(std::move(t)), targets(std::move(targets_)) {
    validate();
  }
  ~Impl() { stop(); }

  void validate() {
    const auto& o = options;
    if (o.batch_size() < 1) fail_value("DataLoader: batch_size {} must be positive", o.batch_size());
    if (o.workers() < 0 || o.prefetch() < 1) fail_value("DataLoader: workers must be >= 0 and prefetch >= 1");
    if (o.world_size() < 1 || o.rank() < 0 || o.rank() >= o.world_size())
      fail_value("DataLoader: rank {} of world_size {}", o.rank(), o.world_size());
    if (o.bad_samples() != "skip" && o.bad_samples() != "error")
      fail_value("DataLoader: bad_samples '{}': expected skip or error", o.bad_samples());
    if (o.context_length() < 2) fail_value("DataLoader: context_length {} is too short", o.context_length());
    if (!tokenizer) fail_value("DataLoader: a ClipTokenizer is required");
    if (targets.concepts && !targets.cache)
      fail_value("DataLoader: concept labels come from teacher embeddings: give the embedding cache too");
    if (targets.concepts) {
      if (!targets.concepts->fitted()) fail_value("DataLoader: the concepts' K-means is not fitted");
      const int64_t dim = targets.concepts->centroids().size(1);
      if (dim != targets.cache->dim())
        fail("concepts have dimension {} but the teacher cache {} has {}: cluster that cache's embeddings", dim,
             targets.cache->directory().string(), targets.cache->dim());
      const auto& meta = targets.concepts->metadata();
      if (auto it = meta.find("teacher_id"); it != meta.end() && it->second != targets.cache->teacher_id())
        fail("concepts were clustered from teacher '{}' but the cache {} holds teacher '{}'", it->second,
             targets.cache->directory().string(), targets.cache->teacher_id());
      if (targets.concept_temperature < 0 || targets.concept_top_k < 0)
        fail_value("DataLoader: concept temperature and top_k must be >= 0");
    }
  }

  // Every caption of a map-style source must be in the teacher cache: fail before training, not at step 10000.
  void check_captions_cached() {
    if (!targets.cache || !dataset) return;
    const auto captions = dataset->captions();
    std::vector<std::string> missing;
    int64_t count = 0;
    for (const auto& c : captions)
      if (!targets.cache->contains(c)) {
        if (missing.size() < 3) missing.push_back("\"" + c + "\"");
        ++count;
      }
    if (count)
      fail("{}: {} of {} captions of {} are not in the teacher cache, e.g. {} (embed them with `kclip embed`)",
           targets.cache->directory().string(), count, captions.size(), dataset->describe(), fmt::join(missing, ", "));
  }

  void plan_map() {
    const int64_t n = dataset->size(), w = options.world_size();
    const int64_t total = options.drop_last() ? n / w * w : (n + w - 1) / w * w;
    per_rank = total / w;
    if (per_rank == 0) fail("{}: {} samples cannot be shared by {} ranks", dataset->describe(), n, w);
    const int64_t b = options.batch_size();
    nominal_batches = options.drop_last() ? per_rank / b : (per_rank + b - 1) / b;
  }

  void plan_web() {
    const int64_t w = options.world_size(), r = options.rank(), b = options.batch_size();
    const auto& sizes = web->shard_sizes();
    const int64_t shards = static_cast<int64_t>(sizes.size());
    int64_t smallest = -1;
    if (shards >= w) {  // split by shard: shard i belongs to rank i % world_size
      for (int64_t rank = 0; rank < w; ++rank) {
        int64_t count = 0;
        for (int64_t i = rank; i < shards; i += w) {
          count += sizes[static_cast<size_t>(i)];
          if (rank == r) web_shards.push_back(static_cast<size_t>(i));
        }
        if (rank == r) per_rank = count;
        smallest = smallest < 0 ? count : std::min(smallest, count);
      }
    } else {  // fewer shards than ranks: every rank reads every shard and keeps every w-th sample
      for (int64_t i = 0; i < shards; ++i) web_shards.push_back(static_cast<size_t>(i));
      keep_every = w;
      keep_offset = r;
      per_rank = (web->size() - r + w - 1) / w;
      smallest = web->size() / w;
    }
    nominal_batches = options.drop_last() ? smallest / b : (per_rank + b - 1) / b;
    if (nominal_batches == 0)
      fail("{}: {} samples per rank make no batch of {}", web->describe(), smallest, options.batch_size());
  }

  std::vector<int64_t> order(int64_t epoch) const {
    const int64_t n = dataset->size(), w = options.world_size();
    std::vector<int64_t> perm(static_cast<size_t>(n));
    std::iota(perm.begin(), perm.end(), 0);
    if (options.shuffle()) shuffle(perm, mix(options.seed(), static_cast<uint64_t>(epoch)));
    std::vector<int64_t> mine;
    mine.reserve(static_cast<size_t>(per_rank));
    for (int64_t i = options.rank(); i < per_rank * w; i += w) mine.push_back(perm[static_cast<size_t>(i % n)]);
    return mine;  // like DistributedSampler: rank r takes positions r, r + w, ... (padded by wrapping)
  }

  std::unique_ptr<EpochSource> make_source(int64_t epoch, int64_t start) const {
    if (dataset) return std::make_unique<MapSource>(*dataset, order(epoch), options.seed(), epoch);
    std::vector<size_t> shards = web_shards;
    if (options.shuffle()) shuffle(shards, mix(options.seed(), static_cast<uint64_t>(epoch), 0x5a4dull));
    const int64_t buffer = options.shuffle() ? web->options().shuffle_buffer() : 1;
    return std::make_unique<WebSource>(*web, std::move(shards), keep_every, keep_offset, buffer, options.seed(), epoch,
                                       options.rank(), start);
  }

  // ---- workers ----

  void start() {
    if (!workers.empty()) return;  // only the consumer's thread starts and stops workers
    stopping = false;
    const int64_t n = options.workers() > 0 ? options.workers() : available_cpus();
    for (int64_t i = 0; i < n; ++i) workers.emplace_back([this] { work(); });
  }

  void stop() {
    {
      std::lock_guard<std::mutex> lock(mutex);
      stopping = true;
    }
    work_cv.notify_all();
    for (auto& t : workers) t.join();
    workers.clear();
  }

  int64_t window() const { return options.prefetch() * options.batch_size(); }

  void work() {
    std::unique_lock<std::mutex> lock(mutex);
    while (true) {
      work_cv.wait(lock, [&] { return stopping || static_cast<int64_t>(slots.size()) < window(); });
      if (stopping) return;
      const Key key{claim_epoch, claim_position};
      Item item;
      try {
        if (claim_source_epoch != claim_epoch) {
          claim_source = make_source(claim_epoch, claim_position);
          claim_source_epoch = claim_epoch;
        }
        item = claim_source->fetch(claim_position);
      } catch (...) {
        fatal = std::current_exception();
        result_cv.notify_all();
        return;
      }
      Slot& slot = slots[key];
      if (item.end) {
        slot.ready = slot.end = true;
        ++claim_epoch;
        claim_position = 0;
        result_cv.notify_all();
        continue;
      }
      ++claim_position;
      lock.unlock();
      Slot done = decode(std::move(item));
      lock.lock();
      auto it = slots.find(key);
      if (it == slots.end()) continue;  // the consumer left this epoch meanwhile
      if (done.fatal) {
        fatal = done.fatal;
        result_cv.notify_all();
        return;
      }
      it->second = std::move(done);
      it->second.ready = true;
      result_cv.notify_all();
    }
  }

  Slot decode(Item item) const {
    Slot slot;
    slot.key = item.sample.key;
    slot.caption = item.sample.caption;
    slot.label = item.sample.label;
    if (!item.error.empty()) {
      slot.error = item.error;
      return slot;
    }
    const ImageTransform& t = options.transform();
    const Sample& s = item.sample;
    try {
      if (!s.image_path.empty()) {
        const std::string bytes = read_bytes(s.image_path);
        slot.image = t(bytes.data(), bytes.size(), s.key, item.crop_seed);
      } else if (!s.image_bytes.empty()) {
        slot.image = t(s.image_bytes.data(), s.image_bytes.size(), s.key, item.crop_seed);
      } else if (s.image.defined()) {
        slot.image = t(s.image, item.crop_seed);
      } else {
        slot.error = fmt::format("{}: the sample has no image", s.key);
        return slot;
      }
      slot.ids = (*tokenizer)({s.caption}, options.context_length());
    } catch (const Error& e) {
      slot.error = e.what();
    } catch (const ValueError& e) {
      slot.error = fmt::format("{}: {}", s.key, e.what());
    } catch (...) {
      slot.fatal = std::current_exception();
    }
    return slot;
  }

  // ---- consumer ----

  void advance_epoch() {
    ++cursor.epoch;
    cursor.position = 0;
    cursor.batches = 0;
    exhausted = false;
    for (auto it = slots.begin(); it != slots.end();) it = it->first.first < cursor.epoch ? slots.erase(it) : std::next(it);
    if (claim_epoch < cursor.epoch) {
      claim_epoch = cursor.epoch;
      claim_position = 0;
    }
    work_cv.notify_all();
  }

  // The next slot of the current epoch, waiting (with `lock` held on the mutex) for its decoding.
  Slot take(std::unique_lock<std::mutex>& lock) {
    const Key key{cursor.epoch, cursor.position};
    const auto start = std::chrono::steady_clock::now();
    result_cv.wait(lock, [&] {
      if (fatal) return true;
      auto it = slots.find(key);
      return it != slots.end() && it->second.ready;
    });
    waited += std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (fatal) std::rethrow_exception(fatal);
    auto it = slots.find(key);
    Slot slot = std::move(it->second);
    slots.erase(it);
    ++cursor.position;
    work_cv.notify_all();
    return slot;
  }

  std::optional<Batch> next() {
    start();
    std::unique_lock<std::mutex> lock(mutex);
    if (fatal) std::rethrow_exception(fatal);
    if (exhausted || cursor.batches >= nominal_batches) {
      advance_epoch();
      return std::nullopt;
    }
    std::vector<Slot> got;
    int64_t skipped = 0;
    while (static_cast<int64_t>(got.size()) < options.batch_size()) {
      Slot slot = take(lock);
      if (slot.end) {
        exhausted = true;
        break;
      }
      if (!slot.error.empty()) {
        if (options.bad_samples() == "error") throw Error(slot.error);
        ++skipped;
        ++cursor.skipped;
        continue;
      }
      got.push_back(std::move(slot));
    }
    if (got.empty() || (options.drop_last() && static_cast<int64_t>(got.size()) < options.batch_size())) {
      advance_epoch();
      return std::nullopt;
    }
    Batch batch;
    batch.epoch = cursor.epoch;
    batch.index = cursor.batches++;
    batch.skipped = skipped;
    lock.unlock();
    assemble(got, batch);
    return batch;
  }

  void assemble(std::vector<Slot>& got, Batch& batch) {
    std::vector<at::Tensor> images, ids;
    std::vector<int64_t> labels;
    for (auto& s : got) {
      images.push_back(s.image);
      ids.push_back(s.ids);
      labels.push_back(s.label);
      batch.captions.push_back(std::move(s.caption));
      batch.keys.push_back(std::move(s.key));
    }
    batch.images = at::stack(images);
    batch.text = at::cat(ids);
    batch.labels = at::tensor(labels, at::kLong);
    if (targets.cache) {
      for (size_t i = 0; i < batch.captions.size(); ++i)
        if (!targets.cache->contains(batch.captions[i]))
          fail("{}: the caption of sample {} is not in the teacher cache: \"{}\" (embed it with `kclip embed`)",
               targets.cache->directory().string(), batch.keys[i], batch.captions[i]);
      batch.teacher = targets.cache->get(batch.captions);
    }
    if (targets.concepts) batch.concepts = concept_labels(batch.captions, batch.teacher);
    if (options.pin_memory() && at::hasCUDA()) {
      batch.images = batch.images.pin_memory();
      batch.text = batch.text.pin_memory();
      if (batch.teacher.defined()) batch.teacher = batch.teacher.pin_memory();
      if (batch.concepts.defined()) batch.concepts = batch.concepts.pin_memory();
    }
  }

  // Soft concept labels of each caption, computed from its teacher embedding the first time the caption is seen.
  at::Tensor concept_labels(const std::vector<std::string>& captions, const at::Tensor& teacher) {
    const int64_t k = targets.concepts->centroids().size(0);
    std::vector<int64_t> fresh;
    for (size_t i = 0; i < captions.size(); ++i) {
      const uint64_t h = caption_hash(captions[i]);
      if (!concept_row.count(h)) {
        concept_row.emplace(h, -1);
        fresh.push_back(static_cast<int64_t>(i));
      }
    }
    if (!fresh.empty()) {
      const at::Tensor rows = targets.concepts
                                  ->soft_labels(teacher.index_select(0, at::tensor(fresh, at::kLong)),
                                                targets.concept_temperature, targets.concept_top_k)
                                  .to(at::kCPU, at::kFloat)
                                  .contiguous();
      const float* data = rows.data_ptr<float>();
      for (size_t j = 0; j < fresh.size(); ++j) {
        concept_row[caption_hash(captions[static_cast<size_t>(fresh[j])])] =
            static_cast<int64_t>(concept_rows.size()) / k;
        concept_rows.insert(concept_rows.end(), data + j * k, data + (j + 1) * k);
      }
    }
    at::Tensor out = at::empty({static_cast<int64_t>(captions.size()), k}, at::kFloat);
    float* dst = out.data_ptr<float>();
    for (size_t i = 0; i < captions.size(); ++i) {
      const int64_t row = concept_row.at(caption_hash(captions[i]));
      std::memcpy(dst + i * k, concept_rows.data() + row * k, sizeof(float) * static_cast<size_t>(k));
    }
    return out;
  }
};

DataLoader::DataLoader(std::shared_ptr<const Dataset> dataset, DataLoaderOptions options,
                       std::shared_ptr<const ClipTokenizer> tokenizer, TeacherTargets targets)
    : impl_(std::make_unique<Impl>(std::move(options), std::move(tokenizer), std::move(targets))) {
  if (!dataset) fail_value("DataLoader: no data set");
  impl_->dataset = std::move(dataset);
  impl_->plan_map();
  impl_->check_captions_cached();
}

DataLoader::DataLoader(std::shared_ptr<const WebDataset> web, DataLoaderOptions options,
                       std::shared_ptr<const ClipTokenizer> tokenizer, TeacherTargets targets)
    : impl_(std::make_unique<Impl>(std::move(options), std::move(tokenizer), std::move(targets))) {
  if (!web) fail_value("DataLoader: no data set");
  impl_->web = std::move(web);
  impl_->plan_web();
}

DataLoader::~DataLoader() = default;

std::optional<Batch> DataLoader::next() { return impl_->next(); }

void DataLoader::end_epoch() {
  std::lock_guard<std::mutex> lock(impl_->mutex);
  impl_->advance_epoch();
}

int64_t DataLoader::batches_per_epoch() const { return impl_->nominal_batches; }
int64_t DataLoader::samples_per_rank() const { return impl_->per_rank; }

DataCursor DataLoader::cursor() const {
  std::lock_guard<std::mutex> lock(impl_->mutex);
  return impl_->cursor;
}

void DataLoader::seek(const DataCursor& cursor) {
  if (cursor.epoch < 0 || cursor.position < 0 || cursor.batches < 0 || cursor.skipped < 0)
    fail_value("DataLoader.seek: cursor fields must be >= 0");
  impl_->stop();
  std::lock_guard<std::mutex> lock(impl_->mutex);
  impl_->slots.clear();
  impl_->fatal = nullptr;
  impl_->exhausted = false;
  impl_->cursor = cursor;
  impl_->claim_epoch = cursor.epoch;
  impl_->claim_position = cursor.position;
  impl_->claim_source.reset();
  impl_->claim_source_epoch = -1;
}

double DataLoader::wait_seconds() const {
  std::lock_guard<std::mutex> lock(impl_->mutex);
  return impl_->waited;
}

const DataLoaderOptions& DataLoader::options() const { return impl_->options; }

std::vector<int64_t> DataLoader::epoch_order(int64_t epoch) const {
  if (!impl_->dataset) fail_value("DataLoader.epoch_order: only map-style data sets have an index order");
  return impl_->order(epoch);
}

}  // namespace kclip
