"""The fault matrix of docs/reliability.md: a process killed at a random moment of `kclip embed`, a full disk
while a file is written, a second writer on a directory another process writes. Each fault ends in one clear
error or a resume, the last good state is kept, and nothing half-written is ever read as complete."""
import fcntl
import json
import os
import pathlib
import random
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch

import kclip
from data_fixtures import CharacterTeacher

HERE = pathlib.Path(__file__).resolve().parent
# A llama2.c tokenizer.bin with 32000 made-up pieces (tests/fuzz/make_corpus.py): enough to drive a teacher.
TOKENIZER = HERE.parent / "fuzz" / "corpus" / "llama2c_vocab" / "tokenizer.bin"


def python_with_file_size_limit(code, limit_bytes):
    """Runs `code` in a fresh interpreter whose files may not grow beyond `limit_bytes` (RLIMIT_FSIZE): a write
    past it fails with EFBIG, as on a full disk (SIGXFSZ ignored, so the process sees the error)."""
    def limit():
        import resource
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)

    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]))
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], preexec_fn=limit, capture_output=True,
                          text=True, env=env)


def test_a_full_disk_while_saving_keeps_the_previous_file(tmp_path):
    path = tmp_path / "weights.safetensors"
    kclip.save_safetensors(path, {"w": torch.ones(10)}, {"version": "1"})
    before = path.read_bytes()
    done = python_with_file_size_limit(f"""
        import torch, kclip
        try:
            kclip.save_safetensors({str(path)!r}, {{"w": torch.randn(1 << 20)}}, {{"version": "2"}})
        except kclip.Error as e:
            print("ERROR", e)
        """, 64 * 1024)
    assert "ERROR" in done.stdout and "weights.safetensors" in done.stdout, done.stdout + done.stderr
    assert "File too large" in done.stdout or "No space" in done.stdout
    assert path.read_bytes() == before  # the old file, whole
    assert sorted(p.name for p in tmp_path.iterdir()) == ["weights.safetensors"]  # no temporary left
    assert kclip.load_safetensors_metadata(path)["version"] == "1"


def test_a_full_disk_while_embedding_stops_cleanly_and_the_rerun_completes_the_same_cache(tmp_path):
    captions = [f"caption number {i} about {'dogs' if i % 2 else 'cats'}" for i in range(300)]
    (tmp_path / "captions.json").write_text(json.dumps(captions))
    build = f"""
        import json, kclip
        from data_fixtures import CharacterTeacher
        captions = json.load(open({str(tmp_path / 'captions.json')!r}))
        try:
            kclip.EmbeddingCache.build({str(tmp_path / 'cache')!r}, CharacterTeacher(), captions, shard_size=16,
                                       dtype="f32", progress=False)
            print("DONE")
        except kclip.Error as e:
            print("ERROR", e)
        """
    full = python_with_file_size_limit(build, 1500)  # a shard of 16 x 26 float32 is ~1.9 KB: the first one fails
    assert "ERROR" in full.stdout, full.stdout + full.stderr
    leftovers = [p.name for p in (tmp_path / "cache").iterdir() if p.name.startswith(".") and p.name != ".lock"]
    assert leftovers == []
    with pytest.raises(kclip.Error):
        kclip.EmbeddingCache(tmp_path / "cache").get(captions[:1])  # nothing half-written reads as complete
    assert "DONE" in python_with_file_size_limit(build, 1 << 30).stdout
    resumed = kclip.EmbeddingCache(tmp_path / "cache")
    fresh = kclip.EmbeddingCache.build(str(tmp_path / "fresh"), CharacterTeacher(), captions, shard_size=16,
                                       dtype="f32", progress=False)
    assert resumed.complete and torch.equal(resumed.get(captions), fresh.get(captions))


def hold_lock(directory):
    directory.mkdir(parents=True, exist_ok=True)
    handle = open(directory / ".lock", "w")
    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    return handle


def test_a_second_writer_of_an_embedding_cache_is_refused(tmp_path):
    other = hold_lock(tmp_path / "cache")  # as another process building the same cache would
    with pytest.raises(kclip.Error, match="another process is writing this embedding cache"):
        kclip.EmbeddingCache.build(str(tmp_path / "cache"), CharacterTeacher(), ["a dog"], progress=False)
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == [".lock"]  # nothing written
    other.close()
    kclip.EmbeddingCache.build(str(tmp_path / "cache"), CharacterTeacher(), ["a dog"], progress=False)


def random_teacher(directory):
    sys.path.insert(0, str(HERE.parents[1] / "bench"))
    import bench_llama  # an independent Llama writer: random weights in Hugging Face's layout
    config = {"hidden_size": 16, "intermediate_size": 24, "num_hidden_layers": 1, "num_attention_heads": 4,
              "num_key_value_heads": 2, "vocab_size": 32000, "max_position_embeddings": 64,
              "tie_word_embeddings": False}
    directory.mkdir()
    bench_llama.random_checkpoint(str(directory), config)
    return directory


def test_kclip_embed_killed_at_a_random_moment_resumes_to_the_same_cache(tmp_path, kclip_cli):
    teacher = random_teacher(tmp_path / "teacher")
    captions = tmp_path / "captions.txt"
    captions.write_text("\n".join(f"a photo of thing {i} on day {i % 7}" for i in range(2000)) + "\n")

    def embed(out):
        return [str(kclip_cli), "embed", "--teacher", str(teacher), "--tokenizer", str(TOKENIZER), "--captions",
                str(captions), "--out", str(out), "--shard-size", "8", "--max-length", "32", "--quiet"]

    subprocess.run(embed(tmp_path / "whole"), check=True, capture_output=True)
    process = subprocess.Popen(embed(tmp_path / "killed"), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while not (tmp_path / "killed" / "index.json").exists() and time.time() < deadline:
        time.sleep(0.005)
    time.sleep(random.Random(os.getpid()).uniform(0, 0.3))
    process.send_signal(signal.SIGKILL)
    process.wait()
    partial = json.loads((tmp_path / "killed" / "index.json").read_text())
    for shard in partial["shards"]:  # a shard the index lists is whole (written to a temporary, then renamed)
        assert kclip.load_safetensors(tmp_path / "killed" / shard)["embeddings"].shape[1] == 16
    subprocess.run(embed(tmp_path / "killed"), check=True, capture_output=True)
    whole, resumed = tmp_path / "whole", tmp_path / "killed"
    shards = sorted(p.name for p in whole.glob("shard-*.safetensors"))
    assert shards == sorted(p.name for p in resumed.glob("shard-*.safetensors")) and len(shards) == 250
    assert all((whole / s).read_bytes() == (resumed / s).read_bytes() for s in shards)


def test_a_second_run_in_the_same_run_directory_is_refused(tmp_path):
    from data_fixtures import write_pairs
    teacher = random_teacher(tmp_path / "teacher")
    csv = write_pairs(tmp_path / "data", 16)
    config = {"run_dir": str(tmp_path / "run"),
              "teacher": {"model": str(teacher), "tokenizer": str(TOKENIZER), "max_length": 32},
              "concepts": {"k": 2, "iters": 5},
              "train": {"train_data": str(csv), "model": "tiny", "batch_size": 8, "epochs": 1, "workers": 1,
                        "progress": False},
              "export": []}
    other = hold_lock(tmp_path / "run")  # another `kclip run` on the same directory
    with pytest.raises(kclip.Error, match="another process is writing this run directory"):
        kclip.run(config)
    assert not (tmp_path / "run" / "stages").exists()
    other.close()
    summary = kclip.run(config)
    assert (tmp_path / "run" / "stages" / "train.json").exists(), summary


class NaNTeacher(CharacterTeacher):
    def embed(self, texts):
        out = super().embed(texts)
        out[len(texts) // 2, 3] = float("nan")
        return out


class HugeTeacher(CharacterTeacher):
    def embed(self, texts):
        return super().embed(texts) * 1e6


def test_corrupt_and_extreme_inputs_are_one_clear_error_each(tmp_path):
    """The inputs of the fault matrix not covered by a format's own tests: zero-byte files of every kind,
    invalid UTF-8, a 1 MB caption, NaN teacher embeddings, an empty class folder, a CSV without its columns."""
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    for load in [kclip.load_safetensors, kclip.read_image, kclip.KMeans.load, kclip.Llama.load,
                 kclip.CLIPConfig.from_json, kclip.LlamaTokenizer]:
        renamed = {kclip.load_safetensors: "a.safetensors", kclip.KMeans.load: "k.safetensors",
                   kclip.Llama.load: "m.bin", kclip.LlamaTokenizer: "tokenizer.bin", kclip.read_image: "x.jpg",
                   kclip.CLIPConfig.from_json: "c.json"}[load]
        path = tmp_path / renamed
        path.write_bytes(b"")
        with pytest.raises((kclip.Error, ValueError), match=renamed):
            load(path)
    (tmp_path / "captions.csv").write_bytes(b"")
    with pytest.raises((kclip.Error, ValueError), match="captions.csv"):
        kclip.CsvDataset(tmp_path / "captions.csv")

    tokenizer = kclip.ClipTokenizer()
    with pytest.raises(ValueError, match="not valid UTF-8"):
        tokenizer.encode("caf\xe9".encode("latin-1").decode("latin-1").encode("latin-1"))
    huge = "a dog " * (1 << 17)  # 768 KiB of text: truncated to the context, in well under a second
    start = time.perf_counter()
    assert tokenizer([huge]).shape == (1, 77)
    assert time.perf_counter() - start < 5
    llama = kclip.LlamaTokenizer(TOKENIZER)
    assert len(llama.encode(huge)) > 1000

    with pytest.raises(kclip.Error, match='non-finite embedding for caption "c"; nothing of shard 0'):
        kclip.EmbeddingCache.build(str(tmp_path / "nan-cache"), NaNTeacher(), ["a", "b", "c", "d"], progress=False)
    assert not list((tmp_path / "nan-cache").glob("shard-*"))
    with pytest.raises(kclip.Error, match="non-finite embedding for caption \"a dog\" once cast to F16"):  # 1e6 overflows float16
        kclip.EmbeddingCache.build(str(tmp_path / "f16-cache"), HugeTeacher(), ["a dog"], progress=False)
    kclip.EmbeddingCache.build(str(tmp_path / "f32-cache"), HugeTeacher(), ["a dog"], dtype="f32", progress=False)

    (tmp_path / "folder" / "cat").mkdir(parents=True)
    (tmp_path / "folder" / "dog").mkdir()
    from data_fixtures import image_of
    image_of(0).save(tmp_path / "folder" / "cat" / "0.png")
    with pytest.raises((kclip.Error, ValueError), match="dog"):
        kclip.ImageFolderDataset(tmp_path / "folder")

    (tmp_path / "nocolumn.csv").write_text("filepath,description\na.jpg,a dog\n")
    with pytest.raises((kclip.Error, ValueError), match="title"):
        kclip.CsvDataset(tmp_path / "nocolumn.csv")


FUZZ = HERE.parent / "fuzz" / "corpus"


def test_inputs_the_fuzzers_found_are_clear_errors():
    """Each input that once crashed a harness (tests/fuzz/corpus/*/regress-*) gives one clear error through the
    public API of the normal build too (make fuzz replays them under ASan + UBSan)."""
    cases = {"config_json": kclip.CLIPConfig.from_json, "image": kclip.read_image,
             "kmeans_artifact": kclip.KMeans.load, "safetensors": kclip.load_safetensors}
    found = 0
    for harness, load in cases.items():
        for path in sorted((FUZZ / harness).glob("regress-*")):
            found += 1
            with pytest.raises((kclip.Error, ValueError), match=path.name):
                load(path)
    assert found >= 4
    for name, reason in [("regress-c0324673aa0f", "cannot decode JPEG: Bogus Huffman table definition"),
                         ("regress-20f04fc5d597", "cannot decode JPEG: Bogus marker length"),
                         ("regress-05638611e06d", "truncated BMP"), ("regress-510490d81c38", "truncated BMP"),
                         ("regress-aa3b7ddb2397", "truncated PNG: chunk IDAT at byte 33 declares 1610613755 bytes"),
                         ("regress-c43da765744e", "a 16393x9766 GIF canvas in 232 bytes"),
                         ("regress-cc1f781cf76f", "cannot decode image: Image not of any known type"),
                         ("regress-9cb8fd989f25", "truncated PNG: 9x16715532 pixels need 601759152 bytes"),
                         ("regress-42ee9f399a59", "cannot decode image"),
                         ("regress-656c55ed2d5e", "truncated JPEG: 63497x2293 pixels cannot be coded in 178 bytes"),
                         ("regress-ae4c9fe43891", "truncated JPEG: 63497x11 pixels cannot be coded in 358 bytes"),
                         ("regress-294a6530cbb3", "cannot decode image"),
                         ("regress-6b1debf98c6b", "truncated BMP: its header implies 70 bytes, the file has 32")]:
        with pytest.raises(kclip.Error, match=reason):
            kclip.read_image(FUZZ / "image" / name)

