"""The trainer: configuration, schedules, AdamW, the step against a PyTorch reference, frozen towers, loss-weight
paths, accumulation, non-finite handling, checkpoints, exact resume after SIGKILL (CLI and Python), metrics and
plots, and a run directory's lock."""
import json
import math
import os
import pathlib
import random
import signal
import subprocess
import sys
import time

import pytest
import torch

import kclip
from conftest import BUILD
from data_fixtures import write_pairs

ENV = dict(os.environ, PYTHONPATH=str(BUILD / "python"))


def config(tmp_path, **overrides):
    csv = tmp_path / "data" / "pairs.csv"
    if not csv.exists():
        write_pairs(tmp_path / "data", 40)
    options = dict(train_data=str(csv), batch_size=8, epochs=2, lr=1e-3, warmup=1, alpha=0, beta=0,
                   logs=str(tmp_path / "logs"), name="run", progress=False, workers=2, seed=3)
    options.update(overrides)
    return kclip.TrainConfig(**options)


# An AdamW that acts as plain SGD: with eps far above |g|, the first update is lr·g/(|g| + eps) ≈ (lr/eps)·g, linear
# in the gradient, so comparing weights compares gradients (Adam alone would hide a wrongly scaled gradient).
SGD_PROBE = dict(lr=1.0, eps=1e3, wd=0.0, warmup=0, lr_scheduler="const", beta1=0.0, beta2=0.0)


def state(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def max_difference(a, b):
    assert a.keys() == b.keys()
    return max((a[k].double() - b[k].double()).abs().max().item() for k in a)


def random_batch(n=8, size=64, context=77, seed=0):
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(n, 3, size, size, generator=g)
    text = torch.zeros(n, context, dtype=torch.long)
    text[:, 0] = 49406
    text[:, 1:6] = torch.randint(1, 40000, (n, 5), generator=g)
    text[:, 6] = 49407
    return images, text


def test_config_is_one_table_for_json_attributes_and_flags(tmp_path, kclip_cli):
    c = kclip.TrainConfig(batch_size=8, lock_image=True, teacher_cache=tmp_path)
    assert c.batch_size == 8 and c.lock_image is True and c.teacher_cache == str(tmp_path) and c.lr == 5e-4
    c.epochs = 3
    assert kclip.TrainConfig.from_dict(c.to_dict()) == c
    (tmp_path / "run.json").write_text(json.dumps({"batch-size": 4, "model": "bench-s"}))
    assert kclip.TrainConfig.from_json(str(tmp_path / "run.json")).batch_size == 4
    with pytest.raises(ValueError, match="unknown training option 'batchsize'"):
        kclip.TrainConfig(batchsize=4)
    with pytest.raises(ValueError, match="'lr' is \"fast\": expected a finite number"):
        kclip.TrainConfig(lr="fast")
    with pytest.raises(ValueError, match="precision 'fp16': expected fp32 \\| amp_bf16"):
        kclip.TrainConfig(precision="fp16").validate()
    help_text = subprocess.run([kclip_cli, "train", "--help"], capture_output=True, text=True, check=True).stdout
    for key in kclip.TrainConfig.keys():
        assert "--" + key.replace("_", "-") in help_text.replace("--[no-]", "--"), key
    bad = subprocess.run([kclip_cli, "train", "--batch-size", "x"], capture_output=True, text=True)
    assert bad.returncode == 2 and "--batch-size 'x': expected a number" in bad.stderr


def test_learning_rate_schedules_are_open_clips():
    def open_clip_cosine(base, warmup, steps, step):  # open_clip_train/scheduler.py
        if step < warmup:
            return base * (step + 1) / warmup
        e, es = step - warmup, steps - warmup
        return 0.5 * (1 + math.cos(math.pi * e / es)) * base

    cosine = kclip.TrainConfig(lr=2e-3, warmup=5)
    for step in range(40):
        assert kclip.learning_rate_at(cosine, step, 40) == pytest.approx(open_clip_cosine(2e-3, 5, 40, step), abs=1e-15)
    const = kclip.TrainConfig(lr=2e-3, warmup=5, lr_scheduler="const")
    assert [kclip.learning_rate_at(const, s, 40) for s in (0, 4, 5, 39)] == pytest.approx([4e-4, 2e-3, 2e-3, 2e-3])


def test_adamw_matches_torch():
    torch.manual_seed(0)
    mine = {"w": torch.randn(5, 7, requires_grad=True), "b": torch.randn(7, requires_grad=True)}
    theirs = {k: v.detach().clone().requires_grad_() for k, v in mine.items()}
    opt = kclip.AdamW([{"params": {"w": mine["w"]}, "weight_decay": 0.1}, {"params": {"b": mine["b"]}}],
                      betas=(0.9, 0.98), eps=1e-6)
    ref = torch.optim.AdamW([{"params": [theirs["w"]], "weight_decay": 0.1}, {"params": [theirs["b"]], "weight_decay": 0}],
                            lr=1.0, betas=(0.9, 0.98), eps=1e-6)
    for step in range(6):
        lr = 1e-2 * (step + 1)
        for group in ref.param_groups:
            group["lr"] = lr
        x = torch.randn(3, 5)
        for p in (mine, theirs):
            ((x @ p["w"] + p["b"]).pow(2).sum()).backward()
        opt.step(lr)
        ref.step()
        opt.zero_grad()
        ref.zero_grad()
    assert torch.allclose(mine["w"], theirs["w"], atol=1e-6) and torch.allclose(mine["b"], theirs["b"], atol=1e-6)
    assert opt.steps == 6 and len(opt.buffers) == 2


def test_a_step_equals_the_same_step_written_in_pytorch(tmp_path):
    trainer = kclip.Trainer(alpha=1.0, beta=0.5, gamma=1.0, teacher_dim=12, num_concepts=4, max_steps=4, lr=1e-3,
                            wd=0.1, warmup=2, eps=1e-6, logs=str(tmp_path), progress=False, seed=1)
    model = kclip.CLIP(trainer.model.config)
    model.load_state_dict(state(trainer.model))
    loss_fn = kclip.KnowledgeClipLoss(64, teacher_dim=12, num_concepts=4, alpha=1.0, beta=0.5, gamma=1.0)
    loss_fn.load_state_dict(state(trainer.loss))
    # open_clip's groups: weight decay on matrices, not on gains, biases, embeddings or the logit scale
    decay = [n for n, p in model.named_parameters().items() if p.ndim >= 2 and "embedding" not in n]
    assert sorted(trainer.optimizer.param_groups[0]["names"]) == sorted(
        ["model." + n for n in decay] + ["loss." + n for n, p in loss_fn.named_parameters().items() if p.ndim >= 2])
    named = {**{"model." + n: p for n, p in model.named_parameters().items() if n != "logit_scale"},
             **{"loss." + n: p for n, p in loss_fn.named_parameters().items()}}
    groups = [[named[n] for n in g["names"]] for g in trainer.optimizer.param_groups]
    reference = torch.optim.AdamW([{"params": groups[0], "weight_decay": 0.1}, {"params": groups[1], "weight_decay": 0.0}],
                                  lr=1e-3, betas=(0.9, 0.98), eps=1e-6)
    images, text = random_batch()
    teacher = torch.randn(8, 12)
    concepts = torch.softmax(torch.randn(8, 4), 1)
    for step in range(3):
        result = trainer.train_step(images, text, teacher, concepts)
        out = loss_fn(model.encode_image(images), model.encode_text(text), teacher, concepts)
        assert result["loss"] == pytest.approx(out["loss"].item(), rel=1e-6)
        assert result["lr"] == kclip.learning_rate_at(trainer.config, step, 4)
        for group in reference.param_groups:
            group["lr"] = result["lr"]
        out["loss"].backward()
        reference.step()
        reference.zero_grad()
        loss_fn.contrastive.clamp_logit_scale_()
    assert max_difference(state(trainer.loss), state(loss_fn)) < 1e-6
    mine, theirs = state(trainer.model), state(model)
    mine.pop("logit_scale"), theirs.pop("logit_scale")
    # The key bias of attention has an exactly zero gradient (softmax ignores a shift of all scores); Adam turns the
    # rounding noise there into updates of up to lr per step, whichever implementation runs. Compared apart.
    for name in [k for k in mine if k.endswith("attn.in_proj_bias")]:
        width = mine[name].numel() // 3
        for s in (mine, theirs):
            assert (s[name][width : 2 * width] - model.state_dict()[name][width : 2 * width]).abs().max() <= 3 * 1e-3
            s[name][width : 2 * width] = 0
    assert max_difference(mine, theirs) < 1e-6
    # the model's logit scale follows the one the loss trains
    assert trainer.model.logit_scale.item() == trainer.loss.contrastive.logit_scale.item()
    assert result["logit_scale"] == pytest.approx(math.exp(trainer.loss.contrastive.logit_scale.item()))


@pytest.mark.parametrize("lock", ["lock_image", "lock_text"])
def test_frozen_towers_stay_unchanged(tmp_path, lock):
    trainer = kclip.Trainer(gamma=1.0, alpha=0, beta=0, max_steps=3, logs=str(tmp_path), progress=False, **{lock: True})
    before = state(trainer.model)
    images, text = random_batch()
    for _ in range(3):
        trainer.train_step(images, text)
    after = state(trainer.model)
    frozen = [k for k in before if k.startswith("visual.") == (lock == "lock_image") and k != "logit_scale"]
    trained = [k for k in before if k not in frozen and k != "logit_scale"]
    assert frozen and all(torch.equal(before[k], after[k]) for k in frozen)
    assert any(not torch.equal(before[k], after[k]) for k in trained)
    assert not any(n.startswith("model." + ("visual." if lock == "lock_image" else "transformer."))
                   for g in trainer.optimizer.param_groups for n in g["names"])


@pytest.mark.parametrize("weights", [(0, 0, 1), (1, 0, 0), (0, 1, 0), (1, 0.01, 1)])
def test_each_loss_term_alone_and_together(tmp_path, weights):
    alpha, beta, gamma = weights
    trainer = kclip.Trainer(alpha=alpha, beta=beta, gamma=gamma, teacher_dim=12 if alpha else 0,
                            num_concepts=4 if beta else 0, max_steps=2, logs=str(tmp_path), progress=False)
    images, text = random_batch()
    teacher = torch.randn(8, 12) if alpha else None
    concepts = torch.randint(0, 4, (8,)) if beta else None
    result = trainer.train_step(images, text, teacher, concepts)
    assert (result["contrastive"] is not None) == bool(gamma)
    assert (result["distillation"] is not None) == bool(alpha)
    assert (result["concept"] is not None) == bool(beta)
    parts = [w * result[k] for w, k in zip(weights, ["distillation", "concept", "contrastive"]) if w]
    assert result["loss"] == pytest.approx(sum(parts), rel=1e-5)
    if alpha:
        with pytest.raises(ValueError, match="alpha = 1 needs teacher embeddings"):
            trainer.train_step(images, text, None, concepts)
    with pytest.raises(ValueError, match="alpha, beta and gamma are all 0"):
        kclip.TrainConfig(alpha=0, beta=0, gamma=0).validate()


def test_bfloat16_autocast_steps(tmp_path):
    trainer = kclip.Trainer(precision="amp_bf16", alpha=1.0, beta=0.5, teacher_dim=12, num_concepts=4, max_steps=3,
                            logs=str(tmp_path), progress=False)
    images, text = random_batch()
    before = state(trainer.model)
    steps = [trainer.train_step(images, text, torch.randn(8, 12), torch.randint(0, 4, (8,))) for _ in range(3)]
    assert all(math.isfinite(s["loss"]) and not s["skipped"] for s in steps)
    assert all(v.dtype == torch.float32 for v in trainer.model.state_dict().values())  # weights stay float32
    assert max_difference(before, state(trainer.model)) > 0


def test_accumulation_gives_the_full_batch_gradient(tmp_path):
    images, text = random_batch(16)
    teacher, concepts = torch.randn(16, 12), torch.softmax(torch.randn(16, 4), 1)
    results = []
    for accum in (1, 4):
        t = kclip.Trainer(alpha=1.0, beta=0.5, teacher_dim=12, num_concepts=4, max_steps=1, accum_freq=accum,
                          logs=str(tmp_path), name=f"a{accum}", progress=False, seed=5, **SGD_PROBE)
        step = t.train_step(images, text, teacher, concepts)
        results.append((step, state(t.model), state(t.loss)))
    (full, model_full, loss_full), (accumulated, model_acc, loss_acc) = results
    assert accumulated["loss"] == pytest.approx(full["loss"], rel=1e-5)
    assert accumulated["grad_norm"] == pytest.approx(full["grad_norm"], rel=1e-4)
    assert max_difference(model_full, model_acc) < 1e-6 and max_difference(loss_full, loss_acc) < 1e-6


def test_non_finite_losses_stop_or_skip_the_step(tmp_path):
    images, text = random_batch()
    teacher = torch.randn(8, 12)
    teacher[2, 5] = float("nan")
    strict = kclip.Trainer(alpha=1.0, beta=0, teacher_dim=12, max_steps=5, logs=str(tmp_path), name="s", progress=False)
    before = state(strict.model)
    with pytest.raises(kclip.Error, match=r"step 1: the distillation term of the loss is nan \(the teacher embeddings "
                                          r"of this batch hold NaN/Inf"):
        strict.train_step(images, text, teacher)
    assert max_difference(before, state(strict.model)) == 0 and strict.step == 0

    lenient = kclip.Trainer(alpha=1.0, beta=0, teacher_dim=12, max_steps=5, nonfinite="skip", logs=str(tmp_path),
                            name="k", progress=False)
    before = state(lenient.model)
    result = lenient.train_step(images, text, teacher)
    assert result["skipped"] and lenient.skipped_steps == 1 and lenient.step == 0
    assert max_difference(before, state(lenient.model)) == 0
    assert not lenient.train_step(images, text, torch.nan_to_num(teacher))["skipped"] and lenient.step == 1
    path = pathlib.Path(lenient.save_checkpoint())
    assert path.name == "step_00000001"
    assert all(torch.isfinite(t).all() for t in kclip.load_safetensors(path / "model.safetensors").values())


def test_fit_writes_checkpoints_metrics_and_prunes(tmp_path, kclip_cli):
    trainer = kclip.Trainer(config(tmp_path, save_every_n_steps=2, keep=2, epochs=3))
    assert trainer.total_steps == 15  # 40 pairs // 8 per step, 3 epochs
    seen = []
    trainer.fit(callback=lambda t, r: seen.append(r["step"]))
    assert seen == list(range(1, 16))
    checkpoints = sorted(p.name for p in (tmp_path / "logs/run/checkpoints").iterdir())
    assert checkpoints == ["step_00000014", "step_00000015"]
    last = tmp_path / "logs/run/checkpoints/step_00000015"
    assert {p.name for p in last.iterdir()} == {"model.safetensors", "loss.safetensors", "optimizer.safetensors",
                                                 "trainer_state.json"}
    model = kclip.CLIP.load(str(last / "model.safetensors"))
    assert max_difference(state(model), state(trainer.model)) == 0
    records = [json.loads(line) for line in (tmp_path / "logs/run/metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == list(range(1, 16))
    assert all(isinstance(r["loss"], float) and math.isfinite(r["loss"]) for r in records)
    assert {"lr", "contrastive", "logit_scale", "images_per_s", "data_wait", "memory_mb", "epoch"} <= records[0].keys()
    assert json.loads((tmp_path / "logs/run/config.json").read_text())["batch_size"] == 8
    saved = json.loads((last / "trainer_state.json").read_text())
    assert saved["step"] == 15 and saved["last_step"]["loss"] == pytest.approx(records[-1]["loss"])
    assert saved["cursors"] == [[2, 40, 5, 0]] and saved["config"]["epochs"] == 3  # epoch 2 read to its end
    out = subprocess.run([kclip_cli, "plot", tmp_path / "logs/run/metrics.jsonl", tmp_path / "loss.png"],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_fit_evaluates_every_n_steps_into_the_metrics(tmp_path):
    from data_fixtures import image_of
    for name, shift in [("red", 0), ("blue", 5)]:
        (tmp_path / "classes" / name).mkdir(parents=True)
        for i in range(3):
            image_of(i + shift).save(tmp_path / "classes" / name / f"{i}.png")
    c = config(tmp_path, epochs=1, eval_every_n_steps=2, val_zeroshot=str(tmp_path / "classes"), val_templates="simple")
    c.val_retrieval = c.train_data
    c.csv_img_key, c.csv_caption_key = "filepath", "title"
    kclip.Trainer(c).fit()
    records = [json.loads(line) for line in (tmp_path / "logs/run/metrics.jsonl").read_text().splitlines()]
    evals = [r for r in records if r["type"] == "eval"]
    assert [r["step"] for r in evals] == [2, 4, 5]  # every 2 steps, and at the end
    assert 0 <= evals[-1]["zeroshot"]["top1"] <= 1 and "R@1" in evals[-1]["retrieval"]["image_to_text"]
    assert [r["step"] for r in records if r["type"] == "train"] == [1, 2, 3, 4, 5]
    with pytest.raises(ValueError, match="eval_every_n_steps = 2 needs val_zeroshot or val_retrieval"):
        kclip.TrainConfig(eval_every_n_steps=2).validate()


def test_a_second_trainer_cannot_share_a_run_directory(tmp_path):
    first = kclip.Trainer(config(tmp_path))
    first.save_checkpoint()
    second = kclip.Trainer(config(tmp_path))
    for _ in range(2):  # and again: a refused trainer stays refused
        with pytest.raises(kclip.Error, match="another kclip trainer is using this run directory"):
            second.save_checkpoint()
    del first


def train_args(csv, logs, name, extra=()):
    return ["train", "--train-data", str(csv), "--model", "tiny", "--batch-size", "8", "--epochs", "3", "--lr", "1e-3",
            "--warmup", "2", "--alpha", "0", "--beta", "0", "--logs", str(logs), "--name", name,
            "--save-every-n-steps", "2", "--no-progress", *extra]


def kill_at_random_step(command, checkpoints, rng, env=None):
    """Starts `command`, waits for its first checkpoint, SIGKILLs it at a random moment of the next steps."""
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    deadline = time.time() + 120
    while not any(checkpoints.glob("step_*")) and process.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    time.sleep(rng.uniform(0.0, 0.8))
    process.send_signal(signal.SIGKILL)
    process.wait()
    return process


def test_cli_resumes_exactly_after_sigkill(tmp_path, kclip_cli):
    csv = write_pairs(tmp_path / "data", 40)
    logs = tmp_path / "logs"
    subprocess.run([kclip_cli, *train_args(csv, logs, "whole")], check=True, capture_output=True)
    rng = random.Random(int(time.time()))
    killed = kill_at_random_step([kclip_cli, *train_args(csv, logs, "cut")], logs / "cut/checkpoints", rng)
    assert killed.returncode == -signal.SIGKILL
    resumed = subprocess.run([kclip_cli, *train_args(csv, logs, "cut", ["--resume", "latest"])], capture_output=True,
                             text=True)
    assert resumed.returncode == 0, resumed.stderr
    final = "checkpoints/step_00000015/model.safetensors"
    assert (logs / "whole" / final).read_bytes() == (logs / "cut" / final).read_bytes()
    steps = [json.loads(line)["step"] for line in (logs / "cut/metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 16))  # nothing lost, nothing twice


def test_python_trainer_resumes_exactly_after_sigkill(tmp_path):
    write_pairs(tmp_path / "data", 40)
    script = tmp_path / "train.py"
    script.write_text(
        "import sys, kclip\n"
        f"c = kclip.TrainConfig(train_data={str(tmp_path / 'data/pairs.csv')!r}, batch_size=8, epochs=3, lr=1e-3,\n"
        f"    warmup=2, alpha=0, beta=0, logs={str(tmp_path / 'logs')!r}, name=sys.argv[1], save_every_n_steps=2,\n"
        "    progress=False, resume='latest')\n"
        "kclip.Trainer(c).fit()\n")
    subprocess.run([sys.executable, script, "whole"], check=True, env=ENV)
    rng = random.Random(int(time.time()) + 1)
    kill_at_random_step([sys.executable, str(script), "cut"], tmp_path / "logs/cut/checkpoints", rng, env=ENV)
    subprocess.run([sys.executable, script, "cut"], check=True, env=ENV)
    final = "checkpoints/step_00000015/model.safetensors"
    assert (tmp_path / "logs/whole" / final).read_bytes() == (tmp_path / "logs/cut" / final).read_bytes()


def test_resume_refuses_a_changed_data_order(tmp_path):
    trainer = kclip.Trainer(config(tmp_path, max_steps=2))
    trainer.fit()
    del trainer
    other = kclip.Trainer(config(tmp_path, batch_size=4))
    with pytest.raises(kclip.Error, match="trained with batch_size = 8, now 4"):
        other.resume()


def test_a_step_inside_no_grad_still_trains(tmp_path):
    trainer = kclip.Trainer(alpha=0, beta=0, max_steps=2, logs=str(tmp_path), progress=False)
    before = state(trainer.model)
    with torch.no_grad():
        trainer.train_step(*random_batch())
    assert max_difference(before, state(trainer.model)) > 0


def test_a_checkpoint_half_written_when_killed_is_never_loaded(tmp_path):
    """A kill in the middle of a save leaves `.step_N.tmp-PID/` (checkpoints are renamed into place when
    complete): the next start removes it, and resume takes the last complete checkpoint."""
    trainer = kclip.Trainer(config(tmp_path, max_steps=2, save_every_n_steps=2))
    trainer.fit()
    checkpoints = tmp_path / "logs" / "run" / "checkpoints"
    assert sorted(p.name for p in checkpoints.iterdir()) == ["step_00000002"]
    del trainer
    half = checkpoints / ".step_00000004.tmp-12345"
    half.mkdir()
    (half / "model.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}")  # cut short
    resumed = kclip.Trainer(config(tmp_path, max_steps=2, save_every_n_steps=2, resume="latest"))
    resumed.fit()
    assert resumed.step == 2
    assert sorted(p.name for p in checkpoints.iterdir()) == ["step_00000002"]
