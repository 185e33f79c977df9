// kclip._C CLIP: the config, the model (encode_image, encode_text, forward, load) and the tokenizer.
#include <kclip/clip.h>
#include <kclip/clip_tokenizer.h>

#include "module_bindings.h"

#include <pybind11/stl.h>
#include <pybind11/stl/filesystem.h>

namespace py = pybind11;

void bind_clip(py::module_& m) {
  using namespace kclip;
  using py::arg;
  auto no_gil = py::call_guard<py::gil_scoped_release>();

  py::class_<CLIPConfig>(m, "CLIPConfig")
      .def(py::init<>())
      .def_static("from_json", &CLIPConfig::from_json, arg("path"))
      .def_static("named", &CLIPConfig::named, arg("name"))
      .def_readwrite("embed_dim", &CLIPConfig::embed_dim)
      .def_readwrite("image_size", &CLIPConfig::image_size)
      .def_readwrite("patch_size", &CLIPConfig::patch_size)
      .def_readwrite("vision_width", &CLIPConfig::vision_width)
      .def_readwrite("vision_layers", &CLIPConfig::vision_layers)
      .def_readwrite("vision_heads", &CLIPConfig::vision_heads)
      .def_readwrite("context_length", &CLIPConfig::context_length)
      .def_readwrite("vocab_size", &CLIPConfig::vocab_size)
      .def_readwrite("text_width", &CLIPConfig::text_width)
      .def_readwrite("text_layers", &CLIPConfig::text_layers)
      .def_readwrite("text_heads", &CLIPConfig::text_heads)
      .def_readwrite("activation", &CLIPConfig::activation);

  py::class_<CLIPImpl, std::shared_ptr<CLIPImpl>> clip(m, "CLIP");
  clip.def(py::init<CLIPConfig>(), arg("config"))
      .def_static(
          "load",
          [](const std::filesystem::path& path, const std::optional<CLIPConfig>& config) {
            return CLIPImpl::load(path, config ? &*config : nullptr);
          },
          arg("path"), arg("config") = py::none(), no_gil)
      .def("save", &CLIPImpl::save, arg("path"), arg("layout") = "openai", no_gil)
      .def("encode_image", &CLIPImpl::encode_image, arg("pixels"), no_gil)
      .def("encode_text", &CLIPImpl::encode_text, arg("ids"), no_gil)
      .def("__call__", &CLIPImpl::forward, arg("pixels"), arg("ids"), no_gil)
      .def("forward", &CLIPImpl::forward, arg("pixels"), arg("ids"), no_gil)
      .def("set_grad_checkpointing", &CLIPImpl::set_grad_checkpointing, arg("enable") = true)
      .def_property_readonly("config", &CLIPImpl::config)
      .def_property_readonly("logit_scale", [](const CLIPImpl& c) { return c.logit_scale; });
  kclip::python::bind_module_common(clip);

  py::class_<ClipTokenizer>(m, "ClipTokenizer")
      .def(py::init([](const std::optional<std::filesystem::path>& path, int64_t context_length) {
             return ClipTokenizer(path.value_or(std::filesystem::path{}), context_length);
           }),
           arg("path") = py::none(), arg("context_length") = 77)
      .def_static("default_vocab_path", &ClipTokenizer::default_vocab_path)
      .def("encode", &ClipTokenizer::encode, arg("text"))
      .def("decode", &ClipTokenizer::decode, arg("ids"))
      .def(
          "__call__",
          [](const ClipTokenizer& t, const py::object& texts, const std::optional<int64_t>& context_length) {
            std::vector<std::string> batch;
            if (py::isinstance<py::str>(texts)) batch.push_back(texts.cast<std::string>());
            else batch = texts.cast<std::vector<std::string>>();
            py::gil_scoped_release release;
            return t(batch, context_length.value_or(0));
          },
          arg("texts"), arg("context_length") = py::none())
      .def_property_readonly("sot_token_id", &ClipTokenizer::sot_token_id)
      .def_property_readonly("eot_token_id", &ClipTokenizer::eot_token_id)
      .def_property_readonly("vocab_size", &ClipTokenizer::vocab_size)
      .def_property_readonly("context_length", &ClipTokenizer::context_length)
      .def_property_readonly("path", &ClipTokenizer::path)
      // picklable (DataLoader workers started with spawn): the vocabulary is re-read from its path
      .def(py::pickle(
          [](const ClipTokenizer& t) { return py::make_tuple(t.path().string(), t.context_length()); },
          [](const py::tuple& state) {
            return ClipTokenizer(state[0].cast<std::string>(), state[1].cast<int64_t>());
          }));
}
