// kclip._C evaluation: zero-shot, retrieval, linear probe, text reconstruction probe, concept agreement. Results
// come back as dicts with the keys `kclip eval` writes (the C++ to_json documents).
#include <kclip/eval.h>
#include <kclip/teacher.h>

#include "module_bindings.h"

#include <pybind11/functional.h>
#include <pybind11/stl.h>
#include <pybind11/stl/filesystem.h>

namespace py = pybind11;

namespace {

using namespace kclip;

py::object as_dict(const std::string& json_text) { return py::module_::import("json").attr("loads")(json_text); }

ClipTokenizer tokenizer_or_default(const std::optional<ClipTokenizer>& tokenizer) {
  return tokenizer ? *tokenizer : ClipTokenizer();
}

std::shared_ptr<const Dataset> dataset_of(const py::object& data, const std::string& templates) {
  if (py::isinstance<Dataset>(data)) return data.cast<std::shared_ptr<Dataset>>();
  const std::string spec = py::module_::import("os").attr("fspath")(data).cast<std::string>();
  py::gil_scoped_release release;
  const DataSource source = open_data_source(spec, DataSourceOptions().templates(caption_templates(templates)).split("test"));
  if (!source.dataset) throw ValueError(fmt::format("'{}': expected an image folder or an IDX data set", spec));
  return source.dataset;
}

CsvDatasetOptions columns(const std::string& img_key, const std::string& caption_key, const std::string& separator) {
  return CsvDatasetOptions().img_key(img_key).caption_key(caption_key).separator(csv_separator(separator));
}

// A CLIP student (its text tower), a kclip Teacher (its embed), or any callable list[str] -> Tensor [N, D].
TextEncoder encoder_of(const py::object& encoder, const ClipTokenizer& tokenizer) {
  if (py::isinstance<CLIPImpl>(encoder)) {
    auto model = encoder.cast<std::shared_ptr<CLIPImpl>>();
    return [model, tokenizer](const std::vector<std::string>& texts) {
      CLIP holder(model);
      return encode_texts(holder, tokenizer, texts);
    };
  }
  if (py::isinstance<Teacher>(encoder)) {
    auto teacher = encoder.cast<std::shared_ptr<Teacher>>();
    return [teacher](const std::vector<std::string>& texts) { return teacher->embed(texts); };
  }
  if (!PyCallable_Check(encoder.ptr())) throw ValueError("encoder: expected a kclip.CLIP, a kclip.Teacher or a callable");
  return [encoder](const std::vector<std::string>& texts) {
    py::gil_scoped_acquire acquire;
    return encoder(texts).cast<at::Tensor>();
  };
}

}  // namespace

void bind_eval(py::module_& m) {
  using py::arg;
  auto no_gil = py::call_guard<py::gil_scoped_release>();

  m.def("encode_images",
        [](std::shared_ptr<CLIPImpl> model, const py::object& data, int64_t batch_size, int64_t workers, bool normalize) {
          auto dataset = dataset_of(data, "simple");
          py::gil_scoped_release release;
          CLIP holder(model);
          ImageFeatures f = encode_images(holder, dataset, batch_size, workers, normalize);
          return std::make_pair(f.features, f.labels);
        },
        arg("model"), arg("data"), arg("batch_size") = 256, arg("workers") = 0, arg("normalize") = true);
  m.def("encode_texts",
        [](std::shared_ptr<CLIPImpl> model, const std::vector<std::string>& texts, const std::optional<ClipTokenizer>& tok,
           int64_t batch_size, bool normalize) {
          const ClipTokenizer tokenizer = tokenizer_or_default(tok);
          py::gil_scoped_release release;
          CLIP holder(model);
          return encode_texts(holder, tokenizer, texts, batch_size, normalize);
        },
        arg("model"), arg("texts"), arg("tokenizer") = py::none(), arg("batch_size") = 256, arg("normalize") = true);

  m.def("zeroshot_classifier",
        [](std::shared_ptr<CLIPImpl> model, const py::object& class_names, const py::object& templates,
           const std::optional<std::vector<std::vector<std::string>>>& texts, const std::optional<ClipTokenizer>& tok) {
          const ClipTokenizer tokenizer = tokenizer_or_default(tok);
          CLIP holder(model);
          if (texts) {
            py::gil_scoped_release release;
            return zeroshot_classifier(holder, tokenizer, *texts);
          }
          if (class_names.is_none()) throw ValueError("zeroshot_classifier: give class_names (and templates) or texts");
          const auto names = class_names.cast<std::vector<std::string>>();
          const auto list = py::isinstance<py::str>(templates) ? caption_templates(templates.cast<std::string>())
                                                                : templates.cast<std::vector<std::string>>();
          py::gil_scoped_release release;
          return zeroshot_classifier(holder, tokenizer, names, list);
        },
        arg("model"), arg("class_names") = py::none(), arg("templates") = "openai-imagenet", arg("texts") = py::none(),
        arg("tokenizer") = py::none(),
        "OpenAI's zero-shot classifier [embed_dim, classes]: class names × templates, or texts per class.");
  m.def("class_prompt_name", &class_prompt_name, arg("folder_name"));
  m.def("classification_accuracy",
        [](const at::Tensor& logits, const at::Tensor& labels) { return as_dict(to_json(classification_accuracy(logits, labels))); },
        arg("logits"), arg("labels"));
  m.def("evaluate_zeroshot",
        [](std::shared_ptr<CLIPImpl> model, const py::object& data, const py::object& templates,
           const std::optional<ClipTokenizer>& tok, int64_t batch_size, int64_t workers) {
          const auto list = py::isinstance<py::str>(templates) ? caption_templates(templates.cast<std::string>())
                                                                : templates.cast<std::vector<std::string>>();
          auto dataset = dataset_of(data, "simple");
          const ClipTokenizer tokenizer = tokenizer_or_default(tok);
          std::string text;
          {
            py::gil_scoped_release release;
            CLIP holder(model);
            text = to_json(evaluate_zeroshot(holder, tokenizer, dataset, list, batch_size, workers), dataset->classes());
          }
          return as_dict(text);
        },
        arg("model"), arg("data"), arg("templates") = "openai-imagenet", arg("tokenizer") = py::none(),
        arg("batch_size") = 256, arg("workers") = 0);

  m.def("retrieval_recall",
        [](const at::Tensor& images, const at::Tensor& texts, const at::Tensor& text_image, const std::vector<int64_t>& ks,
           int64_t block) {
          std::string text;
          {
            py::gil_scoped_release release;
            text = to_json(retrieval_recall(images, texts, text_image, ks, block));
          }
          return as_dict(text);
        },
        arg("image_features"), arg("text_features"), arg("text_image"), arg("ks") = std::vector<int64_t>{1, 5, 10},
        arg("block") = 2048);
  m.def("evaluate_retrieval",
        [](std::shared_ptr<CLIPImpl> model, const std::filesystem::path& csv, const std::string& img_key,
           const std::string& caption_key, const std::string& separator, const std::optional<ClipTokenizer>& tok,
           int64_t batch_size, int64_t workers) {
          const ClipTokenizer tokenizer = tokenizer_or_default(tok);
          const auto cols = columns(img_key, caption_key, separator);
          std::string text;
          {
            py::gil_scoped_release release;
            CLIP holder(model);
            text = to_json(evaluate_retrieval(holder, tokenizer, csv, cols, batch_size, workers));
          }
          return as_dict(text);
        },
        arg("model"), arg("csv"), arg("img_key") = "image", arg("caption_key") = "caption", arg("separator") = "",
        arg("tokenizer") = py::none(), arg("batch_size") = 256, arg("workers") = 0);

  m.def("fit_logistic_regression", &fit_logistic_regression, arg("x"), arg("y"), arg("classes"), arg("c"),
        arg("max_iter") = 1000, no_gil);
  m.def("linear_probe",
        [](const at::Tensor& train_x, const at::Tensor& train_y, const at::Tensor& test_x, const at::Tensor& test_y,
           const std::vector<double>& c_grid, double validation_fraction, int64_t max_iter, uint64_t seed) {
          std::string text;
          {
            py::gil_scoped_release release;
            text = to_json(linear_probe(train_x, train_y, test_x, test_y,
                                        LinearProbeOptions().c_grid(c_grid).validation_fraction(validation_fraction)
                                            .max_iter(max_iter).seed(seed)));
          }
          return as_dict(text);
        },
        arg("train_x"), arg("train_y"), arg("test_x"), arg("test_y"),
        arg("c_grid") = LinearProbeOptions().c_grid(), arg("validation_fraction") = 0.2, arg("max_iter") = 1000,
        arg("seed") = 0);
  m.def("evaluate_linear_probe",
        [](std::shared_ptr<CLIPImpl> model, const std::string& data, const std::vector<double>& c_grid, int64_t batch_size,
           int64_t workers) {
          std::string text;
          {
            py::gil_scoped_release release;
            CLIP holder(model);
            text = to_json(evaluate_linear_probe(holder, open_probe_split(data), LinearProbeOptions().c_grid(c_grid),
                                                 batch_size, workers));
          }
          return as_dict(text);
        },
        arg("model"), arg("data"), arg("c_grid") = LinearProbeOptions().c_grid(), arg("batch_size") = 256,
        arg("workers") = 0);

  m.def("split_captions", &split_captions, arg("captions"), arg("test_fraction") = 0.2);
  py::class_<TextProbe>(m, "TextProbe")
      .def(py::init([](const std::vector<std::string>& train_captions, int64_t encoder_dim,
                       const std::optional<ClipTokenizer>& tok, int64_t width, int64_t layers, int64_t heads,
                       int64_t max_tokens, int64_t prefix_tokens, int64_t epochs, int64_t batch_size, double lr,
                       uint64_t seed) {
             return TextProbe(tokenizer_or_default(tok), train_captions, encoder_dim,
                              TextProbeOptions().width(width).layers(layers).heads(heads).max_tokens(max_tokens)
                                  .prefix_tokens(prefix_tokens).epochs(epochs).batch_size(batch_size).lr(lr).seed(seed));
           }),
           arg("train_captions"), arg("encoder_dim"), arg("tokenizer") = py::none(), arg("width") = 256,
           arg("layers") = 2, arg("heads") = 4, arg("max_tokens") = 32, arg("prefix_tokens") = 4, arg("epochs") = 20,
           arg("batch_size") = 64,
           arg("lr") = 1e-3, arg("seed") = 0)
      .def("run",
           [](TextProbe& probe, const py::object& encoder, const std::vector<std::string>& train,
              const std::vector<std::string>& test, const std::optional<ClipTokenizer>& tok) {
             TextEncoder e = encoder_of(encoder, tokenizer_or_default(tok));
             std::string text;
             {
               py::gil_scoped_release release;
               text = to_json(probe.run(e, train, test));
             }
             return as_dict(text);
           },
           arg("encoder"), arg("train_captions"), arg("test_captions"), arg("tokenizer") = py::none(),
           "Trains the probe on the encoder's encodings of train_captions; scores test_captions. encoder: a kclip.CLIP, "
           "a kclip.Teacher, or a callable list[str] -> Tensor [N, D].")
      .def("reset_map", &TextProbe::reset_map, arg("encoder_dim"))
      .def("decode", &TextProbe::decode, arg("encodings"), no_gil);

  m.def("evaluate_concepts",
        [](std::shared_ptr<CLIPImpl> model, const py::object& loss, const std::filesystem::path& pairs_csv,
           const std::filesystem::path& teacher_cache, const py::object& concepts, const std::string& img_key,
           const std::string& caption_key, const std::optional<ClipTokenizer>& tok, int64_t batch_size, int64_t workers) {
          const KnowledgeClipLossImpl* loss_module = loss.is_none() ? nullptr : loss.cast<KnowledgeClipLossImpl*>();
          const KMeans km = py::isinstance<KMeans>(concepts)
                                ? concepts.cast<KMeans>()
                                : KMeans::load(py::module_::import("os").attr("fspath")(concepts).cast<std::string>());
          const ClipTokenizer tokenizer = tokenizer_or_default(tok);
          const auto cols = columns(img_key, caption_key, "");
          std::string text;
          {
            py::gil_scoped_release release;
            const EmbeddingCache cache(teacher_cache);
            CLIP holder(model);
            text = to_json(evaluate_concepts(holder, loss_module, tokenizer, pairs_csv, cols, cache, km, batch_size, workers));
          }
          return as_dict(text);
        },
        arg("model"), arg("loss"), arg("pairs_csv"), arg("teacher_cache"), arg("concepts"), arg("img_key") = "image",
        arg("caption_key") = "caption", arg("tokenizer") = py::none(), arg("batch_size") = 256, arg("workers") = 0);

  m.def(
      "evaluate",
      [](const py::object& model, const std::string& zeroshot, const std::string& templates, const std::string& retrieval,
         const std::string& linear_probe, const std::string& text_probe, int64_t text_probe_epochs,
         int64_t text_probe_width, const std::string& teacher, const std::string& teacher_tokenizer,
         const std::string& concepts, const std::string& teacher_cache, const std::string& concept_data,
         const std::string& img_key, const std::string& caption_key, const std::string& separator, int64_t batch_size,
         int64_t workers, const std::string& tokenizer, bool quiet) {
        const auto options = EvalSuiteOptions()
                                 .zeroshot(zeroshot).templates(templates).retrieval(retrieval).linear_probe(linear_probe)
                                 .text_probe(text_probe).text_probe_epochs(text_probe_epochs)
                                 .text_probe_width(text_probe_width).teacher(teacher).teacher_tokenizer(teacher_tokenizer)
                                 .concepts(concepts).teacher_cache(teacher_cache).concept_data(concept_data)
                                 .columns(columns(img_key, caption_key, separator)).batch_size(batch_size)
                                 .workers(workers).tokenizer(tokenizer).quiet(quiet);
        const std::string spec = py::module_::import("os").attr("fspath")(model).cast<std::string>();
        std::string text;
        {
          py::gil_scoped_release release;
          text = evaluate_all(spec, options);
        }
        return as_dict(text);
      },
      arg("model"), py::kw_only(), arg("zeroshot") = "", arg("templates") = "openai-imagenet", arg("retrieval") = "",
      arg("linear_probe") = "", arg("text_probe") = "", arg("text_probe_epochs") = 20, arg("text_probe_width") = 256,
      arg("teacher") = "", arg("teacher_tokenizer") = "", arg("concepts") = "", arg("teacher_cache") = "",
      arg("concept_data") = "", arg("img_key") = "image", arg("caption_key") = "caption", arg("separator") = "",
      arg("batch_size") = 256, arg("workers") = 0, arg("tokenizer") = "", arg("quiet") = true,
      "Every evaluation `kclip eval` runs, as one dict (the same JSON document). model: a trainer checkpoint "
      "directory, a CLIP checkpoint, a config file or name.");
}
