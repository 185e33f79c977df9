// kclip._C Llama: the model, its tokenizer and the teacher that pools caption embeddings.
#include <kclip/teacher.h>

#include "module_bindings.h"

#include <pybind11/stl.h>
#include <pybind11/stl/filesystem.h>

namespace py = pybind11;
using kclip::python::bind_module_common;

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

  py::class_<Teacher, std::shared_ptr<Teacher>>(m, "Teacher")
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
            if (!dtype.is_none()) kclip::python::module_to(*teacher->model(), dtype);
            return teacher;
          },
          arg("path"), arg("tokenizer") = py::none(), arg("pooling") = "mean", arg("layer") = -1,
          arg("max_length") = 512, arg("bos") = true, arg("normalize") = false, arg("token_budget") = 8192,
          arg("dtype") = py::none(), arg("device") = py::none())
      .def("embed_ids", &LlamaTeacher::embed_ids, arg("ids"), no_gil)
      .def_property_readonly("model", [](LlamaTeacher& t) { return t.model().ptr(); });
}
