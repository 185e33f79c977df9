// kclip._C: thin bindings. Names mirror the C++ API; conversion and validation live in the C++ library.
#include <kclip/kclip.h>

#include <pybind11/stl.h>
#include <pybind11/stl/filesystem.h>
#include <torch/extension.h>

namespace py = pybind11;

void bind_losses(py::module_& m);   // loss_bindings.cpp
void bind_cluster(py::module_& m);  // cluster_bindings.cpp
void bind_llama(py::module_& m);    // llama_bindings.cpp
void bind_clip(py::module_& m);     // clip_bindings.cpp
void bind_image(py::module_& m);    // image_bindings.cpp
void bind_data(py::module_& m);     // data_bindings.cpp
void bind_train(py::module_& m);    // train_bindings.cpp
void bind_eval(py::module_& m);     // eval_bindings.cpp
void bind_pipeline(py::module_& m); // pipeline_bindings.cpp

namespace {

// dict[str, Tensor] -> TensorDict, naming the key whose value is not a tensor.
kclip::TensorDict to_tensor_dict(const py::dict& tensors) {
  kclip::TensorDict result;
  result.reserve(tensors.size());
  for (const auto& [key, value] : tensors) {
    if (!py::isinstance<py::str>(key))
      throw kclip::ValueError(fmt::format("tensor names must be str, got {}", py::str(py::type::of(key)).cast<std::string>()));
    auto name = key.cast<std::string>();
    if (!THPVariable_Check(value.ptr()))
      throw kclip::ValueError(fmt::format("tensors['{}'] is {}: expected a torch.Tensor", name,
                                          py::str(py::type::of(value)).cast<std::string>()));
    if (result.contains(name)) throw kclip::ValueError(fmt::format("tensor name '{}' given twice", name));
    result.insert(name, THPVariable_Unpack(value.ptr()));
  }
  return result;
}

kclip::Metadata to_metadata(const py::object& metadata) {
  kclip::Metadata result;
  if (metadata.is_none()) return result;
  if (!py::isinstance<py::dict>(metadata)) throw kclip::ValueError("metadata must be a dict[str, str] or None");
  for (const auto& [key, value] : metadata.cast<py::dict>()) {
    if (!py::isinstance<py::str>(key) || !py::isinstance<py::str>(value))
      throw kclip::ValueError(fmt::format("metadata[{}] = {}: safetensors metadata must map str to str",
                                          py::repr(key).cast<std::string>(), py::repr(value).cast<std::string>()));
    result[key.cast<std::string>()] = value.cast<std::string>();
  }
  return result;
}

py::dict to_py_dict(const kclip::TensorDict& tensors) {
  py::dict result;
  for (const auto& item : tensors) result[py::str(item.key())] = py::cast(item.value());
  return result;
}

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "kclip C++ core (LibTorch)";
  m.attr("__version__") = kclip::version();
  py::register_exception<kclip::Error>(m, "Error", PyExc_RuntimeError);
  bind_losses(m);
  bind_cluster(m);
  bind_llama(m);
  bind_clip(m);
  bind_image(m);
  bind_data(m);
  bind_train(m);
  bind_eval(m);
  bind_pipeline(m);

  // runtime
  m.def("init", &kclip::init, "Set LibTorch's threads and check the BLAS (runs once; import kclip calls it).");
  m.def("default_num_threads", &kclip::default_num_threads);
  m.def("num_threads", &kclip::num_threads);
  m.def("set_num_threads", &kclip::set_num_threads, py::arg("threads"));
  m.def("blas_library", &kclip::blas_library);
  m.def("blas_is_openblas", &kclip::blas_is_openblas);
  m.def("blas_threading", &kclip::blas_threading);
  m.def("blas_core", &kclip::blas_core, "OpenBLAS's kernel set in use (\"Haswell\", \"SkylakeX\", ...), \"\" if not OpenBLAS.");
  m.def("available_cpus", &kclip::available_cpus);
  m.def("retain_freed_memory", &kclip::retain_freed_memory,
        "glibc malloc keeps freed blocks (<= 32 MiB) for reuse instead of returning them to the system: no page "
        "faults on each step's fresh activations. Process-wide; the Trainer calls it. False if nothing changed "
        "(not glibc, or MALLOC_*_ environment variables set).");
  m.def("runtime_summary", &kclip::runtime_summary);

  // safetensors
  m.def(
      "load_safetensors",
      [](const std::filesystem::path& path) {
        kclip::TensorDict tensors;
        {
          py::gil_scoped_release release;
          tensors = kclip::load_safetensors(path);
        }
        return to_py_dict(tensors);
      },
      py::arg("path"));
  m.def(
      "save_safetensors",
      [](const std::filesystem::path& path, const py::dict& tensors, const py::object& metadata) {
        kclip::TensorDict dict = to_tensor_dict(tensors);
        kclip::Metadata meta = to_metadata(metadata);
        py::gil_scoped_release release;
        kclip::save_safetensors(path, dict, meta);
      },
      py::arg("path"), py::arg("tensors"), py::arg("metadata") = py::none());
  m.def("load_safetensors_metadata", &kclip::load_safetensors_metadata, py::arg("path"));

  py::class_<kclip::SafetensorsFile>(m, "SafetensorsFile")
      .def(py::init<const std::filesystem::path&>(), py::arg("path"))
      .def_property_readonly("path", &kclip::SafetensorsFile::path)
      .def_property_readonly("metadata", &kclip::SafetensorsFile::metadata)
      .def("keys", &kclip::SafetensorsFile::keys)
      .def("__contains__", &kclip::SafetensorsFile::contains)
      .def("__len__", [](const kclip::SafetensorsFile& f) { return f.entries().size(); })
      .def("get", &kclip::SafetensorsFile::get, py::arg("name"))
      .def("__getitem__", &kclip::SafetensorsFile::get)
      .def("load", [](const kclip::SafetensorsFile& f) { return to_py_dict(f.load()); })
      .def("dtype", [](const kclip::SafetensorsFile& f, const std::string& name) {
        for (const auto& e : f.entries()) if (e.name == name) return e.dtype;
        throw kclip::Error(fmt::format("{}: no tensor named '{}'", f.path().string(), name));
      }, py::arg("name"));
}
