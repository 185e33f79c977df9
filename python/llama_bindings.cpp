// kclip._C Llama: the model, its tokenizer and the teacher that pools caption embeddings.
#include <kclip/embedding_cache.h>
#include <kclip/teacher.h>

#include "module_bindings.h"

#include <pybind11/stl.h>
#include <pybind11/stl/filesystem.h>

namespace py = pybind11;
using kclip::python::bind_module_common;

namespace {

// Lets Python subclasses of kclip.Teacher stand wherever C++ takes a Teacher (e.g. EmbeddingCache.build).
class PyTeacher : public kclip::Teacher {
 public:
  at::Tensor embed(const std::vector<std::string>& texts) override {
    PYBIND11_OVERRIDE_PURE(at::Tensor, kclip::Teacher, embed, texts);
  }
  int64_t dim() const override { PYBIND11_OVERRIDE_PURE(int64_t, kclip::Teacher, dim, ); }
  std::string id() const override { PYBIND11_OVERRIDE_PURE(std::string, kclip::Teacher, id, ); }
};

}  // namespace

void bind_llama(py::module_& m) {
  using namespace kclip;
  using py::arg;
  auto no_gil = py::call_guard<py::gil_scoped_release>();

  py::class_<LlamaImpl, std::shared_ptr<LlamaImpl>> llama(m, "Llama");
  llama
      .def_static("load", &LlamaImpl::load, arg("path"), no_gil,
                  "A Hugging Face directory (config.json + safetensors) or a llama2.c .bin")
      .def(
          "logits",
          [](LlamaImpl& l, const at::Tensor& ids, const c10::optional<at::Tensor>& mask) {
            return l.logits(ids, mask.value_or(at::Tensor()));
          },
          arg("ids"), arg("attention_mask") = py::none(), no_gil)
      .def(
          "hidden_states",
          [](LlamaImpl& l, const at::Tensor& ids, const c10::optional<at::Tensor>& mask, int64_t layer) {
            return l.hidden_states(ids, mask.value_or(at::Tensor()), layer);
          },
          arg("ids"), arg("attention_mask") = py::none(), arg("layer") = -1, no_gil)
      .def_property_readonly("config", [](const LlamaImpl& l) {
        const auto& c = l.config();
        py::dict d;
        d["hidden_size"] = c.hidden_size;
        d["intermediate_size"] = c.intermediate_size;
        d["num_hidden_layers"] = c.num_hidden_layers;
        d["num_attention_heads"] = c.num_attention_heads;
        d["num_key_value_heads"] = c.num_key_value_heads;
        d["vocab_size"] = c.vocab_size;
        d["max_position_embeddings"] = c.max_position_embeddings;
        d["rms_norm_eps"] = c.rms_norm_eps;
        d["rope_theta"] = c.rope_theta;
        d["tie_word_embeddings"] = c.tie_word_embeddings;
        return d;
      });
  bind_module_common(llama);

  py::class_<LlamaTokenizer, std::shared_ptr<LlamaTokenizer>>(m, "LlamaTokenizer")
      .def(py::init<const std::filesystem::path&>(), arg("path"))
      .def("encode", &LlamaTokenizer::encode, arg("text"), arg("bos") = false, arg("eos") = false)
      .def("encode_as_pieces", &LlamaTokenizer::encode_as_pieces, arg("text"))
      .def("decode", &LlamaTokenizer::decode, arg("ids"))
      .def_property_readonly("bos_id", &LlamaTokenizer::bos_id)
      .def_property_readonly("eos_id", &LlamaTokenizer::eos_id)
      .def_property_readonly("vocab_size", &LlamaTokenizer::vocab_size);

  py::class_<Teacher, PyTeacher, std::shared_ptr<Teacher>>(m, "Teacher")
      .def(py::init<>())
      .def("embed", &Teacher::embed, arg("texts"), no_gil)
      .def("dim", &Teacher::dim)
      .def("id", &Teacher::id);

  py::class_<LlamaTeacher, Teacher, std::shared_ptr<LlamaTeacher>>(m, "LlamaTeacher")
      .def_static(
          "load",
          [](const std::filesystem::path& path, const std::optional<std::filesystem::path>& tokenizer,
             const std::string& pooling, int64_t layer, int64_t max_length, bool bos, bool normalize,
             int64_t token_budget, const py::object& dtype, const py::object& device) {
            auto options = LlamaTeacherOptions().pooling(pooling).layer(layer).max_length(max_length).bos(bos)
                               .normalize(normalize).token_budget(token_budget);
            std::shared_ptr<LlamaTeacher> teacher;
            {
              py::gil_scoped_release release;
              teacher = LlamaTeacher::load(path, tokenizer.value_or(std::filesystem::path()), options);
            }
            if (!device.is_none()) kclip::python::module_to(*teacher->model(), device);
            if (!dtype.is_none()) {
              kclip::python::module_to(*teacher->model(), dtype);
            } else if (teacher->model()->model->embed_tokens->weight.is_cuda()) {
              // On a GPU keep a half-precision checkpoint's dtype; on the CPU weights stay float32.
              const std::string& stored = teacher->model()->config().torch_dtype;
              if (stored == "float16") teacher->model()->to(at::kHalf);
              if (stored == "bfloat16") teacher->model()->to(at::kBFloat16);
            }
            return teacher;
          },
          arg("path"), arg("tokenizer") = py::none(), arg("pooling") = "mean", arg("layer") = -1,
          arg("max_length") = 0, arg("bos") = true, arg("normalize") = false, arg("token_budget") = 8192,
          arg("dtype") = py::none(), arg("device") = py::none())
      .def("embed_ids", &LlamaTeacher::embed_ids, arg("ids"), no_gil)
      .def(
          "logits",
          [](LlamaTeacher& t, const at::Tensor& ids, const c10::optional<at::Tensor>& mask) {
            at::NoGradGuard no_grad;
            return t.model()->logits(ids, mask.value_or(at::Tensor()));
          },
          arg("ids"), arg("attention_mask") = py::none(), no_gil)
      .def(
          "hidden_states",
          [](LlamaTeacher& t, const at::Tensor& ids, const c10::optional<at::Tensor>& mask, int64_t layer) {
            at::NoGradGuard no_grad;
            return t.model()->hidden_states(ids, mask.value_or(at::Tensor()), layer);
          },
          arg("ids"), arg("attention_mask") = py::none(), arg("layer") = -1, no_gil)
      .def_property_readonly("model", [](LlamaTeacher& t) { return t.model().ptr(); });

  py::class_<EmbeddingCache>(m, "EmbeddingCache")
      .def(py::init<const std::filesystem::path&, const std::string&, bool>(), arg("path"), arg("teacher_id") = "",
           arg("force") = false)
      .def_static(
          "build",
          [](const std::filesystem::path& path, Teacher& teacher, const std::vector<std::string>& captions,
             int64_t shard_size, const std::string& dtype, int64_t batch_size, bool force, int64_t max_new_shards,
             bool progress) {
            std::string upper = dtype;
            for (auto& c : upper) c = static_cast<char>(std::toupper(c));
            return EmbeddingCache::build(path, teacher, captions,
                                         EmbeddingCacheOptions()
                                             .shard_size(shard_size)
                                             .dtype(upper)
                                             .batch_size(batch_size)
                                             .force(force)
                                             .max_new_shards(max_new_shards)
                                             .progress(progress));
          },
          arg("path"), arg("teacher"), arg("captions"), arg("shard_size") = 65536, arg("dtype") = "f16",
          arg("batch_size") = 256, arg("force") = false, arg("max_new_shards") = 0, arg("progress") = true,
          py::call_guard<py::gil_scoped_release>())
      .def("get", &EmbeddingCache::get, arg("captions"), no_gil)
      .def("__contains__", &EmbeddingCache::contains)
      .def("shards", &EmbeddingCache::shards)
      .def_property_readonly("count", &EmbeddingCache::count)
      .def_property_readonly("dim", &EmbeddingCache::dim)
      .def_property_readonly("teacher_id", &EmbeddingCache::teacher_id)
      .def_property_readonly("complete", &EmbeddingCache::complete);

  py::class_<PrecomputedTeacher, Teacher, std::shared_ptr<PrecomputedTeacher>>(m, "PrecomputedTeacher")
      .def(py::init([](const std::filesystem::path& path) {
             return std::make_shared<PrecomputedTeacher>(EmbeddingCache(path));
           }),
           arg("path"));
  m.def("read_captions",
        [](const std::filesystem::path& path, const std::string& column, const std::string& separator) {
          if (separator.size() > 1) throw ValueError("separator must be one character");
          return read_captions(path, column, separator.empty() ? 0 : separator[0]);
        },
        arg("path"), arg("column") = "caption", arg("separator") = "");
}
