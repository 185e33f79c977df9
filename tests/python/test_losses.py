"""Loss modules against independent plain-torch formulas (float64), autograd from Python, torch.optim, errors,
and the contrastive loss gathered across two real processes (Gloo over loopback)."""
import math
import socket
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

import kclip

torch.manual_seed(0)


def features(batch=6, dim=5):
    return (torch.randn(batch, dim, dtype=torch.float64, requires_grad=True),
            torch.randn(batch, dim, dtype=torch.float64, requires_grad=True))


# ---- independent formulas ---------------------------------------------------------------------------------

def clip_loss_reference(img, txt, logit_scale):
    img, txt = img / img.norm(dim=1, keepdim=True), txt / txt.norm(dim=1, keepdim=True)
    logits = logit_scale.clamp(max=math.log(100)).exp() * img @ txt.T
    labels = torch.arange(len(img))
    log_p_img = logits - logits.logsumexp(1, keepdim=True)
    log_p_txt = logits.T - logits.T.logsumexp(1, keepdim=True)
    return -(log_p_img[labels, labels].mean() + log_p_txt[labels, labels].mean()) / 2


def mlp_head(params, prefix, x):
    h = (x @ params[f"{prefix}.0.weight"].T + params[f"{prefix}.0.bias"]).clamp(min=0)
    return h @ params[f"{prefix}.2.weight"].T + params[f"{prefix}.2.bias"]


def soft_ce_reference(logits, soft):
    return -(soft * (logits - logits.logsumexp(1, keepdim=True))).sum(1).mean()


def assert_close(a, b, tol=1e-6):
    assert torch.allclose(a, b, atol=tol, rtol=0), (a, b)


# ---- ContrastiveLoss --------------------------------------------------------------------------------------

def test_contrastive_value_and_gradients_equal_the_formula():
    loss = kclip.ContrastiveLoss().to(torch.float64)
    assert loss.logit_scale.item() == pytest.approx(math.log(1 / 0.07))
    img, txt = features()
    got = loss(img, txt)
    got.backward()
    img2, txt2 = img.detach().clone().requires_grad_(), txt.detach().clone().requires_grad_()
    scale = loss.logit_scale.detach().clone().requires_grad_()
    want = clip_loss_reference(img2, txt2, scale)
    want.backward()
    assert_close(got, want)
    assert_close(img.grad, img2.grad)
    assert_close(txt.grad, txt2.grad)
    assert_close(loss.logit_scale.grad, scale.grad)


def test_contrastive_logit_scale_is_clamped_and_optimisable():
    loss = kclip.ContrastiveLoss(init_logit_scale=6.0).to(torch.float64)
    img, txt = features()
    assert_close(loss(img, txt), clip_loss_reference(img, txt, torch.tensor(math.log(100), dtype=torch.float64)))
    loss.clamp_logit_scale_()
    assert loss.logit_scale.item() == pytest.approx(math.log(100))
    fresh = kclip.ContrastiveLoss().to(torch.float64)
    opt = torch.optim.SGD(fresh.parameters(), lr=0.5)
    before = fresh.logit_scale.item()
    fresh(img, txt).backward()
    opt.step()
    assert fresh.logit_scale.item() != before  # the optimiser updated the C++ parameter in place


def test_contrastive_gradcheck_wrt_features():
    loss = kclip.ContrastiveLoss().to(torch.float64)
    assert torch.autograd.gradcheck(lambda a, b: loss(a, b), features(4, 3))


# ---- TextDistillationLoss ---------------------------------------------------------------------------------

@pytest.mark.parametrize("head", ["linear", "mlp"])
@pytest.mark.parametrize("kind", ["mse", "cosine"])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_distillation_equals_the_formula(head, kind, reduction):
    loss = kclip.TextDistillationLoss(5, 7, head=head, hidden=4, kind=kind, reduction=reduction).to(torch.float64)
    student = torch.randn(6, 5, dtype=torch.float64, requires_grad=True)
    teacher = torch.randn(6, 7, dtype=torch.float64) * 3 + 1
    p = {k: v.detach() for k, v in loss.named_parameters().items()}
    if head == "linear":
        assert set(p) == {"projection.0.weight"}  # W_e, no bias: the paper's E_T(x)·W_e
        predicted = student @ p["projection.0.weight"].T
    else:
        predicted = mlp_head(p, "projection", student)
    per = ((predicted - teacher) ** 2).sum(1) if kind == "mse" else 1 - F.cosine_similarity(predicted, teacher, dim=1)
    want = per.mean() if reduction == "mean" else per.sum()
    assert_close(loss(student, teacher), want)


def test_distillation_standardises_targets_with_stored_statistics():
    loss = kclip.TextDistillationLoss(4, 3).to(torch.float64)
    teacher = torch.randn(50, 3, dtype=torch.float64) * torch.tensor([1.0, 100.0, 0.01], dtype=torch.float64) + 5
    mean, std = kclip.TextDistillationLoss.target_statistics(teacher)
    assert_close(mean, teacher.mean(0).float(), 1e-5)
    assert_close(std, teacher.std(0, unbiased=False).float(), 1e-3)
    loss.set_target_statistics(mean, std)
    student = torch.randn(50, 4, dtype=torch.float64)
    w = loss.named_parameters()["projection.0.weight"].detach()
    z = (teacher - mean.double()) / std.double()
    assert_close(loss(student, teacher), ((student @ w.T - z) ** 2).sum(1).mean())
    assert torch.equal(loss.state_dict()["target_mean"], mean.double())
    with pytest.raises(ValueError, match="std must be finite and positive|std finite and positive"):
        loss.set_target_statistics(mean, torch.zeros(3))


def test_distillation_gradcheck_wrt_student():
    loss = kclip.TextDistillationLoss(3, 4, head="mlp", hidden=5).to(torch.float64)
    student = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    teacher = torch.randn(4, 4, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda s: loss(s, teacher), (student,))


# ---- ConceptLoss ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["per_modality", "concat"])
def test_concept_loss_equals_the_formula_with_soft_and_hard_labels(mode):
    loss = kclip.ConceptLoss(5, 4, mode=mode, hidden=6).to(torch.float64)
    img, txt = features(6, 5)
    soft = torch.softmax(torch.randn(6, 4, dtype=torch.float64), 1)
    hard = torch.randint(0, 4, (6,))
    p = {k: v.detach() for k, v in loss.named_parameters().items()}
    for labels, target in ((soft, soft), (hard, F.one_hot(hard, 4).double())):
        if mode == "per_modality":
            want = (soft_ce_reference(mlp_head(p, "image_head", img), target)
                    + soft_ce_reference(mlp_head(p, "text_head", txt), target)) / 2
        else:
            want = soft_ce_reference(mlp_head(p, "concat_head", torch.cat([txt, img], 1)), target)
        assert_close(loss(img, txt, labels), want)


def test_concept_gradcheck_wrt_embeddings():
    loss = kclip.ConceptLoss(3, 4, hidden=5).to(torch.float64)
    soft = torch.softmax(torch.randn(4, 4, dtype=torch.float64), 1)
    assert torch.autograd.gradcheck(lambda a, b: loss(a, b, soft), features(4, 3))


def test_concept_label_errors():
    loss = kclip.ConceptLoss(3, 4)
    img, txt = torch.randn(2, 3), torch.randn(2, 3)
    with pytest.raises(ValueError, match="row 1 sums to 0.5"):
        loss(img, txt, torch.tensor([[1.0, 0, 0, 0], [0.5, 0, 0, 0]]))
    with pytest.raises(ValueError, match="negative"):
        loss(img, txt, torch.tensor([[1.5, -0.5, 0, 0], [1.0, 0, 0, 0]]))
    with pytest.raises(ValueError, match=r"soft labels have shape \[2, 3\]: expected \[2, 4\]"):
        loss(img, txt, torch.full((2, 3), 1 / 3))
    with pytest.raises(ValueError, match=r"class ids must lie in \[0, 4\)"):
        loss(img, txt, torch.tensor([0, 4]))


# ---- KnowledgeClipLoss ------------------------------------------------------------------------------------

def test_knowledge_clip_loss_is_the_weighted_sum_of_its_terms():
    loss = kclip.KnowledgeClipLoss(5, teacher_dim=7, num_concepts=4, alpha=1.0, beta=0.01, gamma=1.0).to(torch.float64)
    img, txt = features(6, 5)
    teacher = torch.randn(6, 7, dtype=torch.float64)
    labels = torch.softmax(torch.randn(6, 4, dtype=torch.float64), 1)
    out = loss(img, txt, teacher, labels)
    assert_close(out["contrastive"], loss.contrastive(img, txt))
    assert_close(out["distillation"], loss.distillation(txt, teacher))
    assert_close(out["concept"], loss.concept(img, txt, labels))
    assert_close(out["loss"], out["distillation"] + 0.01 * out["concept"] + out["contrastive"])
    out["loss"].backward()
    assert all(p.grad is not None for p in loss.parameters())
    assert torch.autograd.gradcheck(lambda a, b: loss(a, b, teacher, labels)["loss"], features(6, 5))


def test_zero_weight_terms_are_skipped_entirely():
    loss = kclip.KnowledgeClipLoss(5, alpha=0.0, beta=0.0)  # contrastive only: no teacher, no concepts
    out = loss(torch.randn(3, 5), torch.randn(3, 5))
    assert set(out) == {"loss", "contrastive"} and loss.distillation is None and loss.concept is None
    assert list(loss.named_parameters()) == ["contrastive.logit_scale"]
    with pytest.raises(ValueError, match="alpha=1 needs teacher embeddings"):
        kclip.KnowledgeClipLoss(5, teacher_dim=4, beta=0.0)(torch.randn(3, 5), torch.randn(3, 5))


def test_shape_and_dtype_mismatches_are_clear_errors():
    loss = kclip.ContrastiveLoss()
    with pytest.raises(ValueError, match=r"text_features has shape \[4, 3\]: expected \[batch, 5\]"):
        loss(torch.randn(4, 5), torch.randn(4, 3))
    with pytest.raises(ValueError, match="different batch sizes"):
        loss(torch.randn(4, 5), torch.randn(3, 5))
    with pytest.raises(ValueError, match="expected one dtype"):
        loss(torch.randn(4, 5), torch.randn(4, 5, dtype=torch.float64))
    with pytest.raises(ValueError, match="expected a floating-point tensor"):
        loss(torch.ones(4, 5, dtype=torch.long), torch.ones(4, 5, dtype=torch.long))
    with pytest.raises(ValueError, match="head='conv'"):
        kclip.TextDistillationLoss(4, 8, head="conv")


# ---- across processes -------------------------------------------------------------------------------------

WORKER = r"""
import sys, torch, torch.distributed as dist, kclip
rank, port, out = int(sys.argv[1]), sys.argv[2], sys.argv[3]
dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
torch.manual_seed(0)
img_all, txt_all = torch.randn(8, 5, dtype=torch.float64), torch.randn(8, 5, dtype=torch.float64)
results = {}
for local_loss in (False, True):
    for with_grad in (False, True):
        loss = kclip.ContrastiveLoss(local_loss=local_loss, gather_with_grad=with_grad).to(torch.float64)
        img = img_all[4 * rank:4 * rank + 4].clone().requires_grad_()
        txt = txt_all[4 * rank:4 * rank + 4].clone().requires_grad_()
        value = loss(img, txt)
        value.backward()
        key = f"{int(local_loss)}{int(with_grad)}"
        results[key + ".loss"] = value.detach()
        results[key + ".img_grad"], results[key + ".txt_grad"] = img.grad, txt.grad
        results[key + ".scale_grad"] = loss.logit_scale.grad
kclip.save_safetensors(out, results)
dist.destroy_process_group()
"""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_contrastive_across_two_gloo_processes_matches_one_process(tmp_path):
    port = free_port()
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, str(r), str(port), str(tmp_path / f"r{r}.st")])
             for r in range(2)]
    assert all(p.wait(timeout=120) == 0 for p in procs)
    ranks = [kclip.load_safetensors(tmp_path / f"r{r}.st") for r in range(2)]

    torch.manual_seed(0)
    img, txt = torch.randn(8, 5, dtype=torch.float64), torch.randn(8, 5, dtype=torch.float64)
    single = kclip.ContrastiveLoss().to(torch.float64)
    img.requires_grad_(), txt.requires_grad_()
    full = single(img, txt)
    full.backward()

    for key in ("00", "01", "10", "11"):
        local_loss, with_grad = key == "10" or key == "11", key.endswith("1")
        losses = torch.stack([r[key + ".loss"] for r in ranks])
        # every rank's loss is the full loss; local losses average to it (what DDP reports)
        assert_close(losses.mean() if local_loss else losses[0], full.detach(), 1e-10)
        if not local_loss:
            assert_close(losses[1], full.detach(), 1e-10)
        # logit_scale's gradient, averaged over ranks as DDP does, is the single-process one
        assert_close(torch.stack([r[key + ".scale_grad"] for r in ranks]).mean(), single.logit_scale.grad, 1e-10)
        if with_grad or not local_loss:
            # gather_with_grad: each rank holds world × its slice's gradient (DDP's mean divides it back);
            # without: the full loss on each rank gives each slice exactly its gradient.
            scale = 2.0 if with_grad else 1.0
            for r in range(2):
                assert_close(ranks[r][key + ".img_grad"] / scale, img.grad[4 * r:4 * r + 4], 1e-10)
                assert_close(ranks[r][key + ".txt_grad"] / scale, txt.grad[4 * r:4 * r + 4], 1e-10)
