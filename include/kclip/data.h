#pragma once
// Training data: image–caption sources and the loader that feeds the trainer.
//
// Sources give samples (an image still encoded, or a file to read, and its caption):
//   CsvDataset          open_clip's CSV/TSV (image path and caption columns; paths relative to the file)
//   WebDataset          tar shards as img2dataset writes them (key.jpg|png|webp + key.txt [+ key.json]),
//                       streamed with libarchive, shard lists with webdataset's brace syntax
//   ImageFolderDataset  torchvision's ImageFolder (one sub-folder per class), captions = class name × templates
//   IdxDataset          MNIST / Fashion-MNIST IDX files, captions = class name × templates
// DataLoader decodes and preprocesses on worker threads ahead of the step, shuffles deterministically from
// (seed, epoch), shards by rank like torch's DistributedSampler, skips (and counts) unreadable images, and has a
// cursor that checkpoints and resumes mid-epoch. It attaches the teacher's embedding of each caption (from an
// EmbeddingCache) and its soft concept label (from a KMeans artifact).
#include <kclip/clip_tokenizer.h>
#include <kclip/cluster.h>
#include <kclip/embedding_cache.h>
#include <kclip/image_transform.h>

#include <ATen/core/Tensor.h>
#include <torch/arg.h>

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace kclip {

// One example before decoding. The image is a file (image_path), encoded bytes (image_bytes, e.g. a tar member),
// or already decoded (image: uint8 [C, H, W], e.g. an IDX record).
struct Sample {
  std::string key;  // names the sample in messages: the image path, "shard.tar:key", "file.gz[17]"
  std::string caption;
  int64_t label = -1;  // class index for class-labelled sources, else -1
  std::filesystem::path image_path;
  std::string image_bytes;
  at::Tensor image;
};

// A source with random access (everything but WebDataset). get() is called from several threads at once.
class Dataset {
 public:
  virtual ~Dataset() = default;
  virtual int64_t size() const = 0;
  virtual Sample get(int64_t index) const = 0;
  virtual std::string describe() const = 0;  // e.g. "CSV data/train.csv (5000 rows)"
  // Every caption this source can produce (checked against the teacher cache before training starts).
  virtual std::vector<std::string> captions() const;
  // Class names of class-labelled sources (index = label), empty otherwise.
  virtual std::vector<std::string> classes() const { return {}; }
};

struct CsvDatasetOptions {
  TORCH_ARG(std::string, img_key) = "filepath";  // open_clip's --csv-img-key default
  TORCH_ARG(std::string, caption_key) = "title";  // open_clip's --csv-caption-key default
  TORCH_ARG(char, separator) = 0;                 // 0: ',' for .csv, '\t' otherwise (open_clip's default is tab)
  // A record without the image or caption field: "skip" it (counted, see skipped_rows()) or "error".
  TORCH_ARG(std::string, bad_rows) = "skip";
};

// A separator as users write it (flags, config files, Python): "" for the file's default, one character, or "\t"
// for a tab. Anything else is a ValueError.
char csv_separator(const std::string& text);

class CsvDataset : public Dataset {
 public:
  explicit CsvDataset(const std::filesystem::path& path, CsvDatasetOptions options = {});
  int64_t size() const override { return static_cast<int64_t>(rows_.size()); }
  Sample get(int64_t index) const override;
  std::string describe() const override;
  std::vector<std::string> captions() const override;
  int64_t skipped_rows() const { return skipped_rows_; }

 private:
  struct Row {
    std::filesystem::path image;
    std::string caption;
  };
  std::filesystem::path path_;
  std::vector<Row> rows_;
  int64_t skipped_rows_ = 0;
};

// OpenAI's prompt templates by name ("openai-cifar10": the 18 of CLIP's CIFAR-10 notebook; "openai-imagenet":
// the 80 of its ImageNet notebook; "simple": "a photo of a {}."), or one template per line of a file; each holds
// "{}" where the class name goes.
std::vector<std::string> caption_templates(const std::string& name_or_file);

// Captions for class-labelled images: each image gets one template, fixed by its index, filled with its class
// name (underscores become spaces).
struct ClassCaptions {
  std::vector<std::string> class_names;
  std::vector<std::string> templates = {"a photo of a {}."};
  std::string caption(int64_t label, int64_t index) const;
  std::vector<std::string> all() const;  // every class × template caption
};

// torchvision's ImageFolder: root/<class>/<image>, classes sorted by name; files with an image extension
// (.jpg .jpeg .png .bmp .gif .webp, any case) in sorted order.
class ImageFolderDataset : public Dataset {
 public:
  explicit ImageFolderDataset(const std::filesystem::path& root, std::vector<std::string> templates = {"a photo of a {}."});
  int64_t size() const override { return static_cast<int64_t>(files_.size()); }
  Sample get(int64_t index) const override;
  std::string describe() const override;
  std::vector<std::string> captions() const override { return captions_.all(); }
  std::vector<std::string> classes() const override { return captions_.class_names; }
  int64_t label(int64_t index) const { return labels_.at(static_cast<size_t>(index)); }

 private:
  std::filesystem::path root_;
  std::vector<std::filesystem::path> files_;
  std::vector<int64_t> labels_;
  ClassCaptions captions_;
};

// IDX image and label files (gzip or raw), as MNIST and Fashion-MNIST ship them.
class IdxDataset : public Dataset {
 public:
  IdxDataset(const std::filesystem::path& images, const std::filesystem::path& labels, std::vector<std::string> class_names,
             std::vector<std::string> templates = {"a photo of a {}."});
  // "fashion-mnist" or "mnist" (split "train" or "test") from Debian's dataset packages or `directory`.
  static std::shared_ptr<IdxDataset> named(const std::string& name, const std::string& split = "train",
                                           std::vector<std::string> templates = {"a photo of a {}."},
                                           const std::filesystem::path& directory = {});
  int64_t size() const override { return images_.size(0); }
  Sample get(int64_t index) const override;
  std::string describe() const override;
  std::vector<std::string> captions() const override { return captions_.all(); }
  std::vector<std::string> classes() const override { return captions_.class_names; }
  const at::Tensor& images() const { return images_; }  // uint8 [N, H, W]
  const at::Tensor& labels() const { return labels_; }  // int64 [N]

 private:
  std::filesystem::path images_path_;
  at::Tensor images_, labels_;
  ClassCaptions captions_;
};

// webdataset's brace expansion: "data/{00000..00003}.tar" -> 4 names (zero padding kept), "{a,b}" lists; several
// groups multiply. A pattern without braces is itself. "::" separates several patterns (open_clip's convention).
std::vector<std::string> expand_braces(const std::string& pattern);

struct WebDatasetOptions {
  TORCH_ARG(std::vector<std::string>, image_extensions) = std::vector<std::string>{"jpg", "jpeg", "png", "webp"};
  TORCH_ARG(std::string, caption_extension) = "txt";
  TORCH_ARG(int64_t, shuffle_buffer) = 1000;  // samples mixed across the stream, as webdataset's shuffle(1000)
};

// Tar shards read as streams: samples are the groups of consecutive members sharing a key (the path up to the
// first '.' of the file name, as webdataset). Opening scans every shard's headers once to count its samples.
class WebDataset {
 public:
  explicit WebDataset(const std::string& pattern, WebDatasetOptions options = {});
  const std::vector<std::string>& shards() const { return shards_; }
  const std::vector<int64_t>& shard_sizes() const { return sizes_; }  // samples (keys with an image and a caption)
  int64_t size() const;
  std::string describe() const;
  const WebDatasetOptions& options() const { return options_; }
  int64_t incomplete() const { return incomplete_; }  // keys without an image or a caption, passed over
  // Shards that cannot be read to the end (the error of each); their sizes count the samples before the damage.
  const std::vector<std::string>& damaged() const { return damaged_; }

 private:
  std::vector<std::string> shards_;
  std::vector<int64_t> sizes_;
  WebDatasetOptions options_;
  int64_t incomplete_ = 0;
  std::vector<std::string> damaged_;
};

// Where a loader stands: the next sample position of this rank's epoch order. Checkpointed per rank.
struct DataCursor {
  int64_t epoch = 0;
  int64_t position = 0;  // samples of this epoch's order consumed (including skipped ones)
  int64_t batches = 0;   // batches returned in this epoch
  int64_t skipped = 0;   // unreadable samples skipped since the start of training
};

struct DataLoaderOptions {
  TORCH_ARG(int64_t, batch_size) = 64;
  TORCH_ARG(int64_t, workers) = 0;   // decoding threads; 0: available_cpus()
  TORCH_ARG(int64_t, prefetch) = 2;  // batches decoded ahead of the consumer
  TORCH_ARG(bool, shuffle) = true;
  TORCH_ARG(uint64_t, seed) = 0;
  TORCH_ARG(int64_t, rank) = 0;
  TORCH_ARG(int64_t, world_size) = 1;
  // false: the last, smaller batch of an epoch is returned too (evaluation); true: dropped (training).
  TORCH_ARG(bool, drop_last) = true;
  // An image that cannot be read or decoded: "skip" it and count it (the batch is filled from the following
  // samples), or "error".
  TORCH_ARG(std::string, bad_samples) = "skip";
  TORCH_ARG(ImageTransform, transform) = {};
  TORCH_ARG(int64_t, context_length) = 77;
  TORCH_ARG(bool, pin_memory) = false;  // page-locked batches for asynchronous copies to CUDA
};

// What the trainer learns from besides the pairs: the teacher's caption embeddings and their soft concepts.
struct TeacherTargets {
  std::shared_ptr<const EmbeddingCache> cache;  // none: no teacher embeddings in batches
  std::shared_ptr<const KMeans> concepts;       // none: no concept labels (needs cache)
  double concept_temperature = 0.05;
  int64_t concept_top_k = 0;
};

struct Batch {
  at::Tensor images;    // float [B, 3, S, S]
  at::Tensor text;      // int64 [B, context_length]
  at::Tensor labels;    // int64 [B]: class ids, -1 for caption data
  at::Tensor teacher;   // float [B, teacher_dim] when the loader has a cache
  at::Tensor concepts;  // float [B, K] soft concept labels when the loader has concepts
  std::vector<std::string> captions, keys;
  int64_t epoch = 0, index = 0;  // index of the batch in its epoch
  int64_t skipped = 0;           // samples skipped while filling this batch
};

class DataLoader {
 public:
  DataLoader(std::shared_ptr<const Dataset> dataset, DataLoaderOptions options, std::shared_ptr<const ClipTokenizer> tokenizer,
             TeacherTargets targets = {});
  DataLoader(std::shared_ptr<const WebDataset> dataset, DataLoaderOptions options, std::shared_ptr<const ClipTokenizer> tokenizer,
             TeacherTargets targets = {});
  ~DataLoader();
  DataLoader(const DataLoader&) = delete;
  DataLoader& operator=(const DataLoader&) = delete;

  // The next batch of the current epoch, or nullopt when the epoch is over (then the cursor is at the start of
  // the next epoch). Decoding runs ahead on the worker threads.
  std::optional<Batch> next();
  // Ends the current epoch now (e.g. another rank ran out of samples): the cursor moves to the next epoch.
  void end_epoch();
  // Batches each epoch yields when no sample is skipped: floor(samples of this rank / batch_size) (ceil without
  // drop_last). For WebDataset, the smallest over ranks, so that all ranks take the same number of steps.
  int64_t batches_per_epoch() const;
  int64_t samples_per_rank() const;

  DataCursor cursor() const;
  void seek(const DataCursor& cursor);  // resume exactly where `cursor` was taken
  double wait_seconds() const;          // total time next() waited for decoding

  const DataLoaderOptions& options() const;
  // The dataset's sample order for `epoch` on this rank (indices into a map-style Dataset); for tests.
  std::vector<int64_t> epoch_order(int64_t epoch) const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// A source from a training-data string, as `kclip train --train-data` takes it: a .csv/.tsv file, tar shards
// ("shards/{00000..00009}.tar"), an image folder, a folder of IDX files, or "fashion-mnist" / "mnist".
// `type` forces one: "csv", "webdataset", "imagefolder", "idx" ("auto" decides from the string).
struct DataSource {
  std::shared_ptr<const Dataset> dataset;        // map-style sources
  std::shared_ptr<const WebDataset> webdataset;  // or tar shards
  std::string describe() const;
};
struct DataSourceOptions {
  TORCH_ARG(std::string, type) = "auto";
  TORCH_ARG(CsvDatasetOptions, csv) = {};
  TORCH_ARG(std::vector<std::string>, templates) = std::vector<std::string>{"a photo of a {}."};
  TORCH_ARG(std::string, split) = "train";  // for "fashion-mnist" / "mnist"
};
DataSource open_data_source(const std::string& spec, DataSourceOptions options = {});

}  // namespace kclip
