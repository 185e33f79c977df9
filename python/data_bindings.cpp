// kclip._C data: the sources (CsvDataset, ImageFolderDataset, IdxDataset, WebDataset) and the DataLoader, whose
// batches come out as dicts of torch tensors.
#include <kclip/data.h>

#include "module_bindings.h"

#include <pybind11/stl.h>
#include <pybind11/stl/filesystem.h>

namespace py = pybind11;

namespace {

using namespace kclip;

py::dict sample_dict(const Sample& s) {
  py::dict d;
  d["key"] = s.key;
  d["caption"] = s.caption;
  d["label"] = s.label;
  if (!s.image_path.empty()) d["image_path"] = s.image_path;
  if (!s.image_bytes.empty()) d["image_bytes"] = py::bytes(s.image_bytes);
  if (s.image.defined()) d["image"] = s.image;
  return d;
}

py::dict batch_dict(Batch&& b) {
  py::dict d;
  d["images"] = b.images;
  d["text"] = b.text;
  d["labels"] = b.labels;
  d["teacher"] = b.teacher.defined() ? py::cast(b.teacher) : py::none();
  d["concepts"] = b.concepts.defined() ? py::cast(b.concepts) : py::none();
  d["captions"] = b.captions;
  d["keys"] = b.keys;
  d["epoch"] = b.epoch;
  d["index"] = b.index;
  d["skipped"] = b.skipped;
  return d;
}

py::object next_batch(DataLoader& loader) {
  std::optional<Batch> b;
  {
    py::gil_scoped_release release;
    b = loader.next();
  }
  if (!b) return py::none();
  return batch_dict(std::move(*b));
}

py::dict cursor_dict(const DataCursor& c) {
  py::dict d;
  d["epoch"] = c.epoch;
  d["position"] = c.position;
  d["batches"] = c.batches;
  d["skipped"] = c.skipped;
  return d;
}

DataCursor cursor_of(const py::dict& d) {
  auto get = [&](const char* key) {
    if (!d.contains(key)) throw ValueError(fmt::format("cursor: missing '{}'", key));
    return d[key].cast<int64_t>();
  };
  return DataCursor{get("epoch"), get("position"), get("batches"), get("skipped")};
}

CsvDatasetOptions csv_options(const std::string& img_key, const std::string& caption_key, const std::string& separator,
                              const std::string& bad_rows) {
  return CsvDatasetOptions().img_key(img_key).caption_key(caption_key).separator(csv_separator(separator)).bad_rows(bad_rows);
}

std::vector<std::string> templates_of(const py::object& templates) {
  if (py::isinstance<py::str>(templates)) return caption_templates(templates.cast<std::string>());
  return templates.cast<std::vector<std::string>>();
}

bool is_path(const py::object& obj) { return py::isinstance<py::str>(obj) || py::hasattr(obj, "__fspath__"); }
std::string path_text(const py::object& obj) { return py::module_::import("os").attr("fspath")(obj).cast<std::string>(); }

// A string (as `kclip train --train-data` takes it) or a kclip data set.
DataSource source_of(const py::object& data) {
  DataSource source;
  if (is_path(data)) {
    const std::string spec = path_text(data);
    py::gil_scoped_release release;
    return open_data_source(spec);
  }
  if (py::isinstance<WebDataset>(data)) source.webdataset = data.cast<std::shared_ptr<WebDataset>>();
  else if (py::isinstance<Dataset>(data)) source.dataset = data.cast<std::shared_ptr<Dataset>>();
  else throw ValueError("DataLoader: expected a kclip data set or a data string (CSV, tar shards, folder, fashion-mnist)");
  return source;
}

template <typename T>
std::shared_ptr<const T> optional_artifact(const py::object& obj, const char* what) {
  if (obj.is_none()) return nullptr;
  if (py::isinstance<T>(obj)) return std::make_shared<const T>(obj.cast<const T&>());
  if (is_path(obj)) {
    const std::filesystem::path path = path_text(obj);
    if constexpr (std::is_same_v<T, KMeans>) return std::make_shared<const T>(KMeans::load(path));
    else return std::make_shared<const T>(path);
  }
  throw ValueError(fmt::format("DataLoader: {} must be a path or a kclip object", what));
}

}  // namespace

void bind_data(py::module_& m) {
  using py::arg;
  auto no_gil = py::call_guard<py::gil_scoped_release>();

  m.def("caption_templates", &caption_templates, arg("name"));
  m.def("expand_braces", &expand_braces, arg("pattern"));

  py::class_<Dataset, std::shared_ptr<Dataset>>(m, "Dataset")
      .def("__len__", &Dataset::size)
      .def("__getitem__", [](const Dataset& d, int64_t i) {
        if (i < 0) i += d.size();
        if (i < 0 || i >= d.size()) throw py::index_error(fmt::format("index out of range [0, {})", d.size()));
        return sample_dict(d.get(i));
      })
      .def("describe", &Dataset::describe)
      .def("captions", &Dataset::captions)
      .def_property_readonly("classes", &Dataset::classes)
      .def("__repr__", &Dataset::describe);

  py::class_<CsvDataset, Dataset, std::shared_ptr<CsvDataset>>(m, "CsvDataset")
      .def(py::init([](const std::filesystem::path& path, const std::string& img_key, const std::string& caption_key,
                       const std::string& separator, const std::string& bad_rows) {
             return std::make_shared<CsvDataset>(path, csv_options(img_key, caption_key, separator, bad_rows));
           }),
           arg("path"), arg("img_key") = "filepath", arg("caption_key") = "title", arg("separator") = "",
           arg("bad_rows") = "skip")
      .def_property_readonly("skipped_rows", &CsvDataset::skipped_rows);

  py::class_<ImageFolderDataset, Dataset, std::shared_ptr<ImageFolderDataset>>(m, "ImageFolderDataset")
      .def(py::init([](const std::filesystem::path& root, const py::object& templates) {
             return std::make_shared<ImageFolderDataset>(root, templates_of(templates));
           }),
           arg("root"), arg("templates") = "simple")
      .def("label", &ImageFolderDataset::label, arg("index"));

  py::class_<IdxDataset, Dataset, std::shared_ptr<IdxDataset>>(m, "IdxDataset")
      .def(py::init([](const std::filesystem::path& images, const std::filesystem::path& labels,
                       const std::vector<std::string>& class_names, const py::object& templates) {
             return std::make_shared<IdxDataset>(images, labels, class_names, templates_of(templates));
           }),
           arg("images"), arg("labels"), arg("class_names"), arg("templates") = "simple")
      .def_static(
          "named",
          [](const std::string& name, const std::string& split, const py::object& templates,
             const std::optional<std::filesystem::path>& directory) {
            return IdxDataset::named(name, split, templates_of(templates), directory.value_or(std::filesystem::path{}));
          },
          arg("name"), arg("split") = "train", arg("templates") = "simple", arg("directory") = py::none())
      .def_property_readonly("images", &IdxDataset::images)
      .def_property_readonly("labels", &IdxDataset::labels);

  py::class_<WebDataset, std::shared_ptr<WebDataset>>(m, "WebDataset")
      .def(py::init([](const std::string& pattern, const std::vector<std::string>& image_extensions,
                       const std::string& caption_extension, int64_t shuffle_buffer) {
             return std::make_shared<WebDataset>(pattern, WebDatasetOptions()
                                                              .image_extensions(image_extensions)
                                                              .caption_extension(caption_extension)
                                                              .shuffle_buffer(shuffle_buffer));
           }),
           arg("pattern"), arg("image_extensions") = std::vector<std::string>{"jpg", "jpeg", "png", "webp"},
           arg("caption_extension") = "txt", arg("shuffle_buffer") = 1000, no_gil)
      .def("__len__", &WebDataset::size)
      .def_property_readonly("shards", &WebDataset::shards)
      .def_property_readonly("shard_sizes", &WebDataset::shard_sizes)
      .def_property_readonly("incomplete", &WebDataset::incomplete)
      .def_property_readonly("damaged", &WebDataset::damaged)
      .def("describe", &WebDataset::describe)
      .def("__repr__", &WebDataset::describe);

  m.def(
      "open_data_source",
      [](const std::string& spec, const std::string& type, const std::string& csv_img_key,
         const std::string& csv_caption_key, const std::string& csv_separator, const std::string& bad_rows,
         const py::object& templates, const std::string& split) -> py::object {
        DataSourceOptions options;
        options.type(type).csv(csv_options(csv_img_key, csv_caption_key, csv_separator, bad_rows))
            .templates(templates_of(templates)).split(split);
        DataSource source;
        {
          py::gil_scoped_release release;
          source = open_data_source(spec, options);
        }
        if (source.webdataset) return py::cast(std::const_pointer_cast<WebDataset>(source.webdataset));
        return py::cast(std::const_pointer_cast<Dataset>(source.dataset));
      },
      arg("spec"), arg("type") = "auto", arg("csv_img_key") = "filepath", arg("csv_caption_key") = "title",
      arg("csv_separator") = "", arg("bad_rows") = "skip", arg("templates") = "simple", arg("split") = "train");

  py::class_<DataLoader>(m, "DataLoader")
      .def(py::init([](const py::object& data, int64_t batch_size, int64_t workers, int64_t prefetch, bool shuffle,
                       uint64_t seed, int64_t rank, int64_t world_size, bool drop_last, const std::string& bad_samples,
                       const std::optional<ImageTransform>& transform, const std::optional<ClipTokenizer>& tokenizer,
                       int64_t context_length, const py::object& teacher_cache, const py::object& concepts,
                       double concept_temperature, int64_t concept_top_k, bool pin_memory) {
             const DataSource source = source_of(data);
             auto options = DataLoaderOptions()
                                .batch_size(batch_size)
                                .workers(workers)
                                .prefetch(prefetch)
                                .shuffle(shuffle)
                                .seed(seed)
                                .rank(rank)
                                .world_size(world_size)
                                .drop_last(drop_last)
                                .bad_samples(bad_samples)
                                .transform(transform.value_or(ImageTransform{}))
                                .context_length(context_length)
                                .pin_memory(pin_memory);
             TeacherTargets targets{optional_artifact<EmbeddingCache>(teacher_cache, "teacher_cache"),
                                    optional_artifact<KMeans>(concepts, "concepts"), concept_temperature, concept_top_k};
             auto tok = tokenizer ? std::make_shared<const ClipTokenizer>(*tokenizer)
                                  : std::make_shared<const ClipTokenizer>(std::filesystem::path{}, context_length);
             py::gil_scoped_release release;
             if (source.webdataset) return std::make_unique<DataLoader>(source.webdataset, options, tok, targets);
             return std::make_unique<DataLoader>(source.dataset, options, tok, targets);
           }),
           arg("data"), arg("batch_size") = 64, arg("workers") = 0, arg("prefetch") = 2, arg("shuffle") = true,
           arg("seed") = 0, arg("rank") = 0, arg("world_size") = 1, arg("drop_last") = true, arg("bad_samples") = "skip",
           arg("transform") = py::none(), arg("tokenizer") = py::none(), arg("context_length") = 77,
           arg("teacher_cache") = py::none(), arg("concepts") = py::none(), arg("concept_temperature") = 0.05,
           arg("concept_top_k") = 0, arg("pin_memory") = false)
      .def("next", [](DataLoader& l) { return next_batch(l); }, "The next batch of the epoch, None at its end.")
      .def("__iter__", [](py::object self) { return self; })
      .def("__next__",
           [](DataLoader& l) {
             py::object batch = next_batch(l);
             if (batch.is_none()) throw py::stop_iteration();
             return batch;
           })
      .def("__len__", &DataLoader::batches_per_epoch)
      .def("end_epoch", &DataLoader::end_epoch)
      .def_property_readonly("batches_per_epoch", &DataLoader::batches_per_epoch)
      .def_property_readonly("samples_per_rank", &DataLoader::samples_per_rank)
      .def_property_readonly("cursor", [](const DataLoader& l) { return cursor_dict(l.cursor()); })
      .def("seek", [](DataLoader& l, const py::dict& c) { l.seek(cursor_of(c)); }, arg("cursor"))
      .def_property_readonly("wait_seconds", &DataLoader::wait_seconds)
      .def("epoch_order", &DataLoader::epoch_order, arg("epoch"));
}
