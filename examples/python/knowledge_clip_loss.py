"""Optimise the Knowledge-CLIP objective on synthetic paired features for a few steps.

A toy stand-in for the student (two linear towers over shared latent "scenes") shows every term of
L = α·L_emb + β·L_concept + γ·L_contrastive falling together, with torch.optim updating both the towers and the
loss modules' own parameters (logit scale, W_e, concept heads).

    python3 examples/python/knowledge_clip_loss.py [--steps 60]
"""
import argparse

import torch

import kclip


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=60)
    args = parser.parse_args()
    torch.manual_seed(0)
    batch, latent, embed, teacher_dim, concepts = 64, 16, 32, 128, 10

    image_tower, text_tower = torch.nn.Linear(48, embed), torch.nn.Linear(40, embed)
    to_pixels, to_words, to_teacher = torch.randn(latent, 48), torch.randn(latent, 40), torch.randn(latent, teacher_dim)
    centroids = torch.randn(concepts, teacher_dim) * 4

    loss_fn = kclip.KnowledgeClipLoss(embed, teacher_dim=teacher_dim, num_concepts=concepts, distill_head="mlp")
    # Standardise teacher targets with statistics of a sample (in real use: the embedding cache), so no single
    # teacher dimension dominates the squared error.
    loss_fn.distillation.set_target_statistics(*kclip.TextDistillationLoss.target_statistics(
        torch.randn(4096, latent) @ to_teacher))
    params = list(image_tower.parameters()) + list(text_tower.parameters()) + loss_fn.parameters()
    optimizer = torch.optim.AdamW(params, lr=3e-3)

    for step in range(args.steps + 1):
        scenes = torch.randn(batch, latent)
        teacher = scenes @ to_teacher                      # the teacher's caption embedding
        labels = torch.softmax(-torch.cdist(teacher, centroids) ** 2 / 500, 1)  # soft concept labels
        out = loss_fn(image_tower(scenes @ to_pixels), text_tower(scenes @ to_words), teacher, labels)
        optimizer.zero_grad()
        out["loss"].backward()
        optimizer.step()
        loss_fn.contrastive.clamp_logit_scale_()
        if step % 20 == 0:
            terms = "  ".join(f"{k} {v.item():8.3f}" for k, v in out.items())
            print(f"step {step:3d}  {terms}  logit_scale {loss_fn.contrastive.logit_scale.item():.3f}")


if __name__ == "__main__":
    main()
