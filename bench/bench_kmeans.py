"""K-means on Fashion-MNIST (60000 x 784 floats in [0, 1], Debian's dataset-fashion-mnist), K = 100, 20 iterations,
2 cores, side by side in one run:

  kclip.KMeans (Lloyd, k-means++ seeding) and its mini-batch mode,
  faiss.Kmeans (max_points_per_centroid=10**7: no subsampling), at its best thread setting here,
  scikit-learn KMeans(algorithm="lloyd", n_init=1) with k-means++ and MiniBatchKMeans(batch_size=3072).

Each method's final inertia is recomputed by one evaluator (float64 sums) from its centroids, so the figures
compare like with like. Times include seeding.

    python3 bench/bench_kmeans.py [--k 100] [--iters 20] [--repeat 2] [--seeds 3] [--init-sample 10000]
"""
import argparse
import gzip
import os
import time

import numpy as np
import torch

import kclip

FASHION = "/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz"


def load_fashion_mnist(path=FASHION):
    with gzip.open(path, "rb") as f:
        raw = f.read()
    count, rows, cols = (int.from_bytes(raw[i:i + 4], "big") for i in (4, 8, 12))
    pixels = np.frombuffer(raw, dtype=np.uint8, offset=16).reshape(count, rows * cols)
    return (pixels.astype(np.float32) / 255.0)


def inertia(x, centroids):
    """Σ min_c ‖x − c‖², in float64 over row chunks: the same yardstick for every method."""
    x64, c = torch.from_numpy(x).double(), torch.as_tensor(np.asarray(centroids)).double()
    total = 0.0
    for chunk in x64.split(10000):
        total += torch.cdist(chunk, c).pow(2).min(1).values.sum().item()
    return total


def timed(fn, repeat):
    best, result = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--k", type=int, default=100)
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--seeds", type=int, default=3, help="seeds averaged for the quality comparison")
    parser.add_argument("--init-sample", type=int, default=10000, help="rows kclip's fast row seeds on")
    args = parser.parse_args()
    if not os.path.exists(FASHION):
        raise SystemExit(f"{FASHION} not found: apt-get install dataset-fashion-mnist (scripts/install-deps.sh)")
    import faiss
    from sklearn.cluster import KMeans, MiniBatchKMeans

    x = load_fashion_mnist()
    n, d = x.shape
    xt = torch.from_numpy(x)
    cores = len(os.sched_getaffinity(0))
    kclip.set_num_threads(cores)
    rows = []

    def kclip_lloyd(seed, **options):
        return kclip.KMeans(args.k, iters=args.iters, tol=0, seed=seed, **options).fit(xt)

    configs = [("kclip KMeans (k-means++, Lloyd)", {}),
               ("kclip KMeans (greedy k-means++, Lloyd)", {"init": "greedy-k-means++"}),
               (f"kclip KMeans (greedy k-means++ on {args.init_sample} rows)",
                {"init": "greedy-k-means++", "init_sample": args.init_sample})]
    for name, options in configs:
        t, km = timed(lambda: kclip_lloyd(0, **options), args.repeat)
        rows.append((name, t, inertia(x, km.centroids)))
    kclip_fast = rows[-1]

    def run_faiss():
        km = faiss.Kmeans(d, args.k, niter=args.iters, seed=1234, max_points_per_centroid=10**7, verbose=False)
        km.train(x)
        return km.centroids

    faiss_rows = []
    for omp in sorted({1, cores}):  # OpenBLAS keeps both cores either way
        faiss.omp_set_num_threads(omp)
        t, centroids = timed(run_faiss, args.repeat)
        faiss_rows.append((f"faiss Kmeans ({omp} OpenMP thread{'s' if omp > 1 else ''})", t, inertia(x, centroids)))
    faiss.omp_set_num_threads(cores)
    rows += faiss_rows

    t, sk = timed(lambda: KMeans(args.k, algorithm="lloyd", n_init=1, max_iter=args.iters, tol=0,
                                 random_state=0).fit(x), args.repeat)
    rows.append(("scikit-learn KMeans (k-means++, lloyd)", t, inertia(x, sk.cluster_centers_)))
    sklearn_inertia = rows[-1][2]

    # Quality over several seeds: one seed's inertia differs from another's by more than the methods do.
    seeds = range(args.seeds)
    ours = np.mean([inertia(x, kclip_lloyd(s, **configs[-1][1]).centroids) for s in seeds])
    theirs = np.mean([inertia(x, KMeans(args.k, algorithm="lloyd", n_init=1, max_iter=args.iters, tol=0,
                                        random_state=s).fit(x).cluster_centers_) for s in seeds])

    t, km = timed(lambda: kclip.KMeans(args.k, iters=args.iters, tol=0, seed=0, batch_size=3072).fit(xt), args.repeat)
    rows.append(("kclip KMeans (mini-batch 3072)", t, inertia(x, km.centroids)))
    t, mb = timed(lambda: MiniBatchKMeans(args.k, batch_size=3072, n_init=1, max_iter=args.iters,
                                          random_state=0).fit(x), args.repeat)
    rows.append(("scikit-learn MiniBatchKMeans (3072)", t, inertia(x, mb.cluster_centers_)))

    print(f"K-means, Fashion-MNIST train {n} x {d}, K={args.k}, {args.iters} iterations, {cores} cores, "
          f"best of {args.repeat}")
    print(f"{'method':<42} {'seconds':>8} {'inertia':>14} {'vs sklearn':>11}")
    for name, seconds, value in rows:
        print(f"{name:<42} {seconds:>8.2f} {value:>14.1f} {value / sklearn_inertia - 1:>+10.2%}")
    best_faiss = min(r[1] for r in faiss_rows)
    print(f"time, {kclip_fast[0]} / best faiss: {kclip_fast[1] / best_faiss:.2f}x")
    print(f"mean inertia over seeds {list(seeds)}: {kclip_fast[0]} {ours:.1f}, scikit-learn KMeans {theirs:.1f} "
          f"({ours / theirs - 1:+.3%})")


if __name__ == "__main__":
    main()
