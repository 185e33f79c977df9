// kclip._C loss modules: ContrastiveLoss, TextDistillationLoss, ConceptLoss, KnowledgeClipLoss. Calls run the C++
// modules on the caller's torch tensors; autograd records them as for any PyTorch op.
#include <kclip/loss_knowledge_clip.h>

#include "module_bindings.h"

#include <pybind11/stl.h>
#include <torch/csrc/distributed/c10d/ProcessGroup.hpp>

namespace py = pybind11;
using kclip::python::bind_module_common;
using kclip::python::to_process_group;

namespace {

kclip::ContrastiveLossOptions contrastive_options(double init_logit_scale, double max_logit_scale, bool learn,
                                                  bool local_loss, bool gather_with_grad, const py::object& group) {
  return kclip::ContrastiveLossOptions()
      .init_logit_scale(init_logit_scale)
      .max_logit_scale(max_logit_scale)
      .learn_logit_scale(learn)
      .local_loss(local_loss)
      .gather_with_grad(gather_with_grad)
      .process_group(to_process_group(group));
}

// A skipped term's module is an empty holder: None in Python.
template <typename Holder>
std::shared_ptr<typename Holder::ContainedType> optional_module(const Holder& holder) {
  return holder.is_empty() ? nullptr : holder.ptr();
}

// Python-visible defaults, shared by ContrastiveLoss and KnowledgeClipLoss.
const double kInitScale = std::log(1.0 / 0.07), kMaxScale = std::log(100.0);

}  // namespace

void bind_losses(py::module_& m) {
  using namespace kclip;
  using py::arg;
  auto no_gil = py::call_guard<py::gil_scoped_release>();

  py::class_<ContrastiveLossImpl, std::shared_ptr<ContrastiveLossImpl>> contrastive(m, "ContrastiveLoss");
  contrastive
      .def(py::init([](double init, double max, bool learn, bool local, bool with_grad, const py::object& group) {
             return std::make_shared<ContrastiveLossImpl>(contrastive_options(init, max, learn, local, with_grad, group));
           }),
           arg("init_logit_scale") = kInitScale, arg("max_logit_scale") = kMaxScale, arg("learn_logit_scale") = true,
           arg("local_loss") = false, arg("gather_with_grad") = false, arg("process_group") = py::none())
      .def("__call__", &ContrastiveLossImpl::forward, arg("image_features"), arg("text_features"), no_gil)
      .def("forward", &ContrastiveLossImpl::forward, arg("image_features"), arg("text_features"), no_gil)
      .def("logits", &ContrastiveLossImpl::logits, arg("image_features"), arg("text_features"), no_gil)
      .def("clamp_logit_scale_", &ContrastiveLossImpl::clamp_logit_scale_)
      .def_property_readonly("logit_scale", [](const ContrastiveLossImpl& l) { return l.logit_scale; });
  bind_module_common(contrastive);

  py::class_<TextDistillationLossImpl, std::shared_ptr<TextDistillationLossImpl>> distill(m, "TextDistillationLoss");
  distill
      .def(py::init([](int64_t student_dim, int64_t teacher_dim, const std::string& head, int64_t hidden,
                       const std::string& kind, const std::string& reduction) {
             return std::make_shared<TextDistillationLossImpl>(
                 TextDistillationLossOptions(student_dim, teacher_dim).head(head).hidden(hidden).kind(kind).reduction(
                     reduction));
           }),
           arg("student_dim"), arg("teacher_dim"), arg("head") = "linear", arg("hidden") = 64, arg("kind") = "mse",
           arg("reduction") = "mean")
      .def("__call__", &TextDistillationLossImpl::forward, arg("student_text"), arg("teacher"), no_gil)
      .def("forward", &TextDistillationLossImpl::forward, arg("student_text"), arg("teacher"), no_gil)
      .def("project", &TextDistillationLossImpl::project, arg("student_text"), no_gil)
      .def("standardize_targets", &TextDistillationLossImpl::standardize_targets, arg("teacher"))
      .def("set_target_statistics", &TextDistillationLossImpl::set_target_statistics, arg("mean"), arg("std"))
      .def_static("target_statistics", &TextDistillationLossImpl::target_statistics, arg("teacher"));
  bind_module_common(distill);

  py::class_<ConceptLossImpl, std::shared_ptr<ConceptLossImpl>> concept_loss(m, "ConceptLoss");
  concept_loss
      .def(py::init([](int64_t embed_dim, int64_t num_concepts, const std::string& mode, int64_t hidden) {
             return std::make_shared<ConceptLossImpl>(ConceptLossOptions(embed_dim, num_concepts).mode(mode).hidden(hidden));
           }),
           arg("embed_dim"), arg("num_concepts"), arg("mode") = "per_modality", arg("hidden") = 64)
      .def("__call__", &ConceptLossImpl::forward, arg("image_embed"), arg("text_embed"), arg("labels"), no_gil)
      .def("forward", &ConceptLossImpl::forward, arg("image_embed"), arg("text_embed"), arg("labels"), no_gil)
      .def("logits", &ConceptLossImpl::logits, arg("image_embed"), arg("text_embed"), no_gil);
  bind_module_common(concept_loss);
  m.def("soft_cross_entropy",
        [](const at::Tensor& logits, const at::Tensor& labels) { return soft_cross_entropy(logits, labels); },
        arg("logits"), arg("labels"), no_gil);

  py::class_<KnowledgeClipLossImpl, std::shared_ptr<KnowledgeClipLossImpl>> kcl(m, "KnowledgeClipLoss");
  auto forward = [](KnowledgeClipLossImpl& loss, const at::Tensor& image, const at::Tensor& text,
                    const c10::optional<at::Tensor>& teacher, const c10::optional<at::Tensor>& labels) {
    KnowledgeClipLossOutput out;
    {
      py::gil_scoped_release release;
      out = loss.forward(image, text, teacher.value_or(at::Tensor()), labels.value_or(at::Tensor()));
    }
    py::dict terms;  // open_clip-style dict; skipped terms are absent
    terms["loss"] = out.total;
    if (out.contrastive.defined()) terms["contrastive"] = out.contrastive;
    if (out.distillation.defined()) terms["distillation"] = out.distillation;
    if (out.concept.defined()) terms["concept"] = out.concept;
    return terms;
  };
  kcl.def(py::init([](int64_t embed_dim, int64_t teacher_dim, int64_t num_concepts, double alpha, double beta,
                      double gamma, const std::string& distill_head, int64_t distill_hidden,
                      const std::string& distill_kind, const std::string& concept_mode, int64_t concept_hidden,
                      double init_logit_scale, bool local_loss, bool gather_with_grad, const py::object& group) {
            return std::make_shared<KnowledgeClipLossImpl>(
                KnowledgeClipLossOptions(embed_dim, teacher_dim, num_concepts)
                    .alpha(alpha).beta(beta).gamma(gamma)
                    .distill_head(distill_head).distill_hidden(distill_hidden).distill_kind(distill_kind)
                    .concept_mode(concept_mode).concept_hidden(concept_hidden)
                    .contrastive(contrastive_options(init_logit_scale, kMaxScale, true, local_loss, gather_with_grad, group)));
          }),
          arg("embed_dim"), arg("teacher_dim") = 0, arg("num_concepts") = 0, arg("alpha") = 1.0, arg("beta") = 0.01,
          arg("gamma") = 1.0, arg("distill_head") = "linear", arg("distill_hidden") = 64, arg("distill_kind") = "mse",
          arg("concept_mode") = "per_modality", arg("concept_hidden") = 64, arg("init_logit_scale") = kInitScale,
          arg("local_loss") = false, arg("gather_with_grad") = false, arg("process_group") = py::none())
      .def("__call__", forward, arg("image_features"), arg("text_features"), arg("teacher") = py::none(),
           arg("concept_labels") = py::none())
      .def("forward", forward, arg("image_features"), arg("text_features"), arg("teacher") = py::none(),
           arg("concept_labels") = py::none())
      .def_property_readonly("contrastive", [](const KnowledgeClipLossImpl& l) { return optional_module(l.contrastive); })
      .def_property_readonly("distillation", [](const KnowledgeClipLossImpl& l) { return optional_module(l.distillation); })
      .def_property_readonly("concept", [](const KnowledgeClipLossImpl& l) { return optional_module(l.concept); });
  bind_module_common(kcl);
}
