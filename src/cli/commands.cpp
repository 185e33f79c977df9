// The subcommands of `kclip`: version, info, inspect, convert, embed, cluster; train and plot are in
// train_commands.cpp.
#include "commands.h"

#include "args.h"

#include <kclip/kclip.h>

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <fmt/ranges.h>  // fmt::join (in ranges.h since fmt 11)

#include <algorithm>
#include <chrono>
#include <filesystem>

namespace kclip::cli {
namespace {

int run_version(const std::vector<std::string>& argv) {
  Args args(argv, {}, {});
  fmt::print("kclip {}\n", version());
  return 0;
}

int run_info(const std::vector<std::string>& argv) {
  Args args(argv, {}, {});
  fmt::print("{}", runtime_summary());
  return 0;
}

std::string human_bytes(double bytes) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int u = 0;
  while (bytes >= 1024 && u < 4) bytes /= 1024, ++u;
  return fmt::format("{:.1f} {}", bytes, units[u]);
}

int run_inspect(const std::vector<std::string>& argv) {
  Args args(argv, {}, {"quiet"});
  if (args.positional().size() != 1) fail_value("inspect expects one PATH (a .safetensors file, an index or a directory)");
  const std::string path = args.positional()[0];
  TensorDict tensors = load_safetensors(path);
  int64_t elements = 0, bytes = 0;
  for (const auto& item : tensors) {
    const at::Tensor& t = item.value();
    elements += t.numel();
    bytes += t.numel() * static_cast<int64_t>(t.element_size());
    if (!args.has("quiet"))
      fmt::print("{:<60} {:<5} [{}]\n", item.key(), safetensors_dtype_name(t.scalar_type()), fmt::join(t.sizes(), ", "));
  }
  fmt::print("{}: {} tensors, {} elements, {}\n", path, tensors.size(), elements, human_bytes(double(bytes)));
  for (const auto& [key, value] : load_safetensors_metadata(path)) fmt::print("  metadata {} = {}\n", key, value);
  return 0;
}

// `--dtype` names: the safetensors names and PyTorch's.
at::ScalarType parse_float_dtype(const std::string& name) {
  if (name == "f32" || name == "F32" || name == "float32") return at::kFloat;
  if (name == "f16" || name == "F16" || name == "float16") return at::kHalf;
  if (name == "bf16" || name == "BF16" || name == "bfloat16") return at::kBFloat16;
  if (name == "f64" || name == "F64" || name == "float64") return at::kDouble;
  fail_value("--dtype '{}': expected f32, f16, bf16 or f64", name);
}

int run_convert(const std::vector<std::string>& argv) {
  Args args(argv, {"dtype", "metadata"}, {});
  if (args.positional().size() != 2) fail_value("convert expects INPUT and OUTPUT paths");
  const std::string input = args.positional()[0], output = args.positional()[1];
  TensorDict tensors = load_safetensors(input);
  if (args.has("dtype")) {
    const at::ScalarType target = parse_float_dtype(args.get("dtype"));
    for (auto& item : tensors)  // only floating tensors change: ids, counts and masks keep their type
      if (at::isFloatingType(item.value().scalar_type())) item.value() = item.value().to(target);
  }
  Metadata metadata = load_safetensors_metadata(input);
  metadata.erase("total_size");  // a shard index's byte count; wrong once merged and cast
  if (args.has("metadata")) {
    const std::string kv = args.get("metadata");
    auto eq = kv.find('=');
    if (eq == std::string::npos || eq == 0) fail_value("--metadata '{}': expected KEY=VALUE", kv);
    metadata[kv.substr(0, eq)] = kv.substr(eq + 1);
  }
  save_safetensors(output, tensors, metadata);
  fmt::print("wrote {} ({} tensors)\n", output, tensors.size());
  return 0;
}

// Every shard of an embeddings source: the tensor `name` of one .safetensors file, or of each .safetensors file
// in a directory (sorted by file name). Shards stay memory-mapped.
std::vector<at::Tensor> embedding_shards(const std::filesystem::path& path, const std::string& name, Metadata* first_meta) {
  std::vector<std::filesystem::path> files;
  if (std::filesystem::is_directory(path)) {
    for (const auto& entry : std::filesystem::directory_iterator(path))
      if (entry.is_regular_file() && entry.path().extension() == ".safetensors") files.push_back(entry.path());
    std::sort(files.begin(), files.end());
    if (files.empty()) fail_value("--embeddings {}: directory holds no .safetensors file", path.string());
  } else {
    files.push_back(path);
  }
  std::vector<at::Tensor> shards;
  for (const auto& file : files) {
    SafetensorsFile shard(file);
    if (!shard.contains(name)) fail("{}: no tensor '{}' (choose one with --tensor)", file.string(), name);
    if (shards.empty()) *first_meta = shard.metadata();
    shards.push_back(shard.get(name));
  }
  return shards;
}

int64_t parse_int(const Args& args, const std::string& name, int64_t fallback) {
  const std::string text = args.get(name);
  if (text.empty()) return fallback;
  try {
    std::size_t used = 0;
    long long v = std::stoll(text, &used);
    if (used == text.size()) return v;
  } catch (const std::exception&) {
  }
  fail_value("--{} '{}': expected an integer", name, text);
}

int run_cluster(const std::vector<std::string>& argv) {
  Args args(argv, {"embeddings", "k", "out", "metric", "minibatch", "iters", "seed", "init", "n-init", "tensor", "tol",
             "init-sample", "algorithm"},
            {});
  if (!args.has("embeddings") || !args.has("k") || !args.has("out"))
    fail_value("cluster needs --embeddings PATH, --k K and --out FILE");
  Metadata source_meta;
  std::vector<at::Tensor> shards = embedding_shards(args.get("embeddings"), args.get("tensor", "embeddings"), &source_meta);
  KMeansOptions options(parse_int(args, "k", 0));
  const KMeansOptions defaults(1);
  options.metric(args.get("metric", defaults.metric()))
      .batch_size(parse_int(args, "minibatch", 0))
      .iters(parse_int(args, "iters", defaults.iters()))
      .seed(static_cast<uint64_t>(parse_int(args, "seed", 0)))
      .init(args.get("init", defaults.init()))
      .n_init(parse_int(args, "n-init", defaults.n_init()))
      .init_sample(parse_int(args, "init-sample", defaults.init_sample()))
      .algorithm(args.get("algorithm", defaults.algorithm()));
  if (args.has("tol")) options.tol(std::stod(args.get("tol")));
  KMeans kmeans(options);
  const auto start = std::chrono::steady_clock::now();
  if (options.batch_size() > 0) {
    kmeans.fit_minibatch(shards);  // streams the shards
  } else {
    kmeans.fit(shards.size() == 1 ? shards[0] : at::cat(shards, 0));
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  Metadata extra{{"source", args.get("embeddings")}};
  if (auto it = source_meta.find("teacher_id"); it != source_meta.end()) extra["teacher_id"] = it->second;
  kmeans.save(args.get("out"), extra);
  int64_t rows = 0;
  for (const auto& s : shards) rows += s.size(0);
  fmt::print("clustered {} x {} embeddings into k={} ({}, {}): inertia {:.6g} after {} iterations in {:.2f} s\nwrote {}\n",
             rows, shards[0].size(1), options.k(), options.metric(), options.batch_size() > 0 ? "mini-batch" : "Lloyd",
             kmeans.inertia(), kmeans.n_iter(), seconds, args.get("out"));
  return 0;
}

int run_embed(const std::vector<std::string>& argv) {
  Args args(argv,
            {"teacher", "captions", "out", "tokenizer", "pooling", "layer", "max-length", "dtype", "shard-size",
             "batch-size", "column", "separator"},
            {"force", "normalize", "quiet"});
  if (!args.has("teacher") || !args.has("captions") || !args.has("out"))
    fail_value("embed needs --teacher MODEL, --captions FILE and --out DIR");
  const auto captions = read_captions(args.get("captions"), args.get("column", "caption"), csv_separator(args.get("separator")));
  auto teacher = LlamaTeacher::load(args.get("teacher"), args.get("tokenizer"),
                                    LlamaTeacherOptions()
                                        .pooling(args.get("pooling", "mean"))
                                        .layer(parse_int(args, "layer", -1))
                                        .max_length(parse_int(args, "max-length", 0))
                                        .normalize(args.has("normalize")));
  std::string dtype = args.get("dtype", "f16");
  std::transform(dtype.begin(), dtype.end(), dtype.begin(), ::toupper);
  auto cache = EmbeddingCache::build(args.get("out"), *teacher, captions,
                                     EmbeddingCacheOptions()
                                         .dtype(dtype)
                                         .shard_size(parse_int(args, "shard-size", 65536))
                                         .batch_size(parse_int(args, "batch-size", 256))
                                         .force(args.has("force"))
                                         .progress(!args.has("quiet")));
  fmt::print("{}: {} unique of {} captions, dim {}, teacher {}\n", args.get("out"), cache.count(), captions.size(),
             cache.dim(), cache.teacher_id());
  return 0;
}

}  // namespace

const std::vector<Command>& commands() {
  static const std::vector<Command> all = {
      {"version", "", "print kclip's version", run_version},
      {"info", "", "print versions, threads and the BLAS library in use", run_info},
      {"inspect", "PATH [--quiet]", "list the tensors and metadata of a safetensors file, index or directory",
       run_inspect},
      {"convert", "INPUT OUTPUT [--dtype f32|f16|bf16|f64] [--metadata KEY=VALUE]",
       "merge a (sharded) safetensors checkpoint into one file, optionally casting floating tensors", run_convert},
      {"embed",
       "--teacher MODEL --captions FILE --out DIR [--tokenizer PATH] [--pooling mean|last|first] [--layer L] "
       "[--max-length N] [--normalize] [--dtype f16|f32] [--shard-size N] [--batch-size N] [--column caption] "
       "[--separator C] [--force] [--quiet]",
       "embed unique captions (CSV/TSV column or text lines) with a Llama teacher into a resumable cache", run_embed},
      {"cluster",
       "--embeddings PATH --k K --out FILE [--metric l2|cosine] [--minibatch BATCH] [--iters N] [--seed S] "
       "[--init greedy-k-means++|k-means++|random] [--n-init N] [--init-sample ROWS (-1: auto, 0: all)] "
       "[--algorithm auto|elkan|lloyd] [--tol T] [--tensor NAME]",
       "K-means over embeddings (a .safetensors file or a directory of shards, tensor 'embeddings' by default); "
       "writes the centroids artifact",
       run_cluster},
      {"train",
       "--train-data DATA [--model tiny|bench-s|CONFIG.json|CKPT] [--teacher-cache DIR --concepts FILE] "
       "[--alpha A --beta B --gamma G] [--batch-size B] [--epochs E] [--lr LR] [--logs DIR --name NAME] "
       "[--resume latest] [--config FILE] ...",
       "train a CLIP student with Knowledge-CLIP's objective (checkpoints, metrics, resume, torchrun)", run_train,
       train_details},
      {"eval",
       "--model CKPT [--zeroshot DIR|fashion-mnist] [--templates NAME|FILE] [--retrieval CSV] [--linear-probe DIR] "
       "[--text-probe CSV [--teacher MODEL --teacher-tokenizer PATH] [--text-probe-epochs N] [--text-probe-width W]] "
       "[--concepts FILE --teacher-cache DIR [--concept-data CSV]] [--csv-img-key image] [--csv-caption-key caption] "
       "[--csv-separator C] [--batch-size N] [--workers N] [--tokenizer PATH] [--out results.json] [--quiet]",
       "evaluate a student (a checkpoint, a trainer checkpoint directory, or a config): zero-shot, retrieval, linear "
       "probe, text reconstruction probe, concept agreement; one JSON document",
       run_eval},
      {"run", "--config run.json [--dry-run]",
       "the whole method in one run directory: embed, cluster, train, eval, export, plots; each stage skipped when "
       "up to date, rerun when its inputs or settings change, resumed when killed",
       run_run, run_details},
      {"plot", "METRICS.jsonl|results.json OUT.png [--python PY]",
       "plot a run's loss terms and learning rate, or an evaluation's headline figures (needs matplotlib: Debian's "
       "python3-matplotlib)",
       run_plot},
  };
  return all;
}

}  // namespace kclip::cli
