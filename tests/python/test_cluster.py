"""kclip.KMeans from Python, checked against scikit-learn (the reference implementation of Lloyd, k-means++
and the clustering metrics)."""
import numpy as np
import pytest
import torch

import kclip

sklearn_cluster = pytest.importorskip("sklearn.cluster")
sklearn_metrics = pytest.importorskip("sklearn.metrics")


def planted(k=5, per=60, dim=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(k, dim, generator=g) * 10
    labels = torch.arange(k).repeat_interleave(per)
    return centres[labels] + 0.5 * torch.randn(k * per, dim, generator=g), labels


@pytest.mark.parametrize("algorithm", ["lloyd", "elkan"])
def test_lloyd_matches_scikit_learn_from_the_same_start(algorithm):
    x = torch.rand(3000, 16, generator=torch.Generator().manual_seed(1))
    start = x[:10].clone()
    ours = kclip.KMeans(10, iters=50, tol=0, algorithm=algorithm).fit(x, init=start)
    ref = sklearn_cluster.KMeans(10, init=start.double().numpy(), n_init=1, algorithm="lloyd", max_iter=50,
                                 tol=0).fit(x.double().numpy())
    assert ours.n_iter == ref.n_iter_
    assert torch.allclose(ours.centroids.double(), torch.from_numpy(ref.cluster_centers_), atol=1e-5)
    assert ours.inertia == pytest.approx(ref.inertia_, rel=1e-5)
    assert torch.equal(ours.predict(x), torch.from_numpy(ref.predict(x.double().numpy())).long())


FASHION = "/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz"


def fashion_mnist(rows):
    import gzip
    if not __import__("os").path.exists(FASHION):
        pytest.skip(f"{FASHION} missing (apt-get install dataset-fashion-mnist)")
    with gzip.open(FASHION, "rb") as f:
        raw = f.read(16 + rows * 784)
    return torch.from_numpy(np.frombuffer(raw, dtype=np.uint8, offset=16).reshape(rows, 784).astype(np.float32) / 255)


@pytest.mark.parametrize("metric", ["l2", "cosine"])
def test_elkan_bounds_give_lloyds_iterations(metric):
    """Elkan's bounds skip distance computations, never assignments: from the same start, every iteration's
    inertia and the centroids equal plain Lloyd's (real data: Fashion-MNIST images), and the kept labels are the
    nearest centroids (the inertia it tracks from cluster sums equals a fresh pass over the data)."""
    x = fashion_mnist(6000)
    start = x[torch.randperm(6000, generator=torch.Generator().manual_seed(0))[:40]].clone()
    lloyd = kclip.KMeans(40, iters=5, tol=0, metric=metric, algorithm="lloyd").fit(x, init=start)
    elkan = kclip.KMeans(40, iters=5, tol=0, metric=metric, algorithm="elkan").fit(x, init=start)
    assert torch.equal(lloyd.predict(x), elkan.predict(x))
    assert torch.allclose(lloyd.centroids, elkan.centroids, atol=1e-6)
    assert elkan.inertia_history == pytest.approx(lloyd.inertia_history, rel=1e-6)
    as_float64 = kclip.KMeans(40, iters=5, tol=0, metric=metric, algorithm="elkan").fit(x.double(), init=start)
    assert torch.equal(as_float64.centroids, elkan.centroids)
    longer = kclip.KMeans(40, iters=30, tol=0, metric=metric, algorithm="elkan").fit(x, init=start)
    assert longer.inertia == pytest.approx(longer.score(x), rel=1e-6)
    assert all(b <= a * (1 + 1e-7) for a, b in zip(longer.inertia_history, longer.inertia_history[1:]))


def test_algorithm_choice_and_memory_budget():
    x = torch.rand(20000, 8, generator=torch.Generator().manual_seed(4))
    lloyd = kclip.KMeans(20, iters=3, tol=0, algorithm="lloyd").fit(x)
    # The [N, k] bounds (1.5 MiB) exceed a 1 MiB budget: "auto" falls back to Lloyd (the same centroids).
    auto = kclip.KMeans(20, iters=3, tol=0, memory_budget_mb=1).fit(x)
    assert torch.equal(auto.centroids, lloyd.centroids) and auto.inertia == pytest.approx(lloyd.inertia, rel=1e-7)
    with pytest.raises(ValueError, match="algorithm='hamerly'"):
        kclip.KMeans(3, algorithm="hamerly")
    with pytest.raises(ValueError, match="init_sample=-2"):
        kclip.KMeans(3, init_sample=-2)


def test_kmeans_plus_plus_is_as_good_as_scikit_learns():
    x = torch.rand(4000, 12, generator=torch.Generator().manual_seed(2))
    ours = [kclip.KMeans(20, init="greedy-k-means++", n_init=1, seed=s).fit(x).inertia for s in range(5)]
    ref = [sklearn_cluster.KMeans(20, n_init=1, algorithm="lloyd", random_state=s).fit(x.numpy()).inertia_
           for s in range(5)]
    assert np.mean(ours) <= np.mean(ref) * 1.01


def test_metrics_equal_scikit_learns():
    g = torch.Generator().manual_seed(3)
    for _ in range(5):
        a, b = torch.randint(0, 6, (300,), generator=g), torch.randint(-2, 4, (300,), generator=g)
        b[:150] = a[:150]  # partly agreeing
        assert kclip.nmi(a, b) == pytest.approx(sklearn_metrics.normalized_mutual_info_score(a, b), abs=1e-12)
        assert kclip.adjusted_rand_index(a, b) == pytest.approx(sklearn_metrics.adjusted_rand_score(a, b), abs=1e-12)
        table = sklearn_metrics.cluster.contingency_matrix(a, b)
        assert kclip.purity(a, b) == pytest.approx(table.max(axis=0).sum() / table.sum(), abs=1e-12)


def test_planted_clusters_soft_labels_and_predict():
    x, truth = planted()
    km = kclip.KMeans(5, n_init=2, seed=3).fit(x)
    assert kclip.adjusted_rand_index(truth, km.predict(x)) == pytest.approx(1.0)
    soft = km.soft_labels(x, temperature=2.0)
    assert torch.allclose(soft.sum(1), torch.ones(len(x)), atol=1e-5)
    assert torch.equal(km.soft_labels(x, 0.0).argmax(1), km.predict(x))
    d = km.transform(x)
    assert torch.allclose(d, torch.cdist(x, km.centroids), atol=1e-3)
    assert torch.allclose(soft, torch.softmax(-d ** 2 / 2.0, 1), atol=1e-4)


def test_minibatch_over_shards_and_cosine_metric():
    x, truth = planted(k=6, per=300, dim=10, seed=4)
    full = kclip.KMeans(6, n_init=3).fit(x)
    mini = kclip.KMeans(6, batch_size=200, iters=8, n_init=3).fit_minibatch([x[:700], x[700:]])
    assert mini.inertia <= full.inertia * 1.02
    cos = kclip.KMeans(6, metric="cosine").fit(x)
    assert torch.allclose(cos.centroids.norm(dim=1), torch.ones(6), atol=1e-5)
    assert torch.allclose(cos.transform(x[:5]), 1 - torch.nn.functional.normalize(x[:5]) @ cos.centroids.T, atol=1e-5)


def test_save_load_and_errors(tmp_path):
    x, _ = planted()
    km = kclip.KMeans(5).fit(x)
    km.save(tmp_path / "c.safetensors", {"teacher_id": "t"})
    back = kclip.KMeans.load(tmp_path / "c.safetensors")
    assert torch.equal(back.centroids, km.centroids) and back.metadata["teacher_id"] == "t"
    assert back.metadata["format"] == "kclip-kmeans" and back.inertia == km.inertia
    with pytest.raises(ValueError, match="k=400 exceeds"):
        kclip.KMeans(400).fit(x)
    with pytest.raises(ValueError, match="NaN or infinite"):
        kclip.KMeans(2).fit(torch.tensor([[1.0, float("inf")], [0.0, 0.0]]))
    with pytest.raises(ValueError, match="x has 3 columns"):
        km.predict(torch.rand(2, 3))
