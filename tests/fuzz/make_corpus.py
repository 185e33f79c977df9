"""Writes the seed corpora of the fuzz harnesses (tests/fuzz/corpus/NAME/): small real files of every format
kclip reads, made here with kclip itself, PIL and the standard library, so the fuzzer starts from inputs that
pass the parsers and mutates from there. Deterministic; rerun after a format changes:

    PYTHONPATH=build/python /usr/bin/python3 tests/fuzz/make_corpus.py
"""
import io
import json
import pathlib
import struct
import tarfile

import numpy as np
import torch
from PIL import Image

import kclip

ROOT = pathlib.Path(__file__).resolve().parent / "corpus"
REPO = ROOT.parents[2]


def put(name, file, data):
    path = ROOT / name / file
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data if isinstance(data, bytes) else data.encode())


def saved(tensors, metadata=None):
    scratch = ROOT.parent / ".scratch.safetensors"
    kclip.save_safetensors(scratch, tensors, metadata)
    data = scratch.read_bytes()
    scratch.unlink()
    return data


def safetensors():
    g = torch.Generator().manual_seed(0)
    put("safetensors", "f32.safetensors", saved({"w": torch.randn(2, 3, generator=g)}, {"format": "pt"}))
    put("safetensors", "mixed.safetensors", saved({
        "a": torch.randn(3, generator=g).half(), "b": torch.randn(2, 2, generator=g).bfloat16(),
        "c": torch.arange(4), "d": torch.tensor([True, False]), "e": torch.zeros(0, 3), "f": torch.tensor(2.5),
        "g": torch.arange(3, dtype=torch.int8), "h": torch.randn(2, generator=g).double()}))
    header = json.dumps({"x": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}).encode()
    put("safetensors", "handmade.safetensors", struct.pack("<Q", len(header)) + header + struct.pack("<2f", 1, 2))
    index = {"metadata": {"total_size": 56},
             "weight_map": {"a.weight": "model-00001-of-00002.safetensors",
                            "b.bias": "model-00002-of-00002.safetensors"}}
    put("safetensors_index", "index.json", json.dumps(index, indent=2))
    put("safetensors_index", "one-shard.json", json.dumps({"weight_map": {"a.weight": "model-00001-of-00002.safetensors"}}))


def texts():
    samples = ["A dog runs across the grass.", "two children play in a fountain &amp; laugh",
               "Ünïcödé naïve café — 東京 🐕‍🦺 emoji", "   spaces\tand\nnewlines  ", "'s 't 're 've 'm 'll 'd",
               "<|startoftext|>hello<|endoftext|>", "123,456.78 $%^&*()", "a" * 300, ""]
    for i, text in enumerate(samples):
        put("clip_tokenizer", f"text-{i}.txt", text)
        put("llama_tokenizer", f"text-{i}.txt", text)


def clip_vocab():
    put("clip_vocab", "merges.txt", "#version: 0.2\nt h\nth e</w>\na </w>\nc a\nca t</w>\n")
    put("clip_vocab", "vocab-missing-bytes.json", json.dumps({"a": 0, "<|startoftext|>": 1, "<|endoftext|>": 2}))


def llama2c_vocab():
    """A valid llama2.c tokenizer.bin: 32000 pieces, as llama2.c's layout (special, 256 byte pieces, words)."""
    pieces = [b"<unk>", b"\n<s>\n", b"\n</s>\n"] + [f"<0x{b:02X}>".encode() for b in range(256)]
    words = [b" ", b"e", b"t", b" t", b" a", b"he", b" the", b" photo", b" of", b" dog", b"ing", b"Once", b" upon"]
    pieces += words
    pieces += [f" w{i}".encode() for i in range(32000 - len(pieces))]
    out = struct.pack("<i", max(len(p) for p in pieces))
    for i, piece in enumerate(pieces):
        out += struct.pack("<fi", -float(i), len(piece)) + piece
    put("llama2c_vocab", "tokenizer.bin", out)


def images():
    rgb = Image.fromarray((np.indices((12, 9)).sum(0) * 10 % 256).astype(np.uint8)).convert("RGB")
    for fmt, ext, image in [("PNG", "png", rgb), ("JPEG", "jpg", rgb), ("GIF", "gif", rgb.convert("P")),
                            ("BMP", "bmp", rgb), ("PNG", "gray.png", rgb.convert("L")),
                            ("PNG", "rgba.png", rgb.convert("RGBA")), ("WEBP", "webp", rgb)]:
        buffer = io.BytesIO()
        image.save(buffer, fmt)
        put("image", f"image.{ext}", buffer.getvalue())
    # the JPEG modes and codings libjpeg-turbo takes other paths for
    for ext, image, options in [("grey.jpg", rgb.convert("L"), {}), ("cmyk.jpg", rgb.convert("CMYK"), {}),
                                ("progressive.jpg", rgb, {"progressive": True}), ("444.jpg", rgb, {"subsampling": 0})]:
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", **options)
        put("image", f"image.{ext}", buffer.getvalue())


def captions_csv():
    put("captions_csv", "plain.csv", "image,caption\na.jpg,A dog.\nb.jpg,Two cats on a mat.\n")
    put("captions_csv", "quoted.csv", 'caption,image\n"He said ""hi"", then left",x.png\n"multi\nline",y.png\n')
    put("captions_csv", "ragged.csv", "image,caption,extra\na.jpg\nb.jpg,ok,1,2\n,empty image\n")


def configs():
    put("config_json", "open_clip-tiny.json", (REPO / "configs" / "tiny.json").read_text())
    model = kclip.CLIP(kclip.CLIPConfig.named("tiny"))
    scratch = ROOT.parent / ".scratch-hf"
    model.save(scratch, layout="hf")
    put("config_json", "hf-clip.json", (scratch / "config.json").read_text())
    for f in scratch.iterdir():
        f.unlink()
    scratch.rmdir()
    put("config_json", "llama.json", json.dumps({
        "hidden_size": 64, "intermediate_size": 172, "num_hidden_layers": 5, "num_attention_heads": 8,
        "num_key_value_heads": 4, "vocab_size": 512, "max_position_embeddings": 512, "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0, "rope_scaling": {"type": "linear", "factor": 2.0}, "tie_word_embeddings": True}))


def kmeans_artifact():
    x = torch.randn(40, 6, generator=torch.Generator().manual_seed(1))
    km = kclip.KMeans(4, seed=0).fit(x)
    scratch = ROOT.parent / ".scratch.safetensors"
    km.save(scratch, {"teacher_id": "fuzz"})
    put("kmeans_artifact", "concepts.safetensors", scratch.read_bytes())
    scratch.unlink()


def tar_shard():
    buffer = io.BytesIO()
    png = (ROOT / "image" / "image.png").read_bytes()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for key, caption in [("000000", "A dog."), ("000001", "A cat."), ("dir/000002", "No image")]:
            members = [(f"{key}.txt", caption.encode())] + ([(f"{key}.png", png)] if "dir" not in key else [])
            for name, data in members:
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    put("tar_shard", "shard.tar", buffer.getvalue())


def llama2c_checkpoint():
    dim, hidden, layers, heads, kv_heads, vocab, seq = 8, 16, 1, 2, 2, 32, 4
    head = dim // heads
    floats = (vocab * dim + layers * (2 * dim + 2 * dim * dim + 2 * kv_heads * head * dim + 3 * hidden * dim) + dim
              + seq * head)
    weights = np.random.default_rng(0).standard_normal(floats).astype(np.float32) * 0.1
    put("llama2c_checkpoint", "tiny.bin", struct.pack("<7i", dim, hidden, layers, heads, kv_heads, vocab, seq)
        + weights.tobytes())


if __name__ == "__main__":
    for make in [safetensors, texts, clip_vocab, llama2c_vocab, images, captions_csv, configs, kmeans_artifact,
                 tar_shard, llama2c_checkpoint]:
        make()
    total = sum(f.stat().st_size for f in ROOT.rglob("*") if f.is_file())
    print(f"{sum(1 for f in ROOT.rglob('*') if f.is_file())} seed files, {total / 1024:.0f} KiB in {ROOT}")
