"""Training on real data with the real teacher: 1000 Flickr8k captions embedded by stories15M (a trained
Llama-2-architecture model), clustered into concepts, then a `tiny` student trained on them from a CSV and from
the same pairs as webdataset shards. Every loss term must fall on a fixed held-out-style batch."""
import csv
import io
import subprocess
import tarfile

import pytest
import torch

import kclip

PAIRS = 1000  # the first 200 images, 5 captions each


@pytest.fixture(scope="module")
def flickr(shared, tmp_path_factory, kclip_cli):
    root = shared("data/flickr8k-1k")
    teacher = shared("models/stories15M/stories15M.bin")
    tokenizer = shared("tokenizers/llama2/tokenizer.model")
    work = tmp_path_factory.mktemp("flickr")
    with open(root / "captions.csv", newline="") as f:
        rows = list(csv.DictReader(f))[:PAIRS]
    with open(work / "pairs.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["image", "caption"])
        for row in rows:
            writer.writerow([str(root / "images" / row["image"]), row["caption"]])
    # the same pairs as img2dataset-style shards of 250 samples
    for s in range(PAIRS // 250):
        with tarfile.open(work / f"{s:05d}.tar", "w") as tar:
            for i, row in enumerate(rows[s * 250 : (s + 1) * 250]):
                key = f"{s:05d}{i:04d}"
                for suffix, data in (("jpg", (root / "images" / row["image"]).read_bytes()), ("txt", row["caption"].encode())):
                    info = tarfile.TarInfo(f"{key}.{suffix}")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
    subprocess.run([kclip_cli, "embed", "--teacher", teacher, "--tokenizer", tokenizer, "--captions",
                    work / "pairs.csv", "--out", work / "cache", "--quiet"], check=True)
    # kclip embed takes the teacher's own context (256 for stories15M) when --max-length is not given
    assert "max_length=256" in kclip.EmbeddingCache(str(work / "cache")).teacher_id
    subprocess.run([kclip_cli, "cluster", "--embeddings", work / "cache", "--k", "16", "--metric", "cosine",
                    "--out", work / "concepts.safetensors"], check=True, capture_output=True)
    return work


def fixed_batch(work):
    """64 pairs with the evaluation transform: the same tensors before and after training."""
    pairs = kclip.CsvDataset(work / "pairs.csv", img_key="image", caption_key="caption")
    loader = kclip.DataLoader(pairs, batch_size=64, shuffle=False, transform=kclip.ImageTransform(64),
                              teacher_cache=str(work / "cache"), concepts=str(work / "concepts.safetensors"))
    return loader.next()


def losses(trainer, batch):
    model = trainer.model
    with torch.no_grad():
        model.eval()
        out = trainer.loss(model.encode_image(batch["images"]), model.encode_text(batch["text"]), batch["teacher"],
                           batch["concepts"])
        model.train()
    return {k: v.item() for k, v in out.items()}


@pytest.mark.parametrize("source", ["csv", "webdataset"])
def test_the_real_teacher_trains_a_student(flickr, source):
    data = str(flickr / "pairs.csv") if source == "csv" else str(flickr / "{00000..00003}.tar")
    trainer = kclip.Trainer(train_data=data, csv_img_key="image", csv_caption_key="caption", model="tiny",
                            teacher_cache=str(flickr / "cache"), concepts=str(flickr / "concepts.safetensors"),
                            batch_size=32, epochs=3, lr=1e-3, warmup=10, logs=str(flickr / "logs"), name=source,
                            progress=False)
    assert trainer.loader.samples_per_rank == PAIRS and trainer.total_steps == 3 * (PAIRS // 32)
    batch = fixed_batch(flickr)
    before = losses(trainer, batch)
    trainer.fit()
    after = losses(trainer, batch)
    print(f"{source}: before {before} after {after}")
    for term in ("loss", "contrastive", "distillation", "concept"):
        assert after[term] < before[term], (term, before, after)
    assert after["distillation"] < 0.8 * before["distillation"]
    assert after["contrastive"] < before["contrastive"] - 0.2
