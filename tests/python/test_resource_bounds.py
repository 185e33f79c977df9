"""Resource bounds (docs/reliability.md): K-means, retrieval and the embedding cache on inputs many times their
memory budget keep what they allocate within it. Each case runs in a fresh process that memory-maps its input (file pages are not the
process's own memory) and samples its anonymous resident memory (RssAnon) every 2 ms while the call runs."""
import json
import subprocess
import sys

import pytest
import torch

import kclip

ROWS, DIM, SHARDS = 80_000, 256, 8  # 625 MiB of float32 embeddings in memory-mapped shards
SLACK_MIB = 24  # LibTorch's and the allocator's own bookkeeping, measured at ~2 MiB here

# Shared by the cases: growth_while(run) is the peak of anonymous resident memory while run() runs, over what
# the process held just before (MiB).
MEASURE = r"""
import json, sys, threading, time, torch, kclip

def anon_mib():
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("RssAnon:")) / 1024

def growth_while(run):
    torch.randn(512, 512) @ torch.randn(512, 512)  # OpenBLAS's per-thread buffers exist before the baseline
    base = peak = anon_mib()
    done = False

    def sample():
        nonlocal peak
        while not done:
            peak = max(peak, anon_mib())
            time.sleep(0.002)

    sampler = threading.Thread(target=sample)
    sampler.start()
    run()
    done = True
    sampler.join()
    return max(peak, anon_mib()) - base
"""

CASE = MEASURE + r"""
paths, case = json.loads(sys.argv[1]), sys.argv[2]
shards = [kclip.load_safetensors(p)["embeddings"] for p in paths]
queries = torch.nn.functional.normalize(torch.randn(40_000, 32, generator=torch.Generator().manual_seed(0)), dim=1)
keys = torch.nn.functional.normalize(queries + 0.5 * torch.randn(40_000, 32), dim=1)
runs = {
    "kmeans": lambda: kclip.KMeans(100, iters=4, tol=0, seed=0, memory_budget_mb=32).fit(shards[0]),
    "kmeans-minibatch": lambda: kclip.KMeans(100, iters=2, seed=0, batch_size=4096,
                                             memory_budget_mb=32).fit_minibatch(shards),
    "retrieval": lambda: kclip.retrieval_recall(queries, keys, torch.arange(40_000), block=1024),
}
print(json.dumps({"growth_mib": growth_while(runs[case])}))
"""


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    folder = tmp_path_factory.mktemp("shards")
    g = torch.Generator().manual_seed(0)
    centres = 3 * torch.randn(100, DIM, generator=g)
    paths = []
    for i in range(SHARDS):
        rows = centres[torch.randint(0, 100, (ROWS,), generator=g)] + torch.randn(ROWS, DIM, generator=g)
        paths.append(str(folder / f"shard{i}.safetensors"))
        kclip.save_safetensors(paths[-1], {"embeddings": rows})
    whole = str(folder / "all.safetensors")
    kclip.save_safetensors(whole, {"embeddings": torch.cat([kclip.load_safetensors(p)["embeddings"] for p in paths])})
    return {"shards": paths, "whole": whole}


def growth_mib(paths, case):
    out = subprocess.run([sys.executable, "-c", CASE, json.dumps(paths), case], capture_output=True, text=True,
                         check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])["growth_mib"]


def test_kmeans_on_data_20_times_its_budget_allocates_within_the_budget(shards):
    # dense, the [N, k] distances alone would be 244 MiB: 7.6x the 32 MiB budget (and Elkan's [N, k] bounds as
    # much, so "auto" runs Lloyd's chunked iterations)
    assert growth_mib([shards["whole"]], "kmeans") <= 32 + SLACK_MIB


def test_minibatch_kmeans_streams_shards_larger_than_its_budget(shards):
    assert growth_mib(shards["shards"], "kmeans-minibatch") <= 32 + SLACK_MIB


def test_retrieval_over_40000_pairs_keeps_to_its_blocks(shards):
    # the dense 40000 x 40000 similarity matrix would be 6.0 GiB; blocks of 1024 x 1024 are 4 MiB
    assert growth_mib([shards["whole"]], "retrieval") <= 4 * 4 + SLACK_MIB


CACHE_CASE = MEASURE + r"""
class NoiseTeacher(kclip.Teacher):
    def __init__(self, dim):
        super().__init__()
        self.width, self.generator = dim, torch.Generator().manual_seed(0)

    def embed(self, texts):
        return torch.randn(len(texts), self.width, generator=self.generator)

    def dim(self):
        return self.width

    def id(self):
        return "noise"

folder, count, dim, shard_size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
captions = [f"a photo of thing number {i}" for i in range(count)]

def build_and_read():
    cache = kclip.EmbeddingCache.build(folder, NoiseTeacher(dim), captions, shard_size=shard_size, dtype="f32",
                                       progress=False)
    assert cache.count == count and cache.complete
    generator = torch.Generator().manual_seed(1)
    for _ in range(20):  # lookups in random order across all shards, and a pass over every shard (memory-mapped)
        cache.get([captions[i] for i in torch.randint(0, count, (4096,), generator=generator).tolist()])
    sum(float(shard.sum()) for shard in cache.shards())

print(json.dumps({"growth_mib": growth_while(build_and_read)}))
"""


def cache_growth_mib(folder, count, dim, shard_size):
    out = subprocess.run([sys.executable, "-c", CACHE_CASE, str(folder), str(count), str(dim), str(shard_size)],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])["growth_mib"]


def test_embedding_cache_builds_and_reads_49_shards_within_a_few_shards_of_memory(tmp_path):
    """200 000 captions x 512 float32 = 391 MiB of embeddings, built in shards of 4096 rows (8 MiB): the build holds
    one shard (its batches, the joined rows, the cast) and the caption index (~250 bytes a caption: the captions'
    copy, the dedup map, the hash -> row index); lookups and a pass over every shard read the memory-mapped files.
    The same build as one shard grows past the bound, so the measurement sees what the build holds."""
    count, dim, shard = 200_000, 512, 4096
    bound = 3 * shard * dim * 4 / 2**20 + count * 256 / 2**20 + SLACK_MIB  # 97 MiB
    assert cache_growth_mib(tmp_path / "sharded", count, dim, shard) <= bound
    assert cache_growth_mib(tmp_path / "dense", count, dim, count) > 4 * bound
