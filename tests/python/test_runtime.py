"""Threads on import, the BLAS check, and the kclip CLI."""
import os
import subprocess
import sys

import torch

import kclip


def threads_after_import(**env_overrides):
    env = {k: v for k, v in os.environ.items() if k not in ("KCLIP_NUM_THREADS", "OMP_NUM_THREADS")}
    env.update(env_overrides)
    code = "import torch, kclip; print(torch.get_num_threads())"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return int(out.stdout.strip())


def test_import_sets_threads_from_the_blas_and_the_affinity_mask_unless_the_environment_says_otherwise():
    # Debian's OpenBLAS runs GEMMs on its own pthread pool over every core: LibTorch's pool stays at one thread.
    assert kclip.available_cpus() == len(os.sched_getaffinity(0))
    expected = 1 if kclip.blas_threading() == "pthreads" else kclip.available_cpus()
    assert threads_after_import() == expected
    assert threads_after_import(KCLIP_NUM_THREADS="3") == 3
    assert threads_after_import(KCLIP_NUM_THREADS="3", OMP_NUM_THREADS="1") == 3
    assert threads_after_import(OMP_NUM_THREADS="1") == 1


def test_blas_core_is_the_kernel_set_openblas_runs():
    if not kclip.blas_is_openblas():
        assert kclip.blas_core() == ""
        return
    code = "import kclip; print(kclip.blas_core())"
    for core in ("Haswell", "Sandybridge"):  # kernel sets every x86-64 CPU with AVX2 can run
        env = {**os.environ, "OPENBLAS_CORETYPE": core}
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
        assert out.stdout.strip() == core
    assert f"kernels {kclip.blas_core()}" in kclip.runtime_summary()


def test_set_num_threads_is_torchs_setting():
    before = kclip.num_threads()
    kclip.set_num_threads(1)
    assert torch.get_num_threads() == 1
    kclip.set_num_threads(before)
    assert torch.get_num_threads() == before


def test_blas_is_reported():
    assert kclip.blas_library()
    assert kclip.blas_is_openblas() == ("openblas" in kclip.blas_library())
    assert f"blas {kclip.blas_library()}" in kclip.runtime_summary()


def test_cli_inspect_and_convert_a_sharded_checkpoint(kclip_cli, shared, tmp_path):
    hf = shared("models/stories260K/hf")
    out = subprocess.run([kclip_cli, "inspect", hf], capture_output=True, text=True, check=True).stdout
    assert "48 tensors, 292800 elements" in out and "model.norm.weight" in out
    merged = tmp_path / "stories260K-bf16.safetensors"
    subprocess.run([kclip_cli, "convert", hf, merged, "--dtype", "bf16", "--metadata", "source=stories260K"],
                   check=True, capture_output=True)
    original, converted = kclip.load_safetensors(hf), kclip.load_safetensors(merged)
    assert set(original) == set(converted)
    for name, t in original.items():
        assert torch.equal(converted[name], t.to(torch.bfloat16)), name
    metadata = kclip.load_safetensors_metadata(merged)
    assert metadata["source"] == "stories260K" and "total_size" not in metadata


def test_cli_errors_are_one_line_and_exit_2(kclip_cli, tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x05\0\0\0\0\0\0\0{}")
    result = subprocess.run([kclip_cli, "inspect", bad], capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and str(bad) in result.stderr
    result = subprocess.run([kclip_cli, "convert", bad, tmp_path / "o", "--bogus"], capture_output=True, text=True)
    assert result.returncode == 2 and "unknown option --bogus" in result.stderr


def test_cli_cluster_streams_shards_and_writes_the_artifact(kclip_cli, tmp_path):
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(4, 6, generator=g) * 10
    truth = []
    shards = tmp_path / "cache"
    shards.mkdir()
    for i in range(3):
        labels = torch.randint(0, 4, (400,), generator=g)
        truth.append(labels)
        rows = centres[labels] + 0.3 * torch.randn(400, 6, generator=g)
        kclip.save_safetensors(shards / f"shard-{i}.safetensors", {"embeddings": rows}, {"teacher_id": "toy-teacher"})
    out = tmp_path / "centroids.safetensors"
    result = subprocess.run([kclip_cli, "cluster", "--embeddings", shards, "--k", "4", "--out", out,
                             "--minibatch", "128", "--n-init", "3"], capture_output=True, text=True, check=True)
    assert "clustered 1200 x 6 embeddings into k=4" in result.stdout
    km = kclip.KMeans.load(out)
    assert km.metadata["teacher_id"] == "toy-teacher" and km.metadata["k"] == "4"
    data = torch.cat([kclip.load_safetensors(shards / f"shard-{i}.safetensors")["embeddings"] for i in range(3)])
    assert kclip.adjusted_rand_index(torch.cat(truth), km.predict(data)) == 1.0
    bad = subprocess.run([kclip_cli, "cluster", "--embeddings", shards, "--k", "4", "--out", out, "--tensor", "x"],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "no tensor 'x'" in bad.stderr


def test_reference_blas_is_warned_about_loudly(kclip_cli):
    reference = "/usr/lib/x86_64-linux-gnu/blas"  # Debian's reference BLAS, which the loader then prefers
    if not os.path.exists(os.path.join(reference, "libblas.so.3")):
        import pytest
        pytest.skip("Debian's reference BLAS (libblas3) is not installed")
    env = dict(os.environ, LD_LIBRARY_PATH=reference)
    result = subprocess.run([kclip_cli, "info"], env=env, capture_output=True, text=True, check=True)
    assert "WARNING: LibTorch is not using OpenBLAS" in result.stderr
    assert "NOT OpenBLAS" in result.stdout
    normal = subprocess.run([kclip_cli, "info"], capture_output=True, text=True, check=True)
    assert "WARNING" not in normal.stderr and "(pthreads)" in normal.stdout
