"""kclip.CLIP from Python against OpenAI's reference clip/model.py outputs (../shared/golden/clip-tiny)."""
import json
import pytest
import torch

import kclip
from clip_reference import EagerCLIP


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


def test_text_and_images_end_to_end_through_tokenizer_and_preprocess(shared):
    """Captions through kclip.ClipTokenizer and photos through kclip.preprocess give OpenAI's features."""
    import json
    model = kclip.CLIP.load(shared("golden/clip-tiny/model.safetensors"))
    expected = kclip.load_safetensors(shared("golden/clip-tiny/expected.safetensors"))
    golden = shared("golden/clip-tiny")
    captions = json.loads((golden / "captions.json").read_text(encoding="utf-8"))
    images = json.loads((golden / "images.json").read_text(encoding="utf-8"))
    tokenizer = kclip.ClipTokenizer(shared("tokenizers/clip/bpe_simple_vocab_16e6.txt.gz"))
    with torch.no_grad():
        text = model.encode_text(tokenizer(captions))
        image = model.encode_image(kclip.preprocess([golden / name for name in images], model.config.image_size))
    assert (text - expected["text_features"]).abs().max() < 1e-4
    assert (image - expected["image_features"]).abs().max() < 5e-3  # JPEG decoders differ by < 0.03 grey levels


def test_grad_checkpointing_same_gradients_and_cpu_autocast():
    torch.manual_seed(0)
    model = kclip.CLIP(kclip.CLIPConfig.named("tiny"))
    model.train()
    pixels, ids = torch.randn(3, 3, 64, 64), torch.randint(1, 49000, (3, 77))
    loss_fn = kclip.ContrastiveLoss()

    def gradients(checkpointing):
        model.set_grad_checkpointing(checkpointing)
        model.zero_grad()
        loss = loss_fn(model.encode_image(pixels), model.encode_text(ids))
        loss.backward()
        return [loss.detach()] + [p.grad.clone() for p in model.parameters() if p.grad is not None]

    plain, checkpointed = gradients(False), gradients(True)
    # every parameter but the model's logit_scale (ContrastiveLoss has its own) has a gradient, plus the loss
    assert len(plain) == len(checkpointed) == len(model.parameters())
    assert max((a - b).abs().max().item() for a, b in zip(plain, checkpointed)) < 1e-5

    model.eval()
    with torch.no_grad():
        exact = model.encode_image(pixels)
        with torch.autocast("cpu", dtype=torch.bfloat16):  # Python's autocast reaches the C++ model
            fast = model.encode_image(pixels)
    assert fast.dtype == torch.bfloat16
    assert 0 < ((fast.float() - exact).norm() / exact.norm()).item() < 0.05


def test_model_dtype_follows_to():
    model = kclip.CLIP(kclip.CLIPConfig.named("tiny"))
    model.eval()
    pixels, ids = torch.randn(2, 3, 64, 64), torch.randint(1, 49000, (2, 77))
    with torch.no_grad():
        image, text = model.encode_image(pixels), model.encode_text(ids)
        model.to(torch.float64)
        assert model.encode_image(pixels).dtype == torch.float64
        assert (model.encode_image(pixels) - image.double()).abs().max() < 1e-5
        assert (model.encode_text(ids) - text.double()).abs().max() < 1e-5
        model.to(torch.bfloat16)  # LayerNorms still compute in float32
        low = model.encode_text(ids)
        assert low.dtype == torch.bfloat16 and ((low.float() - text).norm() / text.norm()) < 0.02


def test_hugging_face_first_round_trip_and_half_precision_files(shared, tmp_path):
    """HF -> OpenAI -> HF reproduces every tensor; HF directories in F16 and BF16 load too."""
    openai = kclip.CLIP.load(shared("golden/clip-tiny/model.safetensors"))
    openai.save(tmp_path / "hf", layout="hf")
    kclip.CLIP.load(tmp_path / "hf").save(tmp_path / "openai.safetensors")
    kclip.CLIP.load(tmp_path / "openai.safetensors").save(tmp_path / "hf2", layout="hf")
    first, second = kclip.load_safetensors(tmp_path / "hf"), kclip.load_safetensors(tmp_path / "hf2")
    assert first.keys() == second.keys()
    assert all(torch.equal(first[k], second[k]) for k in first)

    expected = kclip.load_safetensors(shared("golden/clip-tiny/expected.safetensors"))
    for dtype, tolerance in ((torch.float16, 1e-4), (torch.bfloat16, 0.1)):
        directory = tmp_path / str(dtype)
        directory.mkdir()
        (directory / "config.json").write_text((tmp_path / "hf" / "config.json").read_text())
        kclip.save_safetensors(directory / "model.safetensors", {k: v.to(dtype) for k, v in first.items()})
        model = kclip.CLIP.load(directory)
        with torch.no_grad():  # the golden weights are F16: F16 files are lossless, BF16 ones round them
            assert (model.encode_text(expected["input_ids"]) - expected["text_features"]).abs().max() < tolerance


def test_config_from_json_and_its_errors(tmp_path):
    path = tmp_path / "my-clip.json"
    path.write_text('{"embed_dim": 32, "quick_gelu": false, "vision_cfg": {"image_size": 32, "layers": 1, '
                    '"width": 64, "patch_size": 16}, "text_cfg": {"context_length": 16, "vocab_size": 49408, '
                    '"width": 64, "heads": 2, "layers": 1}}')
    config = kclip.CLIPConfig.from_json(path)
    assert (config.embed_dim, config.image_size, config.vision_heads, config.activation) == (32, 32, 1, "gelu")
    model = kclip.CLIP(config)
    with torch.no_grad():
        assert model.encode_text(torch.randint(1, 49000, (2, 16))).shape == (2, 32)
    path.write_text('{"embed_dim": 32, "vision_cfg": {"image_size": 30, "layers": 1, "width": 64, "patch_size": 16}}')
    with pytest.raises(kclip.Error, match="my-clip.json"):
        kclip.CLIPConfig.from_json(path)
    path.write_text("{not json")
    with pytest.raises(kclip.Error, match="my-clip.json: not valid JSON"):
        kclip.CLIPConfig.from_json(path)


def test_released_architectures_have_openais_parameter_counts():
    """The shipped configs build models with exactly as many parameters as OpenAI's released checkpoints."""
    released = {"ViT-B-32": 151_277_313, "ViT-B-16": 149_620_737, "ViT-L-14": 427_616_513}
    for name, count in released.items():
        model = kclip.CLIP(kclip.CLIPConfig.named(name))
        assert sum(p.numel() for p in model.parameters()) == count, name


def test_text_features_do_not_depend_on_padding_after_the_last_end_of_text():
    """encode_text skips the positions after the batch's last end-of-text token (the causal mask keeps them from
    every feature): a batch of short captions gives the features it gives beside a caption filling the context."""
    torch.manual_seed(0)
    model = kclip.CLIP(kclip.CLIPConfig.named("tiny"))
    short = torch.zeros(3, 77, dtype=torch.long)
    short[:, 0] = 49406
    short[:, 1:6] = torch.randint(1, 40000, (3, 5))
    short[:, 6] = 49407
    full = torch.randint(1, 40000, (1, 77))
    full[0, 0], full[0, 76] = 49406, 49407
    alone = model.encode_text(short)
    beside = model.encode_text(torch.cat([short, full]))[:3]
    assert torch.allclose(alone, beside, atol=1e-6)
    (alone.sum() * 2).backward()
    grads = {k: p.grad.clone() for k, p in model.named_parameters().items() if p.grad is not None}
    model.zero_grad()
    (beside.sum() * 2).backward()
    for k, p in model.named_parameters().items():
        if k in grads:
            assert torch.allclose(grads[k], p.grad, atol=1e-5), k


ODD_CONFIG = {  # head width 40 and 26 image tokens: no multiple of the fused kernels' vector width or row tile
    "embed_dim": 24, "quick_gelu": True,
    "vision_cfg": {"image_size": 40, "layers": 3, "width": 80, "patch_size": 8, "head_width": 40},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 80, "heads": 2, "layers": 2},
}


@pytest.mark.parametrize("checkpointing", [False, True])
@pytest.mark.parametrize("config_name", ["tiny", "odd"])
def test_features_and_every_gradient_equal_openais_architecture_in_eager_pytorch(checkpointing, config_name, tmp_path):
    """kclip computes the last block of each tower only at the pooled token (CLS, end-of-text), each caption only up
    to its own end-of-text token, attention and QuickGELU in fused CPU loops, and adds the token embedding's gradient
    rows into an existing .grad: features and all parameter gradients must still be those of the full model in
    eager PyTorch (two backward passes: the second accumulates)."""
    torch.manual_seed(0)
    if config_name == "odd":
        (tmp_path / "odd.json").write_text(json.dumps(ODD_CONFIG))
        config = kclip.CLIPConfig.from_json(str(tmp_path / "odd.json"))
    else:
        config = kclip.CLIPConfig.named(config_name)
    ours = kclip.CLIP(config)
    eager = EagerCLIP(config)
    eager.load_state_dict({k: v.detach().clone() for k, v in ours.named_parameters().items()}, strict=True)
    ours.train()
    ours.set_grad_checkpointing(checkpointing)
    pixels = torch.randn(5, 3, config.image_size, config.image_size)
    ids = torch.randint(1, 49406, (5, 77))
    ids[:, 0] = 49406
    ids[torch.arange(5), torch.tensor([1, 9, 30, 4, 17])] = 49407  # end-of-text, as argmax finds it
    weights = torch.randn(2, 5, config.embed_dim)
    results = []
    for model in (ours, eager):
        image, text = model.encode_image(pixels), model.encode_text(ids)
        for _ in range(2):
            image, text = model.encode_image(pixels), model.encode_text(ids)
            ((image * weights[0]).sum() + (text * weights[1]).sum()).backward()
        grads = dict(model.named_parameters()) if model is eager else model.named_parameters()
        results.append((image.detach(), text.detach(), {k: p.grad for k, p in grads.items() if p.grad is not None}))
    (image, text, grads), (eager_image, eager_text, eager_grads) = results
    assert (image - eager_image).abs().max() < 1e-5 and (text - eager_text).abs().max() < 1e-5
    assert sorted(grads) == sorted(k for k in eager_grads if k != "logit_scale")
    assert grads["token_embedding.weight"].layout == torch.strided
    for name, grad in grads.items():
        scale = eager_grads[name].abs().max().item()
        assert (grad - eager_grads[name]).abs().max().item() <= 1e-4 * scale + 1e-7, name


@pytest.mark.parametrize("section, field, value", [
    ("vision_config", "num_hidden_layers", 10 ** 7),
    ("vision_config", "hidden_size", 2 ** 20),
    ("text_config", "vocab_size", 10 ** 10),
    ("text_config", "max_position_embeddings", 2 ** 30),
    (None, "projection_dim", 3),
])
def test_a_hugging_face_config_that_does_not_fit_its_weights_is_one_error(tmp_path, section, field, value):
    """Sizes in config.json are checked against the weight files' shapes before the model is built: a huge or
    inconsistent size is one error naming the field, not an allocation of what the config claims."""
    model = kclip.CLIP(kclip.CLIPConfig.named("tiny"))
    model.save(tmp_path / "hf", layout="hf")
    kclip.CLIP.load(tmp_path / "hf")
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    (config[section] if section else config)[field] = value
    (tmp_path / "hf" / "config.json").write_text(json.dumps(config))
    name = f"{section}.{field}" if section else field
    with pytest.raises(kclip.Error, match=f"config.json: {name} = {value}, but the weights have"):
        kclip.CLIP.load(tmp_path / "hf")


def test_a_given_config_that_does_not_fit_an_openai_file_is_one_error(tmp_path):
    model = kclip.CLIP(kclip.CLIPConfig.named("tiny"))
    model.save(tmp_path / "tiny.safetensors")
    wrong = kclip.CLIPConfig.named("tiny")
    wrong.text_layers = 10 ** 6
    with pytest.raises(kclip.Error, match="text_layers = 1000000, but the weights have"):
        kclip.CLIP.load(tmp_path / "tiny.safetensors", wrong)
