"""The same computations on CUDA as on the CPU. These run wherever a GPU is present (the CUDA machine's torch)
and skip elsewhere."""
import pytest
import torch

import kclip

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


def test_kmeans_on_cuda_matches_cpu_from_the_same_start():
    x = torch.rand(5000, 32, generator=torch.Generator().manual_seed(0))
    start = x[:16].clone()
    cpu = kclip.KMeans(16, iters=30, tol=0).fit(x, init=start)
    gpu = kclip.KMeans(16, iters=30, tol=0).fit(x.cuda(), init=start.cuda())
    assert gpu.centroids.is_cuda
    assert torch.allclose(gpu.centroids.cpu(), cpu.centroids, atol=1e-3)
    assert gpu.inertia == pytest.approx(cpu.inertia, rel=1e-4)
    assert gpu.soft_labels(x.cuda(), 0.5).is_cuda
    mini = kclip.KMeans(16, batch_size=512, iters=5).fit(x.cuda())
    assert mini.centroids.is_cuda and mini.inertia > 0


def test_losses_follow_the_features_device_and_autocast():
    img, txt = torch.randn(8, 16, device="cuda"), torch.randn(8, 16, device="cuda")
    teacher, labels = torch.randn(8, 32, device="cuda"), torch.softmax(torch.randn(8, 5, device="cuda"), 1)
    loss = kclip.KnowledgeClipLoss(16, teacher_dim=32, num_concepts=5)
    cpu_out = loss(img.cpu(), txt.cpu(), teacher.cpu(), labels.cpu())
    loss.to("cuda")
    out = loss(img, txt, teacher, labels)
    assert out["loss"].is_cuda
    assert torch.allclose(out["loss"].cpu(), cpu_out["loss"], rtol=1e-4)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        out = loss(img.bfloat16(), txt.bfloat16(), teacher.bfloat16(), labels)
    out["loss"].float().backward()
    assert all(p.grad is not None and p.grad.is_cuda for p in loss.parameters())


def test_clip_on_cuda_matches_cpu_and_trains_under_bf16_autocast():
    torch.manual_seed(0)
    model = kclip.CLIP(kclip.CLIPConfig.named("bench-s"))
    pixels, ids = torch.randn(8, 3, 64, 64), torch.randint(1, 49000, (8, 32))
    with torch.no_grad():
        cpu_image, cpu_text = model.encode_image(pixels), model.encode_text(ids)
    model.to("cuda")
    with torch.no_grad():
        image = model.encode_image(pixels)  # CPU inputs follow the model to the GPU
        text = model.encode_text(ids.cuda())
    assert image.is_cuda and text.is_cuda
    assert torch.allclose(image.cpu(), cpu_image, atol=1e-3) and torch.allclose(text.cpu(), cpu_text, atol=1e-3)
    model.train()
    model.set_grad_checkpointing(True)
    loss_fn = kclip.ContrastiveLoss().to("cuda")
    optimizer = torch.optim.AdamW(model.parameters() + loss_fn.parameters(), lr=1e-4)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        features = model.encode_image(pixels.cuda()), model.encode_text(ids.cuda())
        assert features[0].dtype == torch.bfloat16
        loss = loss_fn(*features)
    loss.float().backward()
    optimizer.step()
    assert all(p.grad is not None and p.grad.is_cuda and torch.isfinite(p.grad).all() for p in model.parameters())
    assert torch.cuda.max_memory_allocated() > 0


def _trainer_state(module):
    return {k: v.detach().float().cpu().clone() for k, v in module.state_dict().items()}


def _random_batch(n=8, size=64, context=77, seed=0):
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(n, 3, size, size, generator=g)
    text = torch.zeros(n, context, dtype=torch.long)
    text[:, 0], text[:, 6] = 49406, 49407
    text[:, 1:6] = torch.randint(1, 40000, (n, 5), generator=g)
    return images, text


def test_trainer_steps_on_cuda_equal_the_cpu_steps(tmp_path):
    """The same three fp32 steps (all three loss terms) on both devices: same losses, same weights."""
    images, text = _random_batch()
    teacher = torch.randn(8, 12, generator=torch.Generator().manual_seed(1))
    concepts = torch.softmax(torch.randn(8, 4, generator=torch.Generator().manual_seed(2)), 1)
    runs = {}
    torch.backends.cudnn.allow_tf32 = False  # the patch convolution in full fp32, like the CPU
    for device in ("cpu", "cuda"):
        trainer = kclip.Trainer(alpha=1.0, beta=0.5, gamma=1.0, teacher_dim=12, num_concepts=4, max_steps=3, lr=1e-3,
                                warmup=1, logs=str(tmp_path / device), progress=False, seed=1, device=device)
        assert trainer.device.startswith(device)
        losses = [trainer.train_step(images, text, teacher, concepts)["loss"] for _ in range(3)]
        runs[device] = losses, _trainer_state(trainer.model)
    assert runs["cuda"][0] == pytest.approx(runs["cpu"][0], rel=1e-4)
    cpu, gpu = runs["cpu"][1], runs["cuda"][1]
    worst = max((cpu[k] - gpu[k]).abs().max().item() for k in cpu)
    print(f"max weight difference CPU vs CUDA after 3 steps: {worst:.2e}")
    assert worst < 1e-3  # Adam steps are ±lr-sized: a wrong gradient moves weights by ~1e-3


def test_trainer_fits_on_cuda_under_bf16_with_pinned_batches_and_resumes(tmp_path):
    from data_fixtures import write_pairs
    write_pairs(tmp_path / "data", 48)
    options = dict(train_data=str(tmp_path / "data" / "pairs.csv"), batch_size=8, lr=1e-3, warmup=1, alpha=0, beta=0,
                   logs=str(tmp_path / "logs"), progress=False, workers=2, seed=3, device="cuda",
                   precision="amp_bf16", save_every_n_steps=2)
    loader = kclip.DataLoader(kclip.CsvDataset(str(tmp_path / "data" / "pairs.csv")), batch_size=4, pin_memory=True)
    assert loader.next()["images"].is_pinned()
    full = kclip.Trainer(name="full", max_steps=6, **options)
    full.fit()
    first = kclip.Trainer(name="split", max_steps=4, **options)
    first.fit()
    second = kclip.Trainer(name="split", max_steps=6, resume="latest", **options)
    assert second.step == 4
    second.fit()
    a, b = _trainer_state(full.model), _trainer_state(second.model)
    worst = max((a[k] - b[k]).abs().max().item() for k in a)
    print(f"CUDA bf16: max weight difference resumed vs uninterrupted: {worst:.2e}")
    assert worst < 1e-4
    assert all(v.dtype == torch.float32 and torch.isfinite(v).all() for v in a.values())
    saved = kclip.load_safetensors(str(tmp_path / "logs/full/checkpoints/step_00000006/model.safetensors"))
    assert all(not v.is_cuda for v in saved.values())


def test_llama_teacher_on_cuda_matches_cpu_in_fp32_and_bf16(tmp_path):
    import pathlib
    import sys
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / "bench"))
    import bench_llama

    config = {"hidden_size": 64, "intermediate_size": 160, "num_hidden_layers": 2, "num_attention_heads": 4,
              "num_key_value_heads": 2, "vocab_size": 300, "max_position_embeddings": 128, "rms_norm_eps": 1e-5,
              "rope_theta": 10000.0, "tie_word_embeddings": False}
    bench_llama.random_checkpoint(str(tmp_path), config)
    model = kclip.Llama.load(tmp_path)
    ids = torch.randint(0, 300, (3, 40), generator=torch.Generator().manual_seed(0))
    mask = torch.ones(3, 40, dtype=torch.long)
    mask[1, 25:] = 0
    with torch.no_grad():
        cpu = model.hidden_states(ids, mask)
        model.to("cuda")
        gpu = model.hidden_states(ids.cuda(), mask.cuda())
        assert gpu.is_cuda
        assert (gpu.cpu() - cpu)[mask.bool()].abs().max() < 1e-3
        model.to(torch.bfloat16)
        half = model.hidden_states(ids.cuda(), mask.cuda()).float().cpu()
    relative = ((half - cpu)[mask.bool()].norm() / cpu[mask.bool()].norm()).item()
    print(f"teacher bf16 vs fp32 relative error: {relative:.2e}")
    assert relative < 3e-2


def test_zero_shot_evaluation_on_cuda_equals_cpu(tmp_path):
    from data_fixtures import image_of
    for c, name in enumerate(["red_car", "blue_boat"]):
        (tmp_path / name).mkdir()
        for i in range(6):
            image_of(10 * c + i).save(tmp_path / name / f"{i}.png")
    torch.manual_seed(0)
    model = kclip.CLIP(kclip.CLIPConfig.named("tiny"))
    torch.backends.cudnn.allow_tf32 = False
    cpu = kclip.evaluate_zeroshot(model, str(tmp_path), templates="openai-cifar10", batch_size=4)
    cpu_features, _ = kclip.encode_images(model, kclip.ImageFolderDataset(tmp_path))
    model.to("cuda")
    gpu = kclip.evaluate_zeroshot(model, str(tmp_path), templates="openai-cifar10", batch_size=4)
    gpu_features, _ = kclip.encode_images(model, kclip.ImageFolderDataset(tmp_path))
    assert (gpu_features.cpu() - cpu_features).abs().max() < 1e-4
    assert gpu["top1"] == cpu["top1"] and gpu["per_class"] == cpu["per_class"]
