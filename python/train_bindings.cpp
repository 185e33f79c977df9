// kclip._C training: TrainConfig (fields as attributes and keyword arguments), AdamW, and the Trainer, whose
// model, loss and optimizer are the live C++ objects.
#include <kclip/train.h>

#include "module_bindings.h"

#include <pybind11/functional.h>
#include <pybind11/stl.h>
#include <pybind11/stl/filesystem.h>

namespace py = pybind11;

namespace {

using namespace kclip;

std::string to_json_text(const py::handle& value) {
  return py::module_::import("json").attr("dumps")(value).cast<std::string>();
}
py::object from_json_text(const std::string& text) { return py::module_::import("json").attr("loads")(text); }

void set_field(TrainConfig& c, const std::string& key, const py::handle& value) {
  if (py::hasattr(value, "__fspath__")) {  // pathlib paths for path fields
    c.set_json(key, to_json_text(py::module_::import("os").attr("fspath")(value)));
    return;
  }
  c.set_json(key, to_json_text(value));
}

py::dict step_dict(const StepResult& r) {
  py::dict d;
  d["step"] = r.step;
  d["loss"] = r.loss;
  for (auto [key, value] : {std::pair{"contrastive", r.contrastive}, {"distillation", r.distillation}, {"concept", r.concept}})
    d[key] = std::isfinite(value) ? py::cast(value) : py::none();
  d["lr"] = r.lr;
  d["grad_norm"] = r.grad_norm;
  d["logit_scale"] = r.logit_scale;
  d["skipped"] = r.skipped;
  return d;
}

}  // namespace

void bind_train(py::module_& m) {
  using py::arg;
  auto no_gil = py::call_guard<py::gil_scoped_release>();

  py::class_<TrainConfig>(m, "TrainConfig", "Every option of `kclip train` as an attribute (snake_case names).")
      .def(py::init([](const py::kwargs& kwargs) {
        TrainConfig c;
        for (const auto& [key, value] : kwargs) set_field(c, key.cast<std::string>(), value);
        return c;
      }))
      .def_static("from_json", &TrainConfig::from_json_file, arg("path"))
      .def_static("from_dict",
                  [](const py::dict& d) { return TrainConfig::from_json(to_json_text(d), "TrainConfig.from_dict"); },
                  arg("options"))
      .def("to_json", &TrainConfig::to_json)
      .def("to_dict", [](const TrainConfig& c) { return from_json_text(c.to_json()); })
      .def("validate", &TrainConfig::validate)
      .def_static("keys", &TrainConfig::keys)
      .def_static("help", &TrainConfig::help)
      .def("__getattr__",
           [](const TrainConfig& c, const std::string& key) {
             try {
               return from_json_text(c.get(key));
             } catch (const ValueError& e) {
               throw py::attribute_error(e.what());
             }
           })
      .def("__setattr__", [](TrainConfig& c, const std::string& key, const py::object& value) { set_field(c, key, value); })
      .def("__dir__", [](const TrainConfig&) { return TrainConfig::keys(); })
      .def("__eq__", [](const TrainConfig& a, const TrainConfig& b) { return a.to_json() == b.to_json(); })
      .def("__repr__", [](const TrainConfig& c) { return "kclip.TrainConfig(" + c.to_json() + ")"; })
      .def(py::pickle([](const TrainConfig& c) { return c.to_json(); },
                      [](const std::string& text) { return TrainConfig::from_json(text, "pickle"); }));

  m.def("learning_rate_at", &learning_rate_at, arg("config"), arg("step"), arg("total_steps"));

  py::class_<AdamW>(m, "AdamW", "AdamW over flat parameter buffers (the trainer's optimizer).")
      .def(py::init([](const py::list& groups, std::pair<double, double> betas, double eps) {
             std::vector<AdamW::Group> built;
             for (const auto& item : groups) {
               const auto group = item.cast<py::dict>();
               AdamW::Group g;
               g.weight_decay = group.contains("weight_decay") ? group["weight_decay"].cast<double>() : 0.0;
               if (!group.contains("params")) throw ValueError("AdamW: each group needs 'params'");
               const py::object params = group["params"];
               if (py::isinstance<py::dict>(params)) {
                 for (const auto& [name, t] : params.cast<py::dict>()) g.params.emplace_back(name.cast<std::string>(), t.cast<at::Tensor>());
               } else {
                 int64_t i = 0;
                 for (const auto& t : params) g.params.emplace_back(fmt::format("param{}", i++), t.cast<at::Tensor>());
               }
               built.push_back(std::move(g));
             }
             return std::make_unique<AdamW>(std::move(built), betas.first, betas.second, eps);
           }),
           arg("groups"), arg("betas") = std::pair<double, double>{0.9, 0.999}, arg("eps") = 1e-8,
           "groups: [{'params': {name: tensor} or [tensors], 'weight_decay': wd}]. The tensors move into flat buffers "
           "(same tensor objects, same values); step(lr) updates them from their .grad.")
      .def("step", &AdamW::step, arg("lr"), no_gil)
      .def("zero_grad", &AdamW::zero_grad)
      .def("grad_norm", &AdamW::grad_norm)
      .def_property_readonly("steps", &AdamW::steps)
      .def_property_readonly("last_lr", &AdamW::last_lr)
      .def_property_readonly("buffers", &AdamW::buffers)
      .def_property_readonly("grads", &AdamW::grads)
      .def_property_readonly("param_groups",
                             [](const AdamW& o) {
                               py::list groups;
                               for (int64_t g = 0; g < o.num_groups(); ++g) {
                                 py::dict d;
                                 py::list names, params;
                                 for (const auto& [name, p] : o.group(g).params) names.append(name), params.append(p);
                                 d["names"] = names;
                                 d["params"] = params;
                                 d["weight_decay"] = o.group(g).weight_decay;
                                 d["lr"] = o.last_lr();
                                 groups.append(d);
                               }
                               return groups;
                             })
      .def("state_dict", [](const AdamW& o) {
        py::dict d;
        for (const auto& item : o.state_dict()) d[py::str(item.key())] = item.value();
        py::dict meta;
        for (const auto& [k, v] : o.state_metadata()) meta[py::str(k)] = v;
        d["__metadata__"] = meta;
        return d;
      });

  py::class_<Trainer>(m, "Trainer")
      .def(py::init([](const py::object& config, const py::object& process_group, const py::kwargs& kwargs) {
             TrainConfig c = config.is_none() ? TrainConfig() : config.cast<TrainConfig>();
             for (const auto& [key, value] : kwargs) set_field(c, key.cast<std::string>(), value);
             ProcessGroupPtr group = python::to_process_group(process_group);
             py::gil_scoped_release release;
             return std::make_unique<Trainer>(c, group);
           }),
           arg("config") = py::none(), arg("process_group") = py::none(),
           "Trainer(config=None, process_group=None, **options): options override the config's fields.")
      .def(
          "fit",
          [](Trainer& t, const py::object& callback) {
            // After each step: Ctrl-C reaches Python (KeyboardInterrupt), then the caller's callback.
            t.on_step = [&t, callback](const StepResult& r) {
              py::gil_scoped_acquire acquire;
              if (PyErr_CheckSignals() != 0) throw py::error_already_set();
              if (!callback.is_none()) callback(py::cast(t, py::return_value_policy::reference), step_dict(r));
            };
            StepResult last;
            try {
              py::gil_scoped_release release;
              last = t.fit();
            } catch (...) {
              t.on_step = nullptr;
              throw;
            }
            t.on_step = nullptr;
            return step_dict(last);
          },
          arg("callback") = py::none(), "Trains to the end; callback(trainer, step_dict) after each step.")
      .def(
          "train_step",
          [](Trainer& t, const at::Tensor& images, const at::Tensor& text, const c10::optional<at::Tensor>& teacher,
             const c10::optional<at::Tensor>& concepts) {
            StepResult r;
            {
              py::gil_scoped_release release;
              r = t.train_step(images, text, teacher.value_or(at::Tensor()), concepts.value_or(at::Tensor()));
            }
            return step_dict(r);
          },
          arg("images"), arg("text"), arg("teacher") = py::none(), arg("concepts") = py::none())
      .def("save_checkpoint", &Trainer::save_checkpoint, no_gil)
      .def("resume", &Trainer::resume, arg("checkpoint") = "latest", no_gil)
      .def("log_metrics", [](Trainer& t, const py::dict& record) { t.log_metrics(to_json_text(record)); }, arg("record"))
      .def_property_readonly("model", [](Trainer& t) { return t.model().ptr(); })
      .def_property_readonly("loss", [](Trainer& t) { return t.loss().ptr(); })
      .def_property_readonly("optimizer", [](Trainer& t) -> AdamW& { return t.optimizer(); },
                             py::return_value_policy::reference_internal)
      .def_property_readonly("loader", [](Trainer& t) { return t.loader(); }, py::return_value_policy::reference_internal)
      .def_property_readonly("config", &Trainer::config)
      .def_property_readonly("step", &Trainer::step)
      .def_property_readonly("epoch", &Trainer::epoch)
      .def_property_readonly("total_steps", &Trainer::total_steps)
      .def_property_readonly("skipped_steps", &Trainer::skipped_steps)
      .def_property_readonly("rank", &Trainer::rank)
      .def_property_readonly("world_size", &Trainer::world_size)
      .def_property_readonly("run_dir", &Trainer::run_dir)
      .def_property_readonly("checkpoint_dir", &Trainer::checkpoint_dir)
      .def_property_readonly("device", [](const Trainer& t) { return t.device().str(); });

  m.def("latest_checkpoint", &latest_checkpoint, arg("checkpoints"));
}
