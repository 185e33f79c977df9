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
