// kclip._C clusterer: KMeans and the clustering metrics. Heavy calls release the GIL.
#include <kclip/cluster.h>
#include <kclip/cluster_metrics.h>

#include <fmt/format.h>
#include <pybind11/stl.h>
#include <pybind11/stl/filesystem.h>
#include <torch/extension.h>

namespace py = pybind11;

void bind_cluster(py::module_& m) {
  using kclip::KMeans;
  using py::arg;
  auto no_gil = py::call_guard<py::gil_scoped_release>();
  auto self = py::return_value_policy::reference_internal;

  py::class_<KMeans>(m, "KMeans")
      .def(py::init([](int64_t k, int64_t iters, double tol, const std::string& init, int64_t n_init, uint64_t seed,
                       const std::string& metric, int64_t n_local_trials, int64_t memory_budget_mb,
                       int64_t batch_size, int64_t init_sample, const std::string& algorithm) {
             return KMeans(kclip::KMeansOptions(k)
                               .iters(iters)
                               .tol(tol)
                               .init(init)
                               .n_init(n_init)
                               .seed(seed)
                               .metric(metric)
                               .n_local_trials(n_local_trials)
                               .memory_budget_mb(memory_budget_mb)
                               .batch_size(batch_size)
                               .init_sample(init_sample)
                               .algorithm(algorithm));
           }),
           arg("k"), arg("iters") = 100, arg("tol") = 1e-4, arg("init") = "greedy-k-means++", arg("n_init") = 1,
           arg("seed") = 0, arg("metric") = "l2", arg("n_local_trials") = 0, arg("memory_budget_mb") = 256,
           arg("batch_size") = 0, arg("init_sample") = -1, arg("algorithm") = "auto")
      .def(
          "fit",
          [](KMeans& km, const at::Tensor& x, const c10::optional<at::Tensor>& init) -> KMeans& {
            py::gil_scoped_release release;
            return init ? km.fit(x, *init) : km.fit(x);
          },
          arg("x"), arg("init") = py::none(), self)
      .def("fit_minibatch", &KMeans::fit_minibatch, arg("shards"), self, no_gil)
      .def("predict", &KMeans::predict, arg("x"), no_gil)
      .def("transform", &KMeans::transform, arg("x"), no_gil)
      .def("soft_labels", &KMeans::soft_labels, arg("x"), arg("temperature"), arg("top_k") = 0, no_gil)
      .def("score", &KMeans::score, arg("x"), no_gil)
      .def_property_readonly("centroids", &KMeans::centroids)
      .def_property_readonly("inertia", &KMeans::inertia)
      .def_property_readonly("n_iter", &KMeans::n_iter)
      .def_property_readonly("inertia_history", &KMeans::inertia_history)
      .def_property_readonly("k", [](const KMeans& km) { return km.options().k(); })
      .def_property_readonly("metric", [](const KMeans& km) { return km.options().metric(); })
      .def_property_readonly("metadata", &KMeans::metadata)
      .def(
          "save",
          [](const KMeans& km, const std::filesystem::path& path, const std::map<std::string, std::string>& metadata) {
            km.save(path, metadata);
          },
          arg("path"), arg("metadata") = std::map<std::string, std::string>{})
      .def_static("load", &KMeans::load, arg("path"))
      .def("__repr__", [](const KMeans& km) {
        return fmt::format("KMeans(k={}, metric='{}', fitted={}, inertia={:.6g})", km.options().k(),
                           km.options().metric(), km.fitted(), km.inertia());
      });

  m.def("nmi", &kclip::nmi, arg("labels_a"), arg("labels_b"));
  m.def("purity", &kclip::purity, arg("labels_true"), arg("labels_pred"));
  m.def("adjusted_rand_index", &kclip::adjusted_rand_index, arg("labels_a"), arg("labels_b"));
}
