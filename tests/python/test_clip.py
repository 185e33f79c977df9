"""kclip.CLIP from Python against OpenAI's reference clip/model.py outputs (../shared/golden/clip-tiny)."""
import pytest
import torch

import kclip


def test_clip_matches_openai_reference_outputs(shared):
    model = kclip.CLIP.load(shared("golden/clip-tiny/model.safetensors"))
    expected = kclip.load_safetensors(shared("golden/clip-tiny/expected.safetensors"))
    assert (model.config.embed_dim, model.config.vision_heads, model.config.image_size) == (64, 2, 64)
    with torch.no_grad():
        assert (model.encode_image(expected["pixel_values"]) - expected["image_features"]).abs().max() < 1e-4
        assert (model.encode_text(expected["input_ids"]) - expected["text_features"]).abs().max() < 1e-4
        per_image, per_text = model(expected["pixel_values"], expected["input_ids"])
    assert (per_image - expected["logits_per_image"]).abs().max() < 1e-3
    assert (per_text - expected["logits_per_text"]).abs().max() < 1e-3


def test_named_configs_and_training_from_python():
    config = kclip.CLIPConfig.named("bench-s")
    assert (config.image_size, config.patch_size, config.vision_width, config.context_length) == (64, 8, 256, 32)
    model = kclip.CLIP(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    loss_fn = kclip.ContrastiveLoss()
    pixels, ids = torch.randn(4, 3, 64, 64), torch.randint(1, 49407, (4, 32))
    loss = loss_fn(model.encode_image(pixels), model.encode_text(ids))
    loss.backward()
    before = model.named_parameters()["visual.proj"].clone()
    optimizer.step()
    assert not torch.equal(before, model.named_parameters()["visual.proj"])
    with pytest.raises(ValueError, match="no CLIP config named"):
        kclip.CLIPConfig.named("ViT-Z-99")


def test_hugging_face_layout_round_trip(shared, tmp_path):
    openai = kclip.CLIP.load(shared("golden/clip-tiny/model.safetensors"))
    openai.save(tmp_path / "hf", layout="hf")
    config = __import__("json").loads((tmp_path / "hf" / "config.json").read_text())
    assert config["vision_config"]["hidden_size"] == 128 and config["projection_dim"] == 64
    hf = kclip.CLIP.load(tmp_path / "hf")
    expected = kclip.load_safetensors(shared("golden/clip-tiny/expected.safetensors"))
    with torch.no_grad():
        assert torch.equal(hf.encode_image(expected["pixel_values"]), openai.encode_image(expected["pixel_values"]))
        assert torch.equal(hf.encode_text(expected["input_ids"]), openai.encode_text(expected["input_ids"]))
