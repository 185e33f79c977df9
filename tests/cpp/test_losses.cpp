// Loss modules in C++: gradients (w.r.t. features and parameters) against finite differences, defining
// properties, and argument errors. Values against independent formulas are in tests/python/test_losses.py.
#include "gradcheck.h"
#include "testing.h"

#include <kclip/error.h>
#include <kclip/loss_knowledge_clip.h>

#include <torch/torch.h>

#include <cmath>

using kclip::testing::gradcheck;
using kclip::testing::with_parameters;

namespace {

torch::Tensor leaf(std::vector<int64_t> shape) { return torch::randn(shape, torch::kDouble).requires_grad_(); }
torch::Tensor soft_labels(int64_t batch, int64_t k) { return torch::softmax(torch::randn({batch, k}, torch::kDouble), 1); }

}  // namespace

TEST_CASE("losses: gradcheck of every module w.r.t. features and parameters (float64)") {
  torch::manual_seed(0);
  auto img = leaf({4, 3}), txt = leaf({4, 3});

  SUBCASE("ContrastiveLoss") {
    kclip::ContrastiveLoss loss;
    loss->to(torch::kDouble);
    CHECK(gradcheck([&] { return loss->forward(img, txt); }, with_parameters(*loss, {img, txt})));
  }
  SUBCASE("TextDistillationLoss, linear and mlp heads, mse and cosine") {
    auto teacher = torch::randn({4, 5}, torch::kDouble);
    for (const char* head : {"linear", "mlp"})
      for (const char* kind : {"mse", "cosine"}) {
        INFO(head << " " << kind);
        kclip::TextDistillationLoss loss(kclip::TextDistillationLossOptions(3, 5).head(head).hidden(4).kind(kind));
        loss->to(torch::kDouble);
        CHECK(gradcheck([&] { return loss->forward(txt, teacher); }, with_parameters(*loss, {txt})));
      }
  }
  SUBCASE("ConceptLoss, per-modality and concat, soft and hard labels") {
    for (const char* mode : {"per_modality", "concat"})
      for (auto labels : {soft_labels(4, 5), torch::tensor({0, 4, 2, 2}, torch::kLong)}) {
        INFO(mode);
        kclip::ConceptLoss loss(kclip::ConceptLossOptions(3, 5).mode(mode).hidden(4));
        loss->to(torch::kDouble);
        CHECK(gradcheck([&] { return loss->forward(img, txt, labels); }, with_parameters(*loss, {img, txt})));
      }
  }
  SUBCASE("KnowledgeClipLoss") {
    kclip::KnowledgeClipLoss loss(kclip::KnowledgeClipLossOptions(3, 5, 4).distill_head("mlp").distill_hidden(4));
    loss->to(torch::kDouble);
    auto teacher = torch::randn({4, 5}, torch::kDouble);
    auto labels = soft_labels(4, 4);
    CHECK(gradcheck([&] { return loss->forward(img, txt, teacher, labels).total; }, with_parameters(*loss, {img, txt})));
  }
}

TEST_CASE("losses: the gradient check can fail") {
  auto x = leaf({3});
  // A function whose autograd gradient is deliberately wrong: the check must notice.
  auto wrong = [&] { return (x.detach() * x.detach()).sum() + x.sum(); };
  CHECK_FALSE(gradcheck(wrong, {x}));
}

TEST_CASE("losses: contrastive properties") {
  torch::manual_seed(1);
  kclip::ContrastiveLoss loss;
  CHECK(loss->logit_scale.item<double>() == doctest::Approx(std::log(1 / 0.07)));
  auto img = torch::randn({8, 16});
  // Matching pairs identical: the loss is far below chance level log(8); swapping pairs raises it.
  const double aligned = loss->forward(img, img).item<double>();
  const double shuffled = loss->forward(img, img.roll(1, 0)).item<double>();
  CHECK(aligned < 0.1);
  CHECK(shuffled > std::log(8.0));
  // Symmetric in its arguments, invariant to feature scale (features are normalised).
  auto txt = torch::randn({8, 16});
  CHECK(loss->forward(img, txt).item<double>() == doctest::Approx(loss->forward(txt, img).item<double>()));
  CHECK(loss->forward(img * 7, txt).item<double>() == doctest::Approx(loss->forward(img, txt).item<double>()));
  // Clamp to log(100), in place.
  { torch::NoGradGuard g; loss->logit_scale.fill_(9.0); }
  loss->clamp_logit_scale_();
  CHECK(loss->logit_scale.item<double>() == doctest::Approx(std::log(100.0)));
  // A fixed temperature is a buffer, not a parameter.
  kclip::ContrastiveLoss fixed(kclip::ContrastiveLossOptions().learn_logit_scale(false));
  CHECK(fixed->parameters().empty());
  CHECK(fixed->buffers().size() == 1);
}

TEST_CASE("losses: distillation target statistics standardise outlier dimensions") {
  torch::manual_seed(2);
  auto teacher = torch::randn({200, 3}) * torch::tensor({1.0, 1000.0, 0.001}) + 4;
  auto [mean, std] = kclip::TextDistillationLossImpl::target_statistics(teacher);
  kclip::TextDistillationLoss loss(kclip::TextDistillationLossOptions(2, 3));
  loss->set_target_statistics(mean, std);
  auto z = loss->standardize_targets(teacher);
  CHECK(torch::allclose(z.mean(0), torch::zeros(3), 1e-3, 1e-3));  // float32 statistics
  CHECK(torch::allclose(z.std(0, false), torch::ones(3), 1e-3, 1e-3));
  CHECK_THROWS_AS(loss->set_target_statistics(mean.narrow(0, 0, 2), std), kclip::ValueError);
}

TEST_CASE("losses: zero weights skip a term and its inputs") {
  kclip::KnowledgeClipLoss gamma_only(kclip::KnowledgeClipLossOptions(4, 0, 0).alpha(0).beta(0));
  CHECK(gamma_only->distillation.is_empty());
  CHECK(gamma_only->concept.is_empty());
  auto out = gamma_only->forward(torch::randn({3, 4}), torch::randn({3, 4}));
  CHECK(out.total.defined());
  CHECK_FALSE(out.distillation.defined());
  CHECK(torch::equal(out.total, out.contrastive));

  kclip::KnowledgeClipLoss needs_labels(kclip::KnowledgeClipLossOptions(4, 0, 3).alpha(0));
  CHECK_THROWS_WITH_AS(needs_labels->forward(torch::randn({3, 4}), torch::randn({3, 4})),
                       doctest::Contains("needs concept labels"), kclip::ValueError);
  CHECK_THROWS_AS(kclip::KnowledgeClipLoss(kclip::KnowledgeClipLossOptions(4, 0, 0).alpha(0).beta(0).gamma(-1)),
                  kclip::ValueError);
}

TEST_CASE("losses: argument errors name the module, the argument and the expectation") {
  kclip::ContrastiveLoss loss;
  CHECK_THROWS_WITH_AS(loss->forward(torch::randn({4}), torch::randn({4, 2})),
                       doctest::Contains("ContrastiveLoss: image_features has shape [4]: expected [batch, dim]"),
                       kclip::ValueError);
  kclip::ConceptLoss concept(kclip::ConceptLossOptions(2, 3));
  CHECK_THROWS_WITH_AS(concept->forward(torch::randn({2, 2}), torch::randn({2, 2}), torch::full({2, 3}, 0.5)),
                       doctest::Contains("soft label row 0 sums to 1.5"), kclip::ValueError);
  CHECK_THROWS_WITH_AS(concept->forward(torch::randn({2, 2}), torch::randn({2, 2}), torch::ones({2}, torch::kInt)),
                       doctest::Contains("expected soft labels (floating) or class ids (int64)"), kclip::ValueError);
  CHECK_THROWS_AS(kclip::ConceptLoss(kclip::ConceptLossOptions(2, 3).mode("sum")), kclip::ValueError);
  CHECK_THROWS_AS(kclip::TextDistillationLoss(kclip::TextDistillationLossOptions(2, 3).reduction("max")),
                  kclip::ValueError);
}
