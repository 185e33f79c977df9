// K-means: recovery of planted clusters, monotone Lloyd, determinism, soft labels, mini-batch quality,
// empty-cluster repair, errors, the saved artifact, Eigen interop and the clustering metrics.
#include "testing.h"

#include <kclip/cluster.h>
#include <kclip/cluster_eigen.h>
#include <kclip/cluster_metrics.h>
#include <kclip/error.h>

#include <torch/torch.h>

using kclip::KMeans;
using kclip::KMeansOptions;
using kclip::testing::TempDir;

namespace {

// `per` points around each of `k` well-separated centres in `dim` dimensions; returns (points, true labels).
std::pair<torch::Tensor, torch::Tensor> planted(int64_t k, int64_t per, int64_t dim, uint64_t seed = 0) {
  torch::manual_seed(seed);
  auto centres = torch::randn({k, dim}) * 10;
  auto labels = torch::arange(k).repeat_interleave(per);
  auto points = centres.index_select(0, labels) + 0.5 * torch::randn({k * per, dim});
  auto order = torch::randperm(k * per);
  return {points.index_select(0, order), labels.index_select(0, order)};
}

}  // namespace

TEST_CASE("cluster: planted clusters are recovered exactly, for every init and both metrics") {
  auto [x, truth] = planted(6, 80, 10);
  for (const char* init : {"k-means++", "greedy-k-means++", "random"})
    for (const char* metric : {"l2", "cosine"}) {
      INFO(init << " " << metric);
      KMeans km(KMeansOptions(6).init(init).metric(metric).n_init(3).seed(1));
      km.fit(x);
      CHECK(kclip::adjusted_rand_index(truth, km.predict(x)) == doctest::Approx(1.0));
      CHECK(km.centroids().sizes() == torch::IntArrayRef{6, 10});
    }
}

TEST_CASE("cluster: Lloyd's inertia never increases and the final value is the centroids' inertia") {
  torch::manual_seed(3);
  auto x = torch::rand({2000, 6});  // no structure: many iterations
  for (const char* metric : {"l2", "cosine"}) {
    INFO(metric);
    KMeans km(KMeansOptions(25).metric(metric).tol(0).iters(60));
    km.fit(x);
    const auto& h = km.inertia_history();
    REQUIRE(h.size() >= 3);
    for (std::size_t i = 1; i < h.size(); ++i) CHECK(h[i] <= h[i - 1] * (1 + 1e-6));
    CHECK(km.inertia() == doctest::Approx(km.score(x)).epsilon(1e-5));
    CHECK(km.inertia() == h.back());
  }
}

TEST_CASE("cluster: the same seed gives the same centroids and another seed another start") {
  torch::manual_seed(4);
  auto x = torch::rand({500, 4});
  auto a = KMeans(KMeansOptions(8).seed(7)).fit(x).centroids();
  auto b = KMeans(KMeansOptions(8).seed(7)).fit(x).centroids();
  auto c = KMeans(KMeansOptions(8).seed(8).iters(0)).fit(x).centroids();
  auto d = KMeans(KMeansOptions(8).seed(7).iters(0)).fit(x).centroids();
  CHECK(torch::equal(a, b));
  CHECK_FALSE(torch::equal(c, d));
}

TEST_CASE("cluster: soft labels are distributions that approach one-hot as the temperature goes to 0") {
  auto [x, truth] = planted(4, 50, 5);
  for (const char* metric : {"l2", "cosine"}) {
    INFO(metric);
    KMeans km(KMeansOptions(4).metric(metric));
    km.fit(x);
    auto hard = torch::one_hot(km.predict(x), 4).to(torch::kFloat);
    auto soft = km.soft_labels(x, 1.0);
    CHECK(torch::allclose(soft.sum(1), torch::ones({200}), 1e-5, 1e-5));
    CHECK((soft >= 0).all().item<bool>());
    CHECK(torch::equal(km.soft_labels(x, 0.0), hard));
    CHECK(torch::allclose(km.soft_labels(x, 1e-6), hard, 0, 1e-4));
    auto top2 = km.soft_labels(x, 1000.0, 2);
    CHECK(((top2 > 0).sum(1) <= 2).all().item<bool>());
    CHECK(torch::allclose(top2.sum(1), torch::ones({200}), 1e-5, 1e-5));
  }
  KMeans km(KMeansOptions(4));
  km.fit(x);
  CHECK_THROWS_AS(km.soft_labels(x, -1.0), kclip::ValueError);
  CHECK_THROWS_AS(km.soft_labels(x, 1.0, 5), kclip::ValueError);
}

TEST_CASE("cluster: mini-batch k-means reaches within 2% of Lloyd's inertia, also over several shards") {
  auto [x, truth] = planted(8, 400, 16, 5);
  KMeans full(KMeansOptions(8).n_init(3));
  full.fit(x);
  KMeans mini(KMeansOptions(8).batch_size(256).iters(10).n_init(3));
  mini.fit(x);
  CHECK(mini.inertia() <= full.inertia() * 1.02);
  CHECK(mini.inertia() == doctest::Approx(mini.score(x)).epsilon(1e-5));

  KMeans sharded(KMeansOptions(8).batch_size(256).iters(10).n_init(3));
  sharded.fit_minibatch({x.narrow(0, 0, 1000), x.narrow(0, 1000, 1500), x.narrow(0, 2500, 700)});
  CHECK(sharded.inertia() <= full.inertia() * 1.02);
  CHECK(kclip::adjusted_rand_index(truth, sharded.predict(x)) == doctest::Approx(1.0));
}

TEST_CASE("cluster: an empty cluster restarts at the farthest point") {
  auto [x, truth] = planted(3, 40, 2);
  auto init = torch::cat({x.narrow(0, 0, 2), torch::full({1, 2}, 1e4)});  // the third centroid attracts nothing
  KMeans km(KMeansOptions(3).iters(20));
  km.fit(x, init);
  CHECK(torch::isfinite(km.centroids()).all().item<bool>());
  CHECK(std::get<0>(at::_unique(km.predict(x))).numel() == 3);
  CHECK(kclip::adjusted_rand_index(truth, km.predict(x)) == doctest::Approx(1.0));
}

TEST_CASE("cluster: bad input is a clear ValueError") {
  auto x = torch::rand({10, 3});
  CHECK_THROWS_WITH_AS(KMeans(KMeansOptions(11)).fit(x), doctest::Contains("k=11 exceeds the number of rows N=10"),
                       kclip::ValueError);
  CHECK_THROWS_AS(KMeans(KMeansOptions(0)), kclip::ValueError);
  CHECK_THROWS_AS(KMeans(KMeansOptions(2).metric("manhattan")), kclip::ValueError);
  auto bad = x.clone();
  bad[3][1] = std::nan("");
  CHECK_THROWS_WITH_AS(KMeans(KMeansOptions(2)).fit(bad), doctest::Contains("NaN or infinite"), kclip::ValueError);
  CHECK_THROWS_WITH_AS(KMeans(KMeansOptions(2)).fit(torch::empty({0, 3})), doctest::Contains("empty"),
                       kclip::ValueError);
  KMeans km(KMeansOptions(2));
  CHECK_THROWS_WITH_AS(km.predict(x), doctest::Contains("not fitted"), kclip::ValueError);
  km.fit(x);
  CHECK_THROWS_WITH_AS(km.predict(torch::rand({4, 5})), doctest::Contains("x has 5 columns but the centroids have 3"),
                       kclip::ValueError);
}

TEST_CASE("cluster: centroids save and load as a safetensors artifact") {
  auto [x, truth] = planted(5, 30, 4);
  KMeans km(KMeansOptions(5).metric("cosine").seed(9));
  km.fit(x);
  TempDir dir;
  km.save(dir / "c.safetensors", {{"teacher_id", "llama2-7b|mean|-1"}});
  KMeans back = KMeans::load(dir / "c.safetensors");
  CHECK(torch::equal(back.centroids(), km.centroids()));
  CHECK(back.inertia() == km.inertia());
  CHECK(back.options().metric() == "cosine");
  CHECK(back.metadata().at("teacher_id") == "llama2-7b|mean|-1");
  CHECK(torch::equal(back.predict(x), km.predict(x)));

  kclip::TensorDict wrong;
  wrong.insert("weights", torch::ones({2, 2}));
  kclip::save_safetensors(dir / "w.safetensors", wrong);
  CHECK_THROWS_WITH_AS(KMeans::load(dir / "w.safetensors"), doctest::Contains("no tensor 'centroids'"), kclip::Error);
}

TEST_CASE("cluster: Eigen row-major matrices are used in place") {
  auto [x, truth] = planted(3, 20, 4);
  kclip::RowMatrixXf m(60, 4);
  std::memcpy(m.data(), x.contiguous().data_ptr<float>(), sizeof(float) * 240);
  CHECK(kclip::as_tensor(m).data_ptr() == static_cast<void*>(m.data()));
  KMeans from_eigen(KMeansOptions(3)), from_tensor(KMeansOptions(3));
  kclip::fit(from_eigen, m);
  from_tensor.fit(x);
  CHECK(torch::equal(from_eigen.centroids(), from_tensor.centroids()));
  auto labels = kclip::predict(from_eigen, m);
  CHECK(labels.size() == 60);
  CHECK(labels(7) == from_tensor.predict(x)[7].item<int64_t>());
  // A block of a wider matrix (outer stride 6) is viewed in place too.
  kclip::RowMatrixXf wide = kclip::RowMatrixXf::Random(60, 6);
  wide.leftCols(4) = m;
  Eigen::Ref<const kclip::RowMatrixXf> block = wide.leftCols(4);
  CHECK(kclip::as_tensor(block).data_ptr() == static_cast<const void*>(wide.data()));
  CHECK(torch::equal(kclip::as_tensor(block), x));
}

TEST_CASE("cluster: metrics on hand-computed cases") {
  auto a = torch::tensor({0, 0, 1, 1, 2, 2}, torch::kLong);
  auto relabelled = torch::tensor({5, 5, 9, 9, -1, -1}, torch::kLong);
  CHECK(kclip::nmi(a, relabelled) == doctest::Approx(1.0));
  CHECK(kclip::adjusted_rand_index(a, relabelled) == doctest::Approx(1.0));
  CHECK(kclip::purity(a, relabelled) == doctest::Approx(1.0));
  auto merged = torch::tensor({0, 0, 0, 0, 1, 1}, torch::kLong);
  CHECK(kclip::purity(a, merged) == doctest::Approx(4.0 / 6));  // cluster 0 holds two classes of 2
  // ARI of {0,0,1,1,2,2} vs {0,0,0,0,1,1}: index 3, rows 3, cols 7, expected 21/15, max 5 -> (3-1.4)/(5-1.4)
  CHECK(kclip::adjusted_rand_index(a, merged) == doctest::Approx((3 - 1.4) / (5 - 1.4)));
  CHECK_THROWS_AS(kclip::nmi(a, torch::zeros({5}, torch::kLong)), kclip::ValueError);
}
