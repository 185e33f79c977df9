"""K-means on Fashion-MNIST (60000 x 784 floats in [0, 1], Debian's dataset-fashion-mnist), K = 100, 20 iterations,
2 cores, side by side in one run:

  kclip.KMeans with its defaults (greedy k-means++ seeded on max(5000, 50k) rows, Elkan-bounded Lloyd), with
  plain Lloyd iterations, with greedy seeding on all rows, and its mini-batch mode,
  faiss.Kmeans (max_points_per_centroid=10**7: no subsampling), at its best thread setting here,
  scikit-learn KMeans (n_init=1, k-means++) with algorithm "lloyd" and "elkan", and MiniBatchKMeans(3072).

Each method's final inertia is recomputed by one evaluator (float64 sums) from its centroids, so the figures
compare like with like. Times include seeding. Then the teacher-scale check: 100 000 x 4096 float32 embeddings
(synthetic: 100 overlapping Gaussian clusters, as a 4096-d teacher's caption embeddings might be), K = 100, 20 iterations,
kclip's defaults vs faiss (1 and 2 OpenMP threads), each in its own process for its time and peak memory.

    python3 bench/bench_kmeans.py [--k 100] [--iters 20] [--repeat 2] [--seeds 3] [--teacher-rows 100000]
                                  [--teacher-only]
"""
import argparse
import gzip
import os
import subprocess
import sys
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
    parser.add_argument("--teacher-rows", type=int, default=100000, help="0 skips the teacher-scale check")
    parser.add_argument("--teacher-dim", type=int, default=4096)
    parser.add_argument("--teacher-only", action="store_true", help="only the teacher-scale check")
    parser.add_argument("--teacher-case", help=argparse.SUPPRESS)  # internal: one method of the teacher check
    args = parser.parse_args()
    if args.teacher_case:
        return teacher_case(args)
    if args.teacher_only:
        return teacher_scale(args, len(os.sched_getaffinity(0)))
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

    def kclip_fit(seed, **options):
        return kclip.KMeans(args.k, iters=args.iters, tol=0, seed=seed, **options).fit(xt)

    configs = [("kclip KMeans (defaults)", {}),
               ("kclip KMeans (defaults, plain Lloyd)", {"algorithm": "lloyd"}),
               ("kclip KMeans (greedy k-means++ on all rows)", {"init_sample": 0})]
    for name, options in configs:
        t, km = timed(lambda: kclip_fit(0, **options), args.repeat)
        rows.append((name, t, inertia(x, km.centroids)))
    kclip_default = rows[0]

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

    def sklearn_fit(seed, algorithm="lloyd"):
        return KMeans(args.k, algorithm=algorithm, n_init=1, max_iter=args.iters, tol=0, random_state=seed).fit(x)

    t, sk = timed(lambda: sklearn_fit(0), args.repeat)
    rows.append(("scikit-learn KMeans (k-means++, lloyd)", t, inertia(x, sk.cluster_centers_)))
    sklearn_inertia = rows[-1][2]
    t, sk = timed(lambda: sklearn_fit(0, "elkan"), args.repeat)
    rows.append(("scikit-learn KMeans (k-means++, elkan)", t, inertia(x, sk.cluster_centers_)))

    # Quality over several seeds: one seed's inertia differs from another's by more than the methods do.
    seeds = range(args.seeds)
    ours = np.mean([inertia(x, kclip_fit(s).centroids) for s in seeds])
    theirs = np.mean([inertia(x, sklearn_fit(s).cluster_centers_) for s in seeds])

    t, km = timed(lambda: kclip.KMeans(args.k, iters=args.iters, tol=0, seed=0, batch_size=3072).fit(xt), args.repeat)
    rows.append(("kclip KMeans (mini-batch 3072)", t, inertia(x, km.centroids)))
    t, mb = timed(lambda: MiniBatchKMeans(args.k, batch_size=3072, n_init=1, max_iter=args.iters,
                                          random_state=0).fit(x), args.repeat)
    rows.append(("scikit-learn MiniBatchKMeans (3072)", t, inertia(x, mb.cluster_centers_)))

    print(f"K-means, Fashion-MNIST train {n} x {d}, K={args.k}, {args.iters} iterations, {cores} cores, "
          f"best of {args.repeat}")
    print(f"{'method':<44} {'seconds':>8} {'inertia':>14} {'vs sklearn':>11}")
    for name, seconds, value in rows:
        print(f"{name:<44} {seconds:>8.2f} {value:>14.1f} {value / sklearn_inertia - 1:>+10.2%}")
    best_faiss = min(r[1] for r in faiss_rows)
    print(f"time, {kclip_default[0]} / best faiss: {kclip_default[1] / best_faiss:.2f}x")
    print(f"mean inertia over seeds {list(seeds)}: {kclip_default[0]} {ours:.1f}, scikit-learn KMeans {theirs:.1f} "
          f"({ours / theirs - 1:+.3%})")
    if args.teacher_rows > 0:
        teacher_scale(args, cores)


def teacher_embeddings(rows, dim, k, seed=0):
    """Synthetic teacher-like embeddings, float32, written in place chunk by chunk (no temporaries of the data's
    size): k cluster centres with unequal populations and spreads; each row's noise is as large as the distance
    between centres, so the clusters overlap as real caption embeddings do."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(k, dim, generator=g)
    labels = torch.multinomial(torch.rand(k, generator=g) + 0.5, rows, replacement=True, generator=g)
    spread = 0.5 + torch.rand(k, 1, generator=g)
    x = torch.empty(rows, dim)
    for start in range(0, rows, 4096):
        part = labels[start:start + 4096]
        x[start:start + len(part)] = centres[part] + spread[part] * torch.randn(len(part), dim, generator=g)
    return x


def peak_rss_mib():
    """This process's peak resident set (VmHWM: unlike ru_maxrss, it does not carry the forking parent's peak
    across exec)."""
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:")) / 1024


def teacher_case(args):
    """One method on the teacher-scale data, in a fresh process: prints seconds, peak RSS (MiB) and inertia."""
    x = teacher_embeddings(args.teacher_rows, args.teacher_dim, args.k)
    data_peak = peak_rss_mib()
    cores = len(os.sched_getaffinity(0))
    kclip.set_num_threads(cores)
    start = time.perf_counter()
    if args.teacher_case == "kclip":
        centroids = kclip.KMeans(args.k, iters=args.iters, tol=0, seed=0).fit(x).centroids
    else:
        import faiss
        faiss.omp_set_num_threads(int(args.teacher_case.split(":")[1]))
        km = faiss.Kmeans(x.shape[1], args.k, niter=args.iters, seed=1234, max_points_per_centroid=10**7,
                          verbose=False)
        km.train(x.numpy())
        centroids = km.centroids
    seconds = time.perf_counter() - start
    print(f"{seconds:.3f} {peak_rss_mib() - data_peak:.0f} {inertia(x.numpy(), centroids):.6e}")


def teacher_scale(args, cores):
    data_mib = args.teacher_rows * args.teacher_dim * 4 / 2**20
    print(f"\nTeacher scale: {args.teacher_rows} x {args.teacher_dim} float32 ({data_mib:.0f} MiB), K={args.k}, "
          f"{args.iters} iterations; each method in its own process; memory = peak RSS above the data's")
    print(f"{'method':<44} {'seconds':>8} {'+MiB':>9} {'inertia':>14}")
    results = {}
    for case in ["kclip"] + [f"faiss:{omp}" for omp in sorted({1, cores})]:
        out = subprocess.run([sys.executable, __file__, "--teacher-case", case, "--k", str(args.k),
                              "--iters", str(args.iters), "--teacher-rows", str(args.teacher_rows),
                              "--teacher-dim", str(args.teacher_dim)],
                             check=True, capture_output=True, text=True).stdout.split()
        results[case] = (float(out[0]), float(out[1]), float(out[2]))
        name = "kclip KMeans (defaults)" if case == "kclip" else f"faiss Kmeans ({case.split(':')[1]} OpenMP)"
        print(f"{name:<44} {out[0]:>8} {out[1]:>9} {out[2]:>14}")
    best = min(v[0] for c, v in results.items() if c != "kclip")
    print(f"time, kclip / best faiss: {results['kclip'][0] / best:.2f}x")


if __name__ == "__main__":
    main()
