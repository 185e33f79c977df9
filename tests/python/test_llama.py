"""kclip.Llama, LlamaTokenizer and LlamaTeacher from Python, against llama2.c's run.c and sentencepiece."""
import json

import pytest
import torch

import kclip
from data_fixtures import CharacterTeacher


@pytest.fixture
def reference(shared):
    return json.loads(shared("models/stories260K/runc_reference.json").read_text())


@pytest.mark.parametrize("source", ["models/stories260K/stories260K.bin", "models/stories260K/hf"])
def test_logits_and_hidden_states_equal_run_c(shared, reference, source):
    model = kclip.Llama.load(shared(source))
    assert model.config["num_key_value_heads"] == 4 and model.config["vocab_size"] == 512
    with torch.no_grad():
        for seq in reference["sequences"]:
            ids = torch.tensor([seq["ids"]])
            assert (model.logits(ids)[0] - torch.tensor(seq["logits"])).abs().max() < 1e-4
            assert (model.hidden_states(ids)[0] - torch.tensor(seq["final_hidden"])).abs().max() < 1e-4


def test_the_model_is_a_plain_torch_parameter_set(shared):
    model = kclip.Llama.load(shared("models/stories260K/hf"))
    params = model.named_parameters()
    assert params["model.layers.0.self_attn.k_proj.weight"].shape == (32, 64)
    reference = kclip.load_safetensors(shared("models/stories260K/hf"))
    assert all(torch.equal(params[name], reference[name]) for name in params)


def test_tokenizer_matches_sentencepiece(shared):
    ref = json.loads(shared("tokenizers/llama2/reference_encodings.json").read_text())
    tok = kclip.LlamaTokenizer(shared("tokenizers/llama2/tokenizer.model"))
    assert (tok.vocab_size, tok.bos_id, tok.eos_id) == (32000, 1, 2)
    for case in ref["cases"]:
        assert tok.encode(case["text"]) == case["ids"]
        assert tok.encode_as_pieces(case["text"]) == case["pieces"]
    assert tok.decode(tok.encode("A dog runs on the beach .")) == "A dog runs on the beach ."
    assert tok.encode("a cat", bos=True, eos=True)[0] == 1


def test_llama2c_tokenizer_bin_gives_sentencepieces_ids(shared, tmp_path):
    """llama2.c's tokenizer.bin (what the npm copy of stories15M ships) encodes as Meta's tokenizer.model."""
    ref = json.loads(shared("tokenizers/llama2/reference_encodings.json").read_text())
    spm = kclip.LlamaTokenizer(shared("tokenizers/llama2/tokenizer.model"))
    tok = kclip.LlamaTokenizer(shared("models/stories15M/tokenizer.bin"))
    assert (tok.vocab_size, tok.bos_id, tok.eos_id) == (32000, 1, 2)
    for case in ref["cases"]:
        assert tok.encode(case["text"]) == case["ids"], case["text"]
        assert tok.encode_as_pieces(case["text"]) == case["pieces"], case["text"]
    flickr = shared("data/flickr8k-1k/captions.csv").read_text().splitlines()[1:400]
    captions = [line.split(",", 1)[1].strip('"') for line in flickr] + ["naïve café – 東京 🚀", "  two  spaces", ""]
    differing = [c for c in captions if tok.encode(c) != spm.encode(c)]
    assert not differing, differing[:3]
    for c in captions[:50] + captions[-3:]:
        assert tok.decode(tok.encode(c, bos=True)) == spm.decode(spm.encode(c, bos=True)), c
    # the directory of stories15M.bin finds its tokenizer.bin; a damaged file is one clear error
    assert kclip.LlamaTokenizer(shared("models/stories15M")).encode("a dog") == spm.encode("a dog")
    (tmp_path / "tokenizer.bin").write_bytes(shared("models/stories15M/tokenizer.bin").read_bytes()[:5000])
    with pytest.raises(kclip.Error, match="tokenizer.bin: .*not a llama2.c tokenizer.bin"):
        kclip.LlamaTokenizer(tmp_path / "tokenizer.bin")


def test_teacher_pools_and_batches(shared):
    teacher = kclip.LlamaTeacher.load(shared("models/stories260K/hf"), tokenizer=shared("tokenizers/llama2"),
                                      pooling="mean", max_length=32, token_budget=64)
    assert teacher.dim() == 64 and "pooling=mean" in teacher.id()
    captions = [[1, 20, 30, 40], [1, 5], [1, 7, 8, 9, 10, 11]]
    pooled = teacher.embed_ids(captions)
    with torch.no_grad():
        for row, ids in zip(pooled, captions):
            alone = teacher.model.hidden_states(torch.tensor([ids]))[0].mean(0)
            assert (row - alone).abs().max() < 1e-4
    last = kclip.LlamaTeacher.load(shared("models/stories260K/hf"), tokenizer=shared("tokenizers/llama2"),
                                   pooling="last", layer=1)
    assert last.id() != teacher.id()
    with pytest.raises(ValueError, match="pooling='max'"):
        kclip.LlamaTeacher.load(shared("models/stories260K/hf"), tokenizer=shared("tokenizers/llama2"), pooling="max")


def test_bad_checkpoints_raise_kclip_errors(tmp_path):
    (tmp_path / "config.json").write_text('{"hidden_size": 8}')
    with pytest.raises(kclip.Error, match="field 'intermediate_size' is missing"):
        kclip.Llama.load(tmp_path)
    (tmp_path / "x.bin").write_bytes(b"\x01\x02")
    with pytest.raises(kclip.Error, match="7-int header"):
        kclip.Llama.load(tmp_path / "x.bin")


def test_python_teacher_builds_a_cache_from_flickr_captions(shared, tmp_path):
    captions = kclip.read_captions(shared("data/flickr8k-1k/captions.csv"))[:300]
    teacher = CharacterTeacher()
    cache = kclip.EmbeddingCache.build(tmp_path / "cache", teacher, captions, shard_size=64, dtype="f32",
                                       progress=False)
    assert cache.count == len(set(captions)) and cache.complete and cache.teacher_id == "letters-v1"
    assert torch.equal(cache.get(captions[:5]), teacher.embed(captions[:5]))
    assert captions[7] in cache and "no such caption" not in cache
    precomputed = kclip.PrecomputedTeacher(tmp_path / "cache")
    assert precomputed.id() == "letters-v1" and torch.equal(precomputed.embed(captions[:2]), teacher.embed(captions[:2]))
    with pytest.raises(kclip.Error, match="built by teacher"):
        kclip.EmbeddingCache(tmp_path / "cache", teacher_id="another")
    km = kclip.KMeans(5, seed=0).fit_minibatch(cache.shards())  # the cache feeds the clusterer directly
    assert km.centroids.shape == (5, 26)


def test_teacher_logits_and_hidden_states(shared, reference):
    teacher = kclip.LlamaTeacher.load(shared("models/stories260K/stories260K.bin"), tokenizer=shared("tokenizers/llama2"))
    seq = reference["sequences"][0]
    assert (teacher.logits(torch.tensor([seq["ids"]]))[0] - torch.tensor(seq["logits"])).abs().max() < 1e-4
    assert teacher.hidden_states(torch.tensor([seq["ids"]]), layer=0).shape == (1, len(seq["ids"]), 64)


def test_cli_embed_builds_and_resumes_a_cache(kclip_cli, shared, tmp_path):
    import subprocess

    model = tmp_path / "model"
    model.mkdir()
    config = {"hidden_size": 16, "intermediate_size": 24, "num_hidden_layers": 1, "num_attention_heads": 4,
              "num_key_value_heads": 2, "vocab_size": 32000, "max_position_embeddings": 64,
              "tie_word_embeddings": True}
    (model / "config.json").write_text(json.dumps(config))
    g = torch.Generator().manual_seed(0)
    shapes = {"model.embed_tokens.weight": (32000, 16), "model.norm.weight": (16,),
              "model.layers.0.input_layernorm.weight": (16,), "model.layers.0.post_attention_layernorm.weight": (16,),
              "model.layers.0.self_attn.q_proj.weight": (16, 16), "model.layers.0.self_attn.k_proj.weight": (8, 16),
              "model.layers.0.self_attn.v_proj.weight": (8, 16), "model.layers.0.self_attn.o_proj.weight": (16, 16),
              "model.layers.0.mlp.gate_proj.weight": (24, 16), "model.layers.0.mlp.up_proj.weight": (24, 16),
              "model.layers.0.mlp.down_proj.weight": (16, 24)}
    kclip.save_safetensors(model / "model.safetensors", {k: torch.randn(*v, generator=g) for k, v in shapes.items()})
    captions = shared("data/flickr8k-1k/captions.csv")
    args = [kclip_cli, "embed", "--teacher", model, "--tokenizer", shared("tokenizers/llama2"), "--captions",
            captions, "--out", tmp_path / "cache", "--max-length", "64", "--shard-size", "2000", "--quiet"]
    out = subprocess.run(args, capture_output=True, text=True, check=True).stdout
    unique = len(set(kclip.read_captions(captions)))
    assert f"{unique} unique of 5000 captions, dim 16" in out
    first = (tmp_path / "cache" / "shard-00000.safetensors").read_bytes()
    subprocess.run(args, capture_output=True, text=True, check=True)  # a rerun finds everything done
    assert (tmp_path / "cache" / "shard-00000.safetensors").read_bytes() == first
    cache = kclip.EmbeddingCache(tmp_path / "cache")
    assert cache.complete and cache.dim == 16


def test_config_features_match_an_independent_eager_forward(tmp_path):
    """Grouped-query attention, rope_theta and linear rope_scaling against the plain-PyTorch forward in
    bench/bench_llama.py (written from Hugging Face's modeling code, sharing nothing with kclip)."""
    import pathlib
    import sys
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / "bench"))
    import bench_llama

    config = {"hidden_size": 32, "intermediate_size": 48, "num_hidden_layers": 2, "num_attention_heads": 4,
              "num_key_value_heads": 2, "vocab_size": 100, "max_position_embeddings": 64, "rms_norm_eps": 1e-6,
              "rope_theta": 500.0, "rope_scaling": {"type": "linear", "factor": 2.0}, "tie_word_embeddings": False}
    weights = bench_llama.random_checkpoint(str(tmp_path), config)
    model = kclip.Llama.load(tmp_path)
    ids = torch.randint(0, 100, (3, 20), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert (model.hidden_states(ids) - bench_llama.eager_hidden_states(weights, ids, config)).abs().max() < 1e-4
        unscaled = dict(config, rope_scaling=None)
        assert (model.hidden_states(ids) - bench_llama.eager_hidden_states(weights, ids, unscaled)).abs().max() > 1e-3


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_hf_checkpoints_load(shared, reference, tmp_path, dtype):
    hf = shared("models/stories260K/hf")
    (tmp_path / "config.json").write_text((hf / "config.json").read_text())
    halved = {k: v.to(dtype) for k, v in kclip.load_safetensors(hf).items()}
    kclip.save_safetensors(tmp_path / "model.safetensors", halved)
    model = kclip.Llama.load(tmp_path)  # float32 on the CPU, from half-precision weights
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert all(torch.equal(p, halved[n].float()) for n, p in model.named_parameters().items())
    seq = reference["sequences"][1]
    with torch.no_grad():
        error = (model.logits(torch.tensor([seq["ids"]]))[0] - torch.tensor(seq["logits"])).abs().max()
    assert error < 0.5  # the weights themselves were rounded to 8-11 bits of mantissa


@pytest.mark.parametrize("field, value, message", [
    ("hidden_size", 2 ** 40, "hidden_size = 1099511627776, but the weights have 32"),
    ("vocab_size", 10 ** 9, "vocab_size = 1000000000, but the weights have 100"),
    ("num_hidden_layers", 10 ** 6, "num_hidden_layers = 1000000, but the weights have 2"),
    ("intermediate_size", 2 ** 33, "intermediate_size = 8589934592, but the weights have 48"),
    ("num_key_value_heads", 1, "num_key_value_heads = 1, but the weights have 2"),
])
def test_a_config_that_does_not_fit_its_weights_is_one_error_before_any_allocation(tmp_path, field, value, message):
    """A config.json with huge or inconsistent sizes (found by mutating files as a new user would) used to make
    Llama.load allocate what it claimed (terabytes): the sizes are now checked against the weight files' shapes
    first, and the error names the field."""
    import pathlib
    import sys
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / "bench"))
    import bench_llama

    config = {"hidden_size": 32, "intermediate_size": 48, "num_hidden_layers": 2, "num_attention_heads": 4,
              "num_key_value_heads": 2, "vocab_size": 100, "max_position_embeddings": 64, "rms_norm_eps": 1e-6,
              "tie_word_embeddings": False}
    bench_llama.random_checkpoint(str(tmp_path), config)
    kclip.Llama.load(tmp_path)  # the untouched checkpoint loads
    config[field] = value
    if field == "hidden_size":
        config["num_attention_heads"] = 4
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(kclip.Error, match=message.replace("(", r"\(")) as error:
        kclip.Llama.load(tmp_path)
    assert "config.json" in str(error.value) and field in str(error.value)


def test_a_llama2c_header_that_overflows_is_one_error(tmp_path):
    import struct
    path = tmp_path / "huge.bin"
    path.write_bytes(struct.pack("7i", 2 ** 30, 2 ** 30, 2 ** 30, 2 ** 20, 2 ** 20, 32000, 256) + bytes(64))
    with pytest.raises(kclip.Error, match="header implies"):
        kclip.Llama.load(path)
