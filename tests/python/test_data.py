"""Training data: CSV / webdataset / image-folder / IDX sources, the DataLoader (order, sharding, skipping, resume),
the training augmentation, and the teacher and concept targets attached to batches."""
import io
import pathlib

import numpy as np
import pytest
import torch
import torchvision.transforms.functional as TF
from PIL import Image

import kclip
from data_fixtures import caption_of, encode, image_of, write_pairs, write_shards

SIZE = 32


def eval_transform():
    return kclip.ImageTransform(SIZE)


def loader(data, **kw):
    kw.setdefault("batch_size", 8)
    kw.setdefault("transform", eval_transform())
    kw.setdefault("context_length", 16)
    return kclip.DataLoader(data, **kw)


def epoch(loader_):
    return list(iter(loader_))


def test_csv_dataset_follows_open_clip(tmp_path):
    (tmp_path / "a.tsv").write_text("filepath\ttitle\nimg/x.jpg\ta dog\n/abs/y.png\t\"a cat\tsitting\"\nbroken\n")
    ds = kclip.CsvDataset(tmp_path / "a.tsv")  # open_clip's defaults: tab, filepath, title
    assert len(ds) == 2 and ds.skipped_rows == 1
    assert ds[0]["image_path"] == tmp_path / "img/x.jpg" and ds[0]["caption"] == "a dog"
    assert ds[1]["image_path"] == pathlib.Path("/abs/y.png") and ds[1]["caption"] == "a cat\tsitting"
    with pytest.raises(kclip.Error, match="record 4 has 1 fields"):
        kclip.CsvDataset(tmp_path / "a.tsv", bad_rows="error")
    with pytest.raises(kclip.Error, match=r"no column 'image' \(--csv-img-key\)"):
        kclip.CsvDataset(tmp_path / "a.tsv", img_key="image")
    (tmp_path / "empty.csv").write_text("filepath,title\n")
    with pytest.raises(kclip.Error, match="no usable records"):
        kclip.CsvDataset(tmp_path / "empty.csv")


def test_loader_yields_the_epoch_order_with_preprocessed_images(tmp_path):
    csv = write_pairs(tmp_path, 30)
    ds = kclip.CsvDataset(csv)
    dl = loader(ds, seed=5)
    order = dl.epoch_order(0)
    batches = epoch(dl)
    assert len(batches) == len(dl) == 3  # 30 // 8, the last partial batch dropped
    captions = [c for b in batches for c in b["captions"]]
    assert captions == [caption_of(i) for i in order[:24]]
    first = batches[0]
    assert first["images"].shape == (8, 3, SIZE, SIZE) and first["text"].shape == (8, 16)
    expected = kclip.preprocess([str(ds[i]["image_path"]) for i in order[:8]], SIZE)
    assert torch.equal(first["images"], expected)
    tokenizer = kclip.ClipTokenizer()
    assert torch.equal(first["text"], tokenizer(first["captions"], context_length=16))
    assert epoch(dl)[0]["captions"] != first["captions"]  # epoch 1 is reshuffled
    assert dl.epoch_order(0) == loader(ds, seed=5).epoch_order(0)


def test_ranks_get_disjoint_interleaved_shares(tmp_path):
    ds = kclip.CsvDataset(write_pairs(tmp_path, 45))
    full = loader(ds, seed=2).epoch_order(3)
    shares = [loader(ds, seed=2, rank=r, world_size=3).epoch_order(3) for r in range(3)]
    for r, share in enumerate(shares):
        assert share == full[r::3][: len(share)] and len(share) == 15
    assert sorted(sum(shares, [])) == sorted(full)


def test_missing_images_are_skipped_and_counted_or_fatal(tmp_path):
    csv = write_pairs(tmp_path, 20)
    (tmp_path / "images/00003.jpg").unlink()
    (tmp_path / "images/00007.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    dl = loader(kclip.CsvDataset(csv), shuffle=False)
    batches = epoch(dl)
    assert len(batches) == 2  # 18 readable images: two full batches
    captions = [c for b in batches for c in b["captions"]]
    assert caption_of(3) not in captions and caption_of(7) not in captions
    assert batches[0]["skipped"] == 2 and dl.cursor["skipped"] == 2
    strict = loader(kclip.CsvDataset(csv), shuffle=False, bad_samples="error")
    with pytest.raises(kclip.Error, match="00003.jpg"):
        next(iter(strict))


def test_webdataset_shards_hold_the_same_pairs_as_the_csv(tmp_path):
    csv = write_pairs(tmp_path / "csv", 50)
    pattern = write_shards(tmp_path / "wds", 50, per_shard=16)
    assert pattern.endswith("{00000..00003}.tar")
    wds = kclip.WebDataset(pattern)
    assert len(wds) == 50 and wds.shard_sizes == [16, 16, 16, 2] and len(wds.shards) == 4
    from_tar = {}
    for b in epoch(loader(wds, batch_size=10, drop_last=False)):
        for caption, image in zip(b["captions"], b["images"]):
            from_tar[caption] = image
    from_csv = {}
    for b in epoch(loader(kclip.CsvDataset(csv), batch_size=10, drop_last=False)):
        for caption, image in zip(b["captions"], b["images"]):
            from_csv[caption] = image
    assert from_tar.keys() == from_csv.keys() and len(from_tar) == 50
    assert all(torch.equal(from_tar[c], from_csv[c]) for c in from_csv)
    assert kclip.open_data_source(pattern).shard_sizes == [16, 16, 16, 2]


def test_webdataset_incomplete_and_corrupt_members(tmp_path):
    def damage(i):
        if i == 3:
            return {"txt": None}  # no caption: not a sample
        if i == 5:
            return {"jpg": b"\xff\xd8\xff garbage"}  # undecodable image: skipped when read
        return None

    pattern = write_shards(tmp_path, 20, per_shard=10, extra=damage)
    wds = kclip.WebDataset(pattern)
    assert len(wds) == 19 and wds.incomplete == 1
    dl = loader(wds, batch_size=6, shuffle=False)
    captions = [c for b in epoch(dl) for c in b["captions"]]
    assert len(captions) == 18 and caption_of(5) not in captions and dl.cursor["skipped"] == 1
    assert loader(wds, batch_size=6, shuffle=False).next()["skipped"] == 1
    with pytest.raises(kclip.Error, match=r"00000\.tar:000000005"):
        epoch(loader(wds, batch_size=6, shuffle=False, bad_samples="error"))

    # A shard cut in the middle of a member: the samples before it are read, the rest of the shard is skipped
    # (counted), or it is an error naming the shard.
    first = pathlib.Path(tmp_path / "00000.tar")
    data = first.read_bytes()
    first.write_bytes(data[: len(data) // 2 + 700])  # inside a member, not at a 512-byte block boundary
    cut = kclip.WebDataset(pattern)
    assert len(cut.damaged) == 1 and "00000.tar" in cut.damaged[0] and 0 < cut.shard_sizes[0] < 9
    damaged = loader(cut, batch_size=4, shuffle=False, drop_last=False)
    read = sum(len(b["captions"]) for b in epoch(damaged))
    assert read == 10 + cut.shard_sizes[0] and damaged.cursor["skipped"] == 1  # the rest of the cut shard
    with pytest.raises(kclip.Error, match="00000.tar"):
        epoch(loader(kclip.WebDataset(pattern), batch_size=4, shuffle=False, bad_samples="error"))


def test_webdataset_ranks_split_by_shard_then_by_sample(tmp_path):
    pattern = write_shards(tmp_path / "four", 40, per_shard=10)
    seen = []
    for r in range(2):
        dl = loader(kclip.WebDataset(pattern), batch_size=5, rank=r, world_size=2, seed=1)
        assert len(dl) == 4
        seen.append({c for b in epoch(dl) for c in b["captions"]})
    assert not seen[0] & seen[1] and len(seen[0] | seen[1]) == 40

    one = write_shards(tmp_path / "one", 12, per_shard=12)  # fewer shards than ranks: every 2nd sample
    shares = [{c for b in epoch(loader(kclip.WebDataset(one), batch_size=3, rank=r, world_size=2, shuffle=False))
               for c in b["captions"]} for r in range(2)]
    assert shares[0] == {caption_of(i) for i in range(0, 12, 2)}
    assert shares[1] == {caption_of(i) for i in range(1, 12, 2)}


def test_webdataset_resumes_mid_epoch_through_the_shuffle_buffer(tmp_path):
    pattern = write_shards(tmp_path, 60, per_shard=15)
    wds = kclip.WebDataset(pattern, shuffle_buffer=20)
    reference = loader(wds, batch_size=7, seed=9)
    full = [b["captions"] for b in epoch(reference)] + [b["captions"] for b in epoch(reference)]
    first = loader(wds, batch_size=7, seed=9)
    got = [first.next()["captions"] for _ in range(5)]
    resumed = loader(wds, batch_size=7, seed=9)
    resumed.seek(first.cursor)
    while len(got) < len(full):
        batch = resumed.next()
        if batch is not None:
            got.append(batch["captions"])
    assert got == full
    assert full[0] != [caption_of(i) for i in range(7)]  # shuffled


def test_image_folder_captions_from_templates(tmp_path):
    for name, count in [("golden_retriever", 3), ("tabby_cat", 2)]:
        (tmp_path / name).mkdir()
        for i in range(count):
            image_of(i).save(tmp_path / name / f"{i}.png")
    (tmp_path / "tabby_cat" / "notes.txt").write_text("not an image")
    ds = kclip.ImageFolderDataset(tmp_path, templates="openai-cifar10")
    assert len(ds) == 5 and ds.classes == ["golden_retriever", "tabby_cat"]
    assert [ds[i]["label"] for i in range(5)] == [0, 0, 0, 1, 1]
    templates = kclip.caption_templates("openai-cifar10")
    assert len(templates) == 18 and templates[0] == "a photo of a {}."
    assert ds[3]["caption"] in [t.format("tabby cat") for t in templates]
    assert len(ds.captions()) == 2 * 18
    (tmp_path / "empty_class").mkdir()
    with pytest.raises(kclip.Error, match="class folder 'empty_class' holds no images"):
        kclip.ImageFolderDataset(tmp_path)
    assert len(kclip.caption_templates("openai-imagenet")) == 80
    (tmp_path / "t.txt").write_text("itap of a {}.\nno class slot\n")
    with pytest.raises(ValueError, match="no \\{\\} for the class name"):
        kclip.caption_templates(str(tmp_path / "t.txt"))


def test_fashion_mnist_idx():
    ds = kclip.IdxDataset.named("fashion-mnist", split="test")
    assert len(ds) == 10000 and ds.classes[0] == "t-shirt/top" and ds.classes[9] == "ankle boot"
    sample = ds[17]
    assert sample["image"].shape == (28, 28) and sample["image"].dtype == torch.uint8
    assert sample["caption"] == f"a photo of a {ds.classes[sample['label']]}."
    assert int(ds.labels[17]) == sample["label"]
    batch = loader(ds, batch_size=4, shuffle=False).next()
    assert batch["images"].shape == (4, 3, SIZE, SIZE)
    assert batch["labels"].tolist() == ds.labels[:4].tolist()
    grey = ds.images[0].expand(3, 28, 28).contiguous()
    assert torch.equal(batch["images"][0], kclip.ImageTransform(SIZE)(grey))


def test_random_resized_crop(tmp_path):
    image = torch.from_numpy(np.array(image_of(4, size=(48, 48)))).permute(2, 0, 1).contiguous()
    crop = kclip.ImageTransform(SIZE, random_resized_crop=True, crop_scale=(0.3, 0.7))
    a, b = crop.apply(image, 1), crop.apply(image, 2)
    assert torch.equal(a, crop.apply(image, 1)) and not torch.equal(a, b)
    # The whole window (scale 1, ratio 1 on a square image) is torchvision's RandomResizedCrop on PIL exactly.
    whole = kclip.ImageTransform(SIZE, random_resized_crop=True, crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0))
    pil = Image.fromarray(image.permute(1, 2, 0).numpy())
    expected = TF.normalize(TF.to_tensor(TF.resized_crop(pil, 0, 0, 48, 48, [SIZE, SIZE], TF.InterpolationMode.BICUBIC)),
                            kclip.OPENAI_DATASET_MEAN, kclip.OPENAI_DATASET_STD)
    assert torch.allclose(whole.apply(image, 7), expected, atol=1e-6)
    import pickle  # DataLoader workers started with spawn get the same transform

    assert tuple(pickle.loads(pickle.dumps(crop)).crop_scale) == (0.3, 0.7)


def test_webp_images_decode_like_pillow(tmp_path):
    image = image_of(2, size=(37, 23))
    data = encode(image, "WEBP")
    ours = kclip.decode_image(data, "x.webp")
    theirs = torch.from_numpy(np.array(Image.open(io.BytesIO(data)).convert("RGB"))).permute(2, 0, 1)
    assert torch.equal(ours, theirs)
    csv = write_pairs(tmp_path, 9, fmt="WEBP")
    assert loader(kclip.CsvDataset(csv), batch_size=9).next()["images"].shape == (9, 3, SIZE, SIZE)


class HashTeacher(kclip.Teacher):
    """A deterministic teacher written in Python: a pseudo-random embedding per caption."""

    def embed(self, texts):
        return torch.stack([torch.randn(12, generator=torch.Generator().manual_seed(sum(map(ord, t)))) for t in texts])

    def dim(self):
        return 12

    def id(self):
        return "hash-teacher"


def test_batches_carry_teacher_embeddings_and_concept_labels(tmp_path):
    csv = write_pairs(tmp_path, 24)
    ds = kclip.CsvDataset(csv)
    cache = kclip.EmbeddingCache.build(str(tmp_path / "cache"), HashTeacher(), ds.captions(), progress=False)
    km = kclip.KMeans(4, seed=0).fit(torch.cat([s.float() for s in cache.shards()]))
    km.save(str(tmp_path / "concepts.safetensors"), {"teacher_id": "hash-teacher"})
    dl = loader(ds, teacher_cache=str(tmp_path / "cache"), concepts=str(tmp_path / "concepts.safetensors"),
                concept_temperature=0.5, concept_top_k=2)
    for batch in epoch(dl):
        assert torch.equal(batch["teacher"], cache.get(batch["captions"]))
        assert torch.allclose(batch["concepts"], km.soft_labels(batch["teacher"], 0.5, 2))
        assert (batch["concepts"] > 0).sum(1).tolist() == [2] * 8

    (tmp_path / "other.csv").write_text("filepath,title\nimages/00000.jpg,an unseen caption\nimages/00001.jpg,a dog\n")
    with pytest.raises(kclip.Error, match=r"2 of 2 captions .* are not in the teacher cache, e\.g\. \"an unseen caption\""):
        loader(kclip.CsvDataset(tmp_path / "other.csv"), teacher_cache=str(tmp_path / "cache"), batch_size=2)
    km.save(str(tmp_path / "wrong.safetensors"), {"teacher_id": "another-teacher"})
    with pytest.raises(kclip.Error, match="clustered from teacher 'another-teacher'"):
        loader(ds, teacher_cache=str(tmp_path / "cache"), concepts=str(tmp_path / "wrong.safetensors"))


def test_brace_expansion():
    assert kclip.expand_braces("s/{000..002}.tar") == ["s/000.tar", "s/001.tar", "s/002.tar"]
    assert kclip.expand_braces("{a,b}/{0..1}.tar::c.tar") == ["a/0.tar", "a/1.tar", "b/0.tar", "b/1.tar", "c.tar"]
    with pytest.raises(ValueError, match="runs backwards"):
        kclip.expand_braces("{5..1}.tar")
