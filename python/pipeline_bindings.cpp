// kclip._C pipeline: kclip.run(config) and kclip.plan_run(config), config a dict (run.json's keys) or a path.
#include "module_bindings.h"

#include <kclip/pipeline.h>

namespace py = pybind11;

namespace {

kclip::RunConfig run_config_of(const py::object& config) {
  if (py::isinstance<py::dict>(config))
    return kclip::RunConfig::from_json(py::module_::import("json").attr("dumps")(config).cast<std::string>(), "config");
  return kclip::RunConfig::from_json_file(py::module_::import("os").attr("fspath")(config).cast<std::string>());
}

py::list plan_list(const std::vector<kclip::StagePlan>& plans, const std::vector<double>& seconds = {}) {
  py::list out;
  for (size_t i = 0; i < plans.size(); ++i) {
    py::dict d;
    d["stage"] = plans[i].stage;
    d["action"] = plans[i].action;
    d["reason"] = plans[i].reason;
    d["fingerprint"] = plans[i].fingerprint;
    if (i < seconds.size()) d["seconds"] = seconds[i];
    out.append(d);
  }
  return out;
}

}  // namespace

void bind_pipeline(py::module_& m) {
  using py::arg;
  m.def("plan_run", [](const py::object& config) { return plan_list(kclip::plan_run(run_config_of(config))); },
        arg("config"), "What kclip.run would do with each stage (run, resume, skip, off) and why.");
  m.def(
      "run",
      [](const py::object& config, bool dry_run) -> py::object {
        const kclip::RunConfig c = run_config_of(config);
        if (dry_run) return plan_list(kclip::plan_run(c));
        kclip::RunSummary summary;
        {
          py::gil_scoped_release release;
          summary = kclip::run_pipeline(c);
        }
        py::dict d;
        d["run_dir"] = c.run_dir;
        d["stages"] = plan_list(summary.stages, summary.seconds);
        d["checkpoint"] = summary.checkpoint.string();
        d["results"] = summary.results_json.empty() ? py::object(py::none())
                                                    : py::module_::import("json").attr("loads")(summary.results_json);
        return d;
      },
      arg("config"), arg("dry_run") = false,
      "`kclip run`: embed, cluster, train, eval, export, plots in config['run_dir'] (a dict of run.json's keys, or "
      "the path of a run.json). Returns {run_dir, stages, checkpoint, results}; dry_run returns the plan.");
}
