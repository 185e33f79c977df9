"""`kclip run` / kclip.run: every stage's artifacts, skipping what is up to date, rerunning what changed (and every
stage after it), resuming a run killed in the middle of training, the dry-run plan, and bad configurations."""
import json
import pathlib
import random
import signal
import subprocess
import sys
import time

import pytest
import torch

import kclip
from data_fixtures import write_pairs

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / "bench"))
import bench_llama  # noqa: E402  (random_checkpoint: a Hugging Face Llama directory with random weights)

TEACHER = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
           "num_key_value_heads": 2, "vocab_size": 32000, "max_position_embeddings": 64, "rms_norm_eps": 1e-5,
           "rope_theta": 10000.0, "tie_word_embeddings": False}


@pytest.fixture
def setup(tmp_path, shared):
    """A random-weight Llama teacher with Meta's tokenizer, 40 image–caption pairs, and a run.json for them."""
    tokenizer = shared("tokenizers/llama2/tokenizer.model")
    teacher = tmp_path / "teacher"
    teacher.mkdir()
    bench_llama.random_checkpoint(str(teacher), TEACHER)
    csv = write_pairs(tmp_path / "data", 40)

    def config(run_dir, **train):
        options = dict(train_data=str(csv), model="tiny", batch_size=8, epochs=2, lr=1e-3, warmup=2, alpha=1.0,
                       beta=0.5, gamma=1.0, workers=2, progress=False, seed=0, save_every_n_steps=2)
        options.update(train)
        return {"run_dir": str(tmp_path / run_dir),
                "teacher": {"model": str(teacher), "tokenizer": str(tokenizer), "max_length": 32},
                "concepts": {"k": 4, "iters": 10},
                "train": options,
                "eval": {"retrieval": str(csv), "csv_img_key": "filepath", "csv_caption_key": "title"},
                "export": ["openai", "hf"]}

    return config


def write_config(path, config):
    path.write_text(json.dumps(config))
    return str(path)


def actions(plan):
    return {s["stage"]: s["action"] for s in plan}


def test_a_run_makes_every_artifact_then_skips_and_reruns_what_changed(setup, tmp_path, kclip_cli):
    config = setup("run")
    path = write_config(tmp_path / "run.json", config)
    done = subprocess.run([kclip_cli, "run", "--config", path], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    run = pathlib.Path(config["run_dir"])
    resolved = json.loads((run / "run.json").read_text())
    assert resolved["concepts"]["k"] == 4 and resolved["train"]["beta"] == 0.5 and resolved["eval"]["concepts"] is True
    assert kclip.EmbeddingCache(str(run / "teacher_cache")).count == 40
    assert kclip.KMeans.load(str(run / "concepts.safetensors")).centroids.shape == (4, 32)
    assert (run / "train/checkpoints/step_00000010").is_dir()  # 40 pairs / 8 per step × 2 epochs
    results = json.loads((run / "results.json").read_text())
    assert results["retrieval"]["images"] == 40 and 0 <= results["retrieval"]["image_to_text"]["R@1"] <= 1
    assert results["concepts"]["concepts"] == 4 and results["concepts"]["head"] != ""
    exported = kclip.CLIP.load(str(run / "export/model.safetensors"))
    trained = kclip.CLIP.load(str(run / "train/checkpoints/step_00000010/model.safetensors"))
    assert all(torch.equal(a, b) for a, b in zip(exported.state_dict().values(), trained.state_dict().values()))
    assert (run / "export/hf/config.json").exists()
    for png in ("loss.png", "eval.png"):
        assert (run / "plots" / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert {json.loads(p.read_text())["status"] for p in (run / "stages").iterdir()} == {"done"}

    # Up to date: everything is skipped, from the CLI's plan and from Python.
    plan = subprocess.run([kclip_cli, "run", "--config", path, "--dry-run"], capture_output=True, text=True, check=True)
    assert plan.stdout.count(" skip ") == 6, plan.stdout
    again = kclip.run(config)
    assert all(s["action"] == "skip" for s in again["stages"]) and again["results"] == results

    # A changed setting reruns its stage and every later one; the stages before it stay.
    config["concepts"]["k"] = 3
    assert actions(kclip.plan_run(config)) == {"embed": "skip", "cluster": "run", "train": "run", "eval": "run",
                                               "export": "run", "plots": "run"}
    config["concepts"]["k"] = 4
    config["eval"]["csv_caption_key"] = "title"
    config["export"] = ["openai"]
    assert actions(kclip.plan_run(config))["train"] == "skip" and actions(kclip.plan_run(config))["export"] == "run"


def test_a_run_killed_in_training_resumes_to_the_same_weights(setup, tmp_path, kclip_cli):
    whole = setup("whole", epochs=6)
    subprocess.run([kclip_cli, "run", "--config", write_config(tmp_path / "whole.json", whole)], check=True,
                   capture_output=True)
    cut = setup("cut", epochs=6)
    command = [kclip_cli, "run", "--config", write_config(tmp_path / "cut.json", cut)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    checkpoints = pathlib.Path(cut["run_dir"]) / "train/checkpoints"
    deadline = time.time() + 180
    while not any(checkpoints.glob("step_*")) and process.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    time.sleep(random.Random().uniform(0.0, 0.3))
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL
    assert actions(kclip.plan_run(cut))["train"] == "resume"
    resumed = subprocess.run(command, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert "train (resume: interrupted)" in resumed.stderr
    final = "train/checkpoints/step_00000030/model.safetensors"
    assert (pathlib.Path(whole["run_dir"]) / final).read_bytes() == (pathlib.Path(cut["run_dir"]) / final).read_bytes()


def test_bad_run_configurations_are_one_clear_error(setup, tmp_path, kclip_cli):
    config = setup("bad")
    config["concepts"]["kk"] = 3
    out = subprocess.run([kclip_cli, "run", "--config", write_config(tmp_path / "a.json", config)], capture_output=True,
                         text=True)
    assert out.returncode == 2 and "unknown key concepts.kk" in out.stderr
    config = setup("bad")
    del config["teacher"]
    with pytest.raises(ValueError, match="train.alpha = 1 and train.beta = 0.5 need a teacher"):
        kclip.run(config)
    with pytest.raises(ValueError, match="run_dir"):
        kclip.run({"train": {"train_data": "x.csv"}})
    config = setup("bad")
    config["train"]["batch_size"] = "eight"
    with pytest.raises(ValueError, match="batch_size"):
        kclip.plan_run(config)
    assert not (tmp_path / "bad").exists()  # nothing written for a configuration that does not parse


def test_the_study_runs_quick(shared, tmp_path):
    """scripts/study.sh --quick: every configuration once on Flickr8k, a report with a number in every cell."""
    shared("models/stories15M/stories15M.bin")  # skips (or fails under KCLIP_REQUIRE_SHARED) without ../shared
    root = pathlib.Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, root / "scripts/study.py", "--quick", "--out", tmp_path / "study",
                          "--report", tmp_path / "RESULTS.md"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    report = (tmp_path / "RESULTS.md").read_text()
    rows = [line for line in report.splitlines() if line.startswith("| ") and "0." in line and "|" in line[2:]]
    table = [r for r in rows if r.count("|") == 12]  # run + 10 figures
    assert len(table) == 5, report
    for row in table:
        cells = [c.strip() for c in row.strip("|").split("|")[1:]]
        assert all(c == "–" or 0.0 <= float(c) <= 1.0 for c in cells), row
    assert "CPU-hours" in report and "GPU-hours" in report
    assert json.loads((tmp_path / "study/results.json").read_text())["seeds"] == [0]
