"""Cluster Fashion-MNIST test images (Debian's dataset-fashion-mnist) into 10 concepts with kclip.KMeans and
score the clusters against the true classes; save the centroids artifact and show a soft concept label.

    python3 examples/python/cluster_fashion_mnist.py [--out DIR]
"""
import argparse
import gzip
import pathlib
import time

import numpy as np
import torch

import kclip

ROOT = pathlib.Path("/usr/share/datasets/fashion-mnist")


def read_idx(path):
    with gzip.open(path, "rb") as f:
        raw = f.read()
    dims = raw[3]
    shape = [int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path("build/demo"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    images = torch.from_numpy(read_idx(ROOT / "t10k-images-idx3-ubyte.gz").reshape(10000, -1).astype(np.float32) / 255)
    classes = torch.from_numpy(read_idx(ROOT / "t10k-labels-idx1-ubyte.gz").astype(np.int64))

    start = time.perf_counter()
    km = kclip.KMeans(10, init="greedy-k-means++", n_init=3, seed=0).fit(images)
    seconds = time.perf_counter() - start
    assigned = km.predict(images)
    print(f"K-means on {len(images)} Fashion-MNIST images (784-d), k=10: {km.n_iter} iterations, "
          f"inertia {km.inertia:.1f}, {seconds:.2f} s")
    print(f"against the 10 true classes: NMI {kclip.nmi(classes, assigned):.3f}, "
          f"purity {kclip.purity(classes, assigned):.3f}, ARI {kclip.adjusted_rand_index(classes, assigned):.3f}")
    path = args.out / "fashion-mnist-concepts.safetensors"
    km.save(path, {"source": "fashion-mnist t10k"})
    soft = kclip.KMeans.load(path).soft_labels(images[:1], temperature=5.0)[0]
    print(f"wrote {path}; soft concept label of image 0 (class {classes[0].item()}): "
          + " ".join(f"{p:.2f}" for p in soft.tolist()))


if __name__ == "__main__":
    main()
