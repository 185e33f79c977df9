// The linear probe: frozen image features → L2-regularised multinomial logistic regression fitted with L-BFGS,
// its strength chosen on a validation split of the training set (the CLIP paper's protocol, scikit-learn's C).
#include <kclip/error.h>
#include <kclip/eval.h>

#include "eval/eval_data.h"

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <torch/nn/functional/loss.h>
#include <torch/optim/lbfgs.h>

#include <fstream>
#include <numeric>
#include <random>
#include <sstream>
#include <unordered_map>

namespace kclip {
namespace fs = std::filesystem;

std::pair<at::Tensor, at::Tensor> fit_logistic_regression(const at::Tensor& x_in, const at::Tensor& y_in,
                                                          int64_t classes, double c, int64_t max_iter) {
  const char* who = "fit_logistic_regression";
  if (!x_in.defined() || x_in.dim() != 2 || !y_in.defined() || y_in.dim() != 1 || y_in.size(0) != x_in.size(0) ||
      x_in.size(0) == 0)
    fail_value("{}: expected features [N, D] and labels [N]", who);
  if (!(c > 0) || classes < 2 || max_iter < 1) fail_value("{}: C must be > 0, classes >= 2, max_iter >= 1", who);
  // float64 throughout: L-BFGS's curvature pairs and line search need the precision scikit-learn has.
  const at::Tensor x = x_in.to(at::kCPU, at::kDouble), y = y_in.to(at::kCPU, at::kLong);
  at::Tensor w = at::zeros({x.size(1), classes}, at::kDouble).requires_grad_();
  at::Tensor b = at::zeros({classes}, at::kDouble).requires_grad_();
  // scikit-learn minimises ½‖W‖² + C·Σ CE; divided by C·N: mean CE + ‖W‖² / (2·C·N). The bias is not penalised.
  const double l2 = 1.0 / (c * static_cast<double>(x.size(0)));
  torch::optim::LBFGS optimizer({w, b}, torch::optim::LBFGSOptions(1.0)
                                            .max_iter(max_iter)
                                            .max_eval(max_iter * 5 / 4)
                                            .tolerance_grad(1e-8)
                                            .tolerance_change(1e-12)
                                            .history_size(20)
                                            .line_search_fn("strong_wolfe"));
  auto closure = [&] {
    optimizer.zero_grad();
    at::Tensor loss = torch::nn::functional::cross_entropy(x.matmul(w) + b, y) + 0.5 * l2 * w.pow(2).sum();
    loss.backward();
    return loss;
  };
  {
    at::AutoGradMode grad(true);
    optimizer.step(closure);
  }
  return {w.detach().to(at::kFloat), b.detach().to(at::kFloat)};
}

namespace {

double accuracy(const std::pair<at::Tensor, at::Tensor>& model, const at::Tensor& x, const at::Tensor& y) {
  const at::Tensor logits = x.to(at::kCPU, at::kFloat).matmul(model.first) + model.second;
  return logits.argmax(1).eq(y.to(at::kCPU, at::kLong)).to(at::kDouble).mean().item<double>();
}

}  // namespace

LinearProbeResult linear_probe(const at::Tensor& train_x, const at::Tensor& train_y, const at::Tensor& test_x,
                               const at::Tensor& test_y, LinearProbeOptions options) {
  const char* who = "linear_probe";
  if (options.c_grid().empty()) fail_value("{}: no values of C to try", who);
  if (!(options.validation_fraction() > 0 && options.validation_fraction() < 1))
    fail_value("{}: validation_fraction {} must lie in (0, 1)", who, options.validation_fraction());
  if (!test_x.defined() || test_x.dim() != 2 || test_x.size(0) == 0 || test_y.size(0) != test_x.size(0) ||
      test_x.size(1) != train_x.size(1))
    fail_value("{}: test features must be [M, {}] with M labels", who, train_x.size(1));
  LinearProbeResult r;
  r.train = train_x.size(0);
  r.test = test_x.size(0);
  r.classes = std::max(train_y.max().item<int64_t>(), test_y.max().item<int64_t>()) + 1;
  // The validation split: a seeded permutation of the training set.
  std::vector<int64_t> order(static_cast<size_t>(r.train));
  std::iota(order.begin(), order.end(), 0);
  std::mt19937_64 rng(options.seed());
  for (size_t i = order.size(); i > 1; --i) std::swap(order[i - 1], order[rng() % i]);
  const auto held = static_cast<int64_t>(std::llround(options.validation_fraction() * static_cast<double>(r.train)));
  if (held < 1 || held >= r.train) fail_value("{}: {} training samples leave no validation split", who, r.train);
  const at::Tensor permutation = at::tensor(order, at::kLong);
  const at::Tensor fit_index = permutation.narrow(0, held, r.train - held), val_index = permutation.narrow(0, 0, held);
  const at::Tensor fx = train_x.index_select(0, fit_index), fy = train_y.index_select(0, fit_index);
  const at::Tensor vx = train_x.index_select(0, val_index), vy = train_y.index_select(0, val_index);
  double best = -1;
  for (double c : options.c_grid()) {
    const double a = accuracy(fit_logistic_regression(fx, fy, r.classes, c, options.max_iter()), vx, vy);
    r.validation[c] = a;
    if (a > best) best = a, r.c = c;  // ties keep the stronger regularisation (the grid is ascending)
  }
  r.top1 = accuracy(fit_logistic_regression(train_x, train_y, r.classes, r.c, options.max_iter()), test_x, test_y);
  return r;
}

// ---- evaluation sets ------------------------------------------------------------------------------------------

namespace {

std::vector<std::pair<std::string, std::string>> read_id_file(const fs::path& path) {
  std::ifstream in(path);
  if (!in) fail("{}: cannot open", path.string());
  std::vector<std::pair<std::string, std::string>> rows;
  std::string line;
  for (int64_t number = 1; std::getline(in, line); ++number) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty()) continue;
    const size_t space = line.find(' ');
    if (space == std::string::npos) fail("{}: line {}: expected 'ID VALUE'", path.string(), number);
    rows.emplace_back(line.substr(0, space), line.substr(space + 1));
  }
  return rows;
}

// CUB-200-2011's layout: images/<class>/<file>, images.txt (id path), train_test_split.txt (id is_train).
ProbeSplit cub_split(const fs::path& dir) {
  auto all = std::make_shared<ImageFolderDataset>(dir / "images");
  std::unordered_map<std::string, std::string> path_of;
  for (auto& [id, path] : read_id_file(dir / "images.txt")) path_of[id] = path;
  std::unordered_map<std::string, bool> is_train;
  for (auto& [id, flag] : read_id_file(dir / "train_test_split.txt")) {
    auto it = path_of.find(id);
    if (it == path_of.end()) fail("{}: image id {} is not in images.txt", (dir / "train_test_split.txt").string(), id);
    is_train[it->second] = flag == "1";
  }
  std::vector<int64_t> train, test;
  for (int64_t i = 0; i < all->size(); ++i) {
    const std::string relative = fs::relative(all->get(i).image_path, dir / "images").generic_string();
    auto it = is_train.find(relative);
    if (it == is_train.end()) fail("{}: {} has no entry in train_test_split.txt", dir.string(), relative);
    (it->second ? train : test).push_back(i);
  }
  return {std::make_shared<detail::SubsetDataset>(all, train, "train split"),
          std::make_shared<detail::SubsetDataset>(all, test, "test split")};
}

}  // namespace

ProbeSplit open_probe_split(const std::string& spec) {
  if (spec == "fashion-mnist" || spec == "mnist") return {IdxDataset::named(spec, "train"), IdxDataset::named(spec, "test")};
  const fs::path dir(spec);
  std::error_code ec;
  if (fs::is_regular_file(dir / "train_test_split.txt", ec) && fs::is_directory(dir / "images", ec)) return cub_split(dir);
  if (fs::is_directory(dir / "train", ec) && fs::is_directory(dir / "test", ec)) {
    auto train = std::make_shared<ImageFolderDataset>(dir / "train"), test = std::make_shared<ImageFolderDataset>(dir / "test");
    if (train->classes() != test->classes())
      fail("{}: train/ and test/ hold different class folders ({} and {})", spec, train->classes().size(), test->classes().size());
    return {train, test};
  }
  fail_value("linear probe data '{}': expected DIR/train + DIR/test class folders, a CUB-200 directory (images/, "
             "images.txt, train_test_split.txt), fashion-mnist or mnist", spec);
}

LinearProbeResult evaluate_linear_probe(CLIP& model, const ProbeSplit& split, LinearProbeOptions options,
                                        int64_t batch_size, int64_t workers) {
  const ImageFeatures train = encode_images(model, split.train, batch_size, workers);
  const ImageFeatures test = encode_images(model, split.test, batch_size, workers);
  return linear_probe(train.features, train.labels, test.features, test.labels, options);
}

}  // namespace kclip
