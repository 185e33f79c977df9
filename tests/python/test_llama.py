"""kclip.Llama, LlamaTokenizer and LlamaTeacher from Python, against llama2.c's run.c and sentencepiece."""
import json

import pytest
import torch

import kclip


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
