#pragma once
// What every kclip torch::nn module offers in Python, with PyTorch's names: parameters(), named_parameters(),
// buffers(), state_dict(), load_state_dict(), to(), train(), eval(), training, zero_grad(). Parameters are the
// module's own tensors, so torch.optim updates them in place and gradients from loss.backward() land on them.
#include <kclip/distributed.h>
#include <kclip/error.h>

#include <pybind11/pybind11.h>
#include <torch/extension.h>
#include <torch/csrc/Device.h>
#include <torch/csrc/Dtype.h>

#include <set>
#include <string>

namespace kclip::python {

namespace py = pybind11;

inline py::dict named_tensors(const torch::OrderedDict<std::string, at::Tensor>& items) {
  py::dict d;
  for (const auto& item : items) d[py::str(item.key())] = item.value();
  return d;
}

// torch.device, a device string, or a torch.dtype, as Module.to() accepts.
inline void module_to(torch::nn::Module& m, const py::object& target) {
  if (THPDtype_Check(target.ptr())) {
    m.to(reinterpret_cast<THPDtype*>(target.ptr())->scalar_type);
  } else if (THPDevice_Check(target.ptr())) {
    m.to(reinterpret_cast<THPDevice*>(target.ptr())->device);
  } else if (py::isinstance<py::str>(target)) {
    m.to(c10::Device(target.cast<std::string>()));
  } else {
    throw ValueError("to(): expected a torch.device, a device string or a torch.dtype");
  }
}

inline void load_state_dict(torch::nn::Module& m, const py::dict& state, bool strict) {
  auto params = m.named_parameters(), buffers = m.named_buffers();
  std::set<std::string> expected, given, missing, unexpected;
  for (const auto& p : params) expected.insert(p.key());
  for (const auto& b : buffers) expected.insert(b.key());
  for (const auto& [key, value] : state) given.insert(key.cast<std::string>());
  for (const auto& k : expected) if (!given.count(k)) missing.insert(k);
  for (const auto& k : given) if (!expected.count(k)) unexpected.insert(k);
  if (strict && (!missing.empty() || !unexpected.empty()))
    throw ValueError(fmt::format("load_state_dict: missing keys [{}], unexpected keys [{}]", fmt::join(missing, ", "),
                                 fmt::join(unexpected, ", ")));
  torch::NoGradGuard no_grad;
  for (const auto& [key, value] : state) {
    auto name = key.cast<std::string>();
    at::Tensor* target = params.find(name) ? params.find(name) : buffers.find(name);
    if (target == nullptr) continue;
    auto source = value.cast<at::Tensor>();
    if (source.sizes() != target->sizes())
      throw ValueError(fmt::format("load_state_dict: '{}' has shape [{}], expected [{}]", name,
                                   fmt::join(source.sizes(), ", "), fmt::join(target->sizes(), ", ")));
    target->copy_(source);
  }
}

// None means torch.distributed's default group when it is initialised, else a single process (like open_clip).
inline ProcessGroupPtr to_process_group(const py::object& group) {
  py::object obj = group;
  if (obj.is_none()) {
    py::module_ dist = py::module_::import("torch.distributed");
    if (!dist.attr("is_available")().cast<bool>() || !dist.attr("is_initialized")().cast<bool>()) return {};
    obj = dist.attr("distributed_c10d").attr("_get_default_group")();
  }
  try {
    return obj.cast<ProcessGroupPtr>();
  } catch (const py::cast_error&) {
    throw ValueError(fmt::format("process_group: expected a torch.distributed ProcessGroup or None, got {}",
                                 py::repr(obj).cast<std::string>()));
  }
}

template <typename Impl>
void bind_module_common(py::class_<Impl, std::shared_ptr<Impl>>& cls) {
  cls.def("parameters", [](Impl& m) { return m.parameters(); })
      .def("named_parameters", [](Impl& m) { return named_tensors(m.named_parameters()); })
      .def("buffers", [](Impl& m) { return m.buffers(); })
      .def("state_dict",
           [](Impl& m) {
             py::dict d;
             for (const auto& p : m.named_parameters()) d[py::str(p.key())] = p.value().detach();
             for (const auto& b : m.named_buffers()) d[py::str(b.key())] = b.value().detach();
             return d;
           })
      .def("load_state_dict", [](Impl& m, const py::dict& state, bool strict) { load_state_dict(m, state, strict); },
           py::arg("state_dict"), py::arg("strict") = true)
      .def("to", [](std::shared_ptr<Impl> m, const py::object& target) { module_to(*m, target); return m; })
      .def("train", [](std::shared_ptr<Impl> m, bool mode) { m->train(mode); return m; }, py::arg("mode") = true)
      .def("eval", [](std::shared_ptr<Impl> m) { m->eval(); return m; })
      .def_property_readonly("training", [](const Impl& m) { return m.is_training(); })
      .def("zero_grad", [](Impl& m) { m.zero_grad(); })
      .def("__repr__", [](const Impl& m) {
        std::ostringstream out;
        m.pretty_print(out);
        return out.str();
      });
}

}  // namespace kclip::python
