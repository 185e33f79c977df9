"""Data-parallel training on torch.distributed (Gloo on loopback): two ranks with batch B end where one rank with
batch 2B ends (CLI under torchrun, and a Python script using kclip.Trainer on torch.distributed's default group),
and a rank that dies or never comes makes the others fail with an error instead of hanging."""
import os
import signal
import socket
import subprocess
import time

import pytest
import torch

import kclip
from conftest import BUILD
from data_fixtures import write_pairs
from test_data import HashTeacher

ENV = dict(os.environ, PYTHONPATH=str(BUILD / "python"))

# AdamW as plain SGD (eps far above |g|, no moments): the weights then compare the gradients themselves.
PROBE = ["--lr", "1.0", "--eps", "1000", "--wd", "0", "--warmup", "0", "--lr-scheduler", "const", "--beta1", "0",
         "--beta2", "0"]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(nproc, python=False):
    port = free_port()
    if int(torch.__version__.split(".")[0]) >= 2:
        return ["torchrun", f"--nproc-per-node={nproc}", f"--master-port={port}"] + ([] if python else ["--no-python"])
    # torch 1.13's torchrun crashes on Python 3.11 with its default --redirects/--tee of 0 (enum.IntFlag no longer
    # iterates over the zero flag); any non-zero setting avoids it. 2 = stderr, copied to the console.
    return ["torchrun", f"--nproc_per_node={nproc}", f"--master_port={port}", "--redirects", "2", "--tee", "2"] + (
        [] if python else ["--no_python"])


@pytest.fixture(scope="module")
def targets(tmp_path_factory):
    """40 pairs, a teacher cache of their captions and K-means concepts over it."""
    root = tmp_path_factory.mktemp("ddp")
    csv = write_pairs(root / "data", 40)
    captions = kclip.CsvDataset(csv).captions()
    cache = kclip.EmbeddingCache.build(str(root / "cache"), HashTeacher(), captions, progress=False)
    km = kclip.KMeans(4, seed=0).fit(torch.cat([s.float() for s in cache.shards()]))
    km.save(str(root / "concepts.safetensors"), {"teacher_id": cache.teacher_id})
    return root


def args(root, name, batch):
    return ["train", "--train-data", str(root / "data/pairs.csv"), "--model", "tiny", "--batch-size", str(batch),
            "--epochs", "1", "--max-steps", "3", "--teacher-cache", str(root / "cache"), "--concepts",
            str(root / "concepts.safetensors"), "--concept-temperature", "0.5", "--logs", str(root / "logs"),
            "--name", name, "--no-progress", "--workers", "1", *PROBE]


def weights(root, name):
    step = root / "logs" / name / "checkpoints" / "step_00000003"
    return {**kclip.load_safetensors(str(step / "model.safetensors")),
            **{"loss." + k: v for k, v in kclip.load_safetensors(str(step / "loss.safetensors")).items()}}


def difference(a, b):
    assert a.keys() == b.keys()
    return max((a[k].double() - b[k].double()).abs().max().item() for k in a)


def test_two_ranks_match_one_rank_with_the_whole_batch(targets, kclip_cli):
    single = subprocess.run([kclip_cli, *args(targets, "one", 8)], capture_output=True, text=True, env=ENV)
    assert single.returncode == 0, single.stderr
    two = subprocess.run(torchrun(2) + [str(kclip_cli), *args(targets, "two", 4)], capture_output=True, text=True,
                         env=ENV, timeout=300)
    assert two.returncode == 0, two.stderr
    # and with accumulation: 2 ranks x 2 micro-batches of 2 (gradients all-reduced during the last backward pass)
    accumulated = subprocess.run(torchrun(2) + [str(kclip_cli), *args(targets, "two_accum", 2), "--accum-freq", "2"],
                                 capture_output=True, text=True, env=ENV, timeout=300)
    assert accumulated.returncode == 0, accumulated.stderr
    one, both = weights(targets, "one"), weights(targets, "two")
    assert difference(one, both) <= 1e-5
    assert difference(one, weights(targets, "two_accum")) <= 1e-5
    # ... while the three steps moved the weights by far more than that
    start = kclip.Trainer(kclip.TrainConfig(model="tiny", seed=0, alpha=0, beta=0)).model.state_dict()
    assert max((one[k] - start[k]).abs().max().item() for k in start if k != "logit_scale") > 1e-3


def test_torchrun_python_script_on_the_default_group(targets, tmp_path):
    config = kclip.TrainConfig(
        train_data=targets / "data/pairs.csv", model="tiny", batch_size=4, epochs=1, max_steps=3,
        teacher_cache=targets / "cache", concepts=targets / "concepts.safetensors", concept_temperature=0.5,
        logs=targets / "logs", name="python", progress=False, workers=1, lr=1.0, eps=1000.0, wd=0.0, warmup=0,
        lr_scheduler="const", beta1=0.0, beta2=0.0)
    (tmp_path / "run.json").write_text(config.to_json())
    script = tmp_path / "ddp.py"
    script.write_text(
        "import sys, torch.distributed as dist, kclip\n"
        "dist.init_process_group('gloo')\n"
        "trainer = kclip.Trainer(kclip.TrainConfig.from_json(sys.argv[1]))\n"
        "assert trainer.world_size == dist.get_world_size() == 2 and trainer.rank == dist.get_rank()\n"
        "trainer.fit()\n")
    run = subprocess.run(torchrun(2, python=True) + [str(script), str(tmp_path / "run.json")], capture_output=True,
                         text=True, env=ENV, timeout=300)
    assert run.returncode == 0, run.stderr
    if not (targets / "logs/one").exists():
        pytest.skip("needs the single-rank run of the previous test")
    assert difference(weights(targets, "one"), weights(targets, "python")) <= 1e-5


def launch_rank(rank, world, port, argv, kclip_cli):
    env = dict(ENV, RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
               MASTER_PORT=str(port))
    return subprocess.Popen([kclip_cli, *argv], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def test_a_dead_rank_stops_the_others_with_an_error(targets, kclip_cli):
    argv = args(targets, "dead", 4) + ["--epochs", "50", "--max-steps", "0", "--dist-timeout", "60"]  # later flags win
    port = free_port()
    ranks = [launch_rank(r, 2, port, argv, kclip_cli) for r in range(2)]
    metrics = targets / "logs/dead/metrics.jsonl"
    deadline = time.time() + 120
    while (not metrics.exists() or not metrics.read_text()) and time.time() < deadline:
        time.sleep(0.05)
    ranks[1].send_signal(signal.SIGKILL)
    start = time.time()
    _, err = ranks[0].communicate(timeout=90)
    assert ranks[0].returncode == 2, err
    assert time.time() - start < 60
    assert "rank 0 of 2: a collective with the other ranks failed" in err


def test_a_rank_that_never_comes_times_out(targets, kclip_cli):
    argv = args(targets, "alone", 4) + ["--dist-timeout", "3"]
    start = time.time()
    rank0 = launch_rank(0, 2, free_port(), argv, kclip_cli)
    _, err = rank0.communicate(timeout=120)
    assert rank0.returncode == 2 and time.time() - start < 60, err
    assert "error" in err.lower()
