"""kclip.load_safetensors / save_safetensors from Python: round trips, zero-copy, errors, real checkpoints."""
import os
import struct

import numpy as np
import pytest
import torch

import kclip
import safetensors_reference as reference

ALL_DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.int64, torch.int32,
              torch.int16, torch.int8, torch.uint8, torch.bool]


def sample(dtype, shape=(3, 5)):
    if dtype == torch.bool:
        return torch.rand(shape) > 0.5
    if dtype.is_floating_point:
        return (torch.randn(shape, dtype=torch.float64) * 100).to(dtype)
    return torch.randint(-100, 100, shape).to(dtype)


def write_raw(path, header: bytes, data: bytes = b"", declared=None):
    path.write_bytes(struct.pack("<Q", len(header) if declared is None else declared) + header + data)


def test_every_dtype_round_trips_and_matches_an_independent_reader(tmp_path):
    tensors = {f"t_{str(d)[6:]}": sample(d) for d in ALL_DTYPES}
    tensors["scalar"] = torch.tensor(2.5)
    tensors["empty"] = torch.zeros(0, 3)
    tensors["strided"] = torch.arange(12.0).reshape(3, 4).t()
    path = tmp_path / "all.safetensors"
    kclip.save_safetensors(path, tensors, {"format": "pt", "note": "ünïcode"})

    loaded = kclip.load_safetensors(str(path))
    independent, metadata = reference.read(path)
    assert set(loaded) == set(tensors) == set(independent)
    for name, expected in tensors.items():
        assert loaded[name].dtype == expected.dtype, name
        assert torch.equal(loaded[name], expected), name
        assert torch.equal(independent[name], expected), name
    assert metadata == {"format": "pt", "note": "ünïcode"}
    assert kclip.load_safetensors_metadata(path) == metadata


def test_state_dict_round_trip_restores_a_module(tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.LayerNorm(8), torch.nn.Linear(8, 2))
    kclip.save_safetensors(tmp_path / "m.safetensors", model.state_dict())
    fresh = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.LayerNorm(8), torch.nn.Linear(8, 2))
    fresh.load_state_dict(kclip.load_safetensors(tmp_path / "m.safetensors"))
    x = torch.randn(5, 4)
    assert torch.equal(model(x), fresh(x))


def test_tensors_view_the_file_mapping_without_copies(tmp_path):
    path = tmp_path / "v.safetensors"
    kclip.save_safetensors(path, {"a": torch.arange(1000.0), "b": torch.arange(10, dtype=torch.int16)})
    f = kclip.SafetensorsFile(path)
    assert f.keys() == ["a", "b"] and len(f) == 2 and "a" in f and f.dtype("b") == "I16"
    first, second = f.get("a"), f["a"]
    assert first.data_ptr() == second.data_ptr()  # both view the same mapped bytes
    first.add_(1)  # copy-on-write mapping: writable, file untouched
    assert torch.equal(second, torch.arange(1000.0) + 1)
    assert torch.equal(kclip.load_safetensors(path)["a"], torch.arange(1000.0))


@pytest.mark.parametrize("header, data, declared, expected", [
    (b"{}", b"", 4096, "runs past the end"),
    (b"{}", b"", 200_000_000, "exceeds the 100 MB limit"),
    (b'{"t": [', b"", None, "not valid JSON"),
    (b'{"t":{"dtype":"F8_E4M3","shape":[2],"data_offsets":[0,2]}}', b"xx", None, "unknown dtype 'F8_E4M3'"),
    (b'{"t":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}', b"\0" * 8, None, "outside the data area"),
    (b'{"t":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}', b"\0" * 8, None, "expected 12 (F32 x [3])"),
    (b'{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}',
     b"\0" * 8, None, "overlap"),
    (b'{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}}',
     b"\0" * 12, None, "gap in the data area"),
])
def test_malformed_files_raise_kclip_error_naming_file_and_field(tmp_path, header, data, declared, expected):
    path = tmp_path / "bad.safetensors"
    write_raw(path, header, data, declared)
    with pytest.raises(kclip.Error) as info:
        kclip.load_safetensors(path)
    assert isinstance(info.value, RuntimeError)
    assert expected in str(info.value) and str(path) in str(info.value)


def test_short_file_and_missing_file(tmp_path):
    (tmp_path / "short.safetensors").write_bytes(b"abc")
    with pytest.raises(RuntimeError, match="shorter than the 8-byte header"):
        kclip.load_safetensors(tmp_path / "short.safetensors")
    with pytest.raises(RuntimeError, match="no such file"):
        kclip.load_safetensors(tmp_path / "missing.safetensors")


def test_bad_arguments_are_value_errors_and_leave_no_file(tmp_path):
    path = tmp_path / "x.safetensors"
    with pytest.raises(ValueError, match=r"tensors\['a'\] is <class 'int'>"):
        kclip.save_safetensors(path, {"a": 3})
    with pytest.raises(ValueError, match="tensor 'c'"):
        kclip.save_safetensors(path, {"c": torch.ones(2, dtype=torch.complex64)})
    with pytest.raises(ValueError, match="must map str to str"):
        kclip.save_safetensors(path, {"a": torch.ones(1)}, {"k": 1})
    assert os.listdir(tmp_path) == []


def test_sharded_checkpoint_errors(tmp_path):
    kclip.save_safetensors(tmp_path / "s1.safetensors", {"a": torch.ones(2)})
    (tmp_path / "model.safetensors.index.json").write_text(
        '{"weight_map": {"a": "s1.safetensors", "b": "s2.safetensors"}}')
    with pytest.raises(RuntimeError, match="shard 's2.safetensors' named in the index is missing"):
        kclip.load_safetensors(tmp_path)
    kclip.save_safetensors(tmp_path / "s2.safetensors", {"a": torch.zeros(2)})
    with pytest.raises(RuntimeError, match="appears in two shards"):
        kclip.load_safetensors(tmp_path)


def test_stories260k_sharded_checkpoint_matches_llama2c_bin(shared):
    hf = shared("models/stories260K/hf")
    loaded = kclip.load_safetensors(hf)
    assert len(loaded) == 48
    assert loaded["model.embed_tokens.weight"].shape == (512, 64)
    assert loaded["model.layers.4.self_attn.k_proj.weight"].shape == (32, 64)
    assert loaded["model.layers.0.mlp.down_proj.weight"].shape == (64, 172)
    assert kclip.load_safetensors_metadata(hf)["total_size"] == "1171200"
    # every tensor equals the independent reader's, shard by shard
    for shard in ("model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"):
        independent, _ = reference.read(hf / shard)
        for name, t in independent.items():
            assert torch.equal(loaded[name], t), name
    # and the embedding table equals llama2.c's .bin (7 int32 header, then [vocab, dim] float32)
    raw = np.fromfile(shared("models/stories260K/stories260K.bin"), dtype=np.float32, count=512 * 64, offset=28)
    assert torch.equal(loaded["model.embed_tokens.weight"], torch.from_numpy(raw.reshape(512, 64)))


def test_clip_tiny_golden_files(shared):
    model = kclip.load_safetensors(shared("golden/clip-tiny/model.safetensors"))
    assert all(t.dtype == torch.float16 for t in model.values())
    assert model["token_embedding.weight"].shape == (49408, 128)
    assert model["visual.conv1.weight"].shape == (128, 3, 16, 16)
    expected = kclip.load_safetensors(shared("golden/clip-tiny/expected.safetensors"))
    independent, _ = reference.read(shared("golden/clip-tiny/expected.safetensors"))
    assert expected["input_ids"].dtype == torch.int64
    for name, t in independent.items():
        assert torch.equal(expected[name], t), name
