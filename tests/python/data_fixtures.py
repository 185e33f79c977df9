"""Small image–caption data sets made on the fly: image files + a CSV, and the same pairs as webdataset tar shards
(as img2dataset writes them: key.jpg + key.txt + key.json, shards of a fixed size); and a teacher written in Python."""
import csv
import io
import json
import pathlib
import tarfile

import numpy as np
import torch
from PIL import Image

import kclip

WORDS = ["dog", "cat", "bird", "horse", "boat", "car", "tree", "child", "ball", "river", "beach", "snow"]


def caption_of(i):
    return f"a {WORDS[i % len(WORDS)]} and a {WORDS[(i * 7 + 3) % len(WORDS)]} number {i}"


def image_of(i, size=(40, 32)):
    """A deterministic RGB image whose colours depend on i."""
    rng = np.random.default_rng(i)
    base = rng.integers(0, 256, size=3)
    y, x = np.mgrid[0 : size[1], 0 : size[0]]
    pixels = (base[None, None, :] + 5 * x[..., None] + 3 * y[..., None] * (1 + i % 3)) % 256
    return Image.fromarray(pixels.astype(np.uint8), "RGB")


def encode(image, fmt):
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, quality=90) if fmt == "JPEG" else image.save(buffer, format=fmt)
    return buffer.getvalue()


def write_pairs(root, n, fmt="JPEG"):
    """n image files under root/images and root/pairs.csv (filepath,title; paths relative to the CSV)."""
    root = pathlib.Path(root)
    (root / "images").mkdir(parents=True, exist_ok=True)
    ext = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp"}[fmt]
    with open(root / "pairs.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["filepath", "title"])
        for i in range(n):
            name = f"images/{i:05d}.{ext}"
            (root / name).write_bytes(encode(image_of(i), fmt))
            writer.writerow([name, caption_of(i)])
    return root / "pairs.csv"


def write_shards(root, n, per_shard, fmt="JPEG", extra=None):
    """The same n pairs as tar shards root/{00000..}.tar; returns the brace pattern. `extra(i)` may return a dict
    {member_name_suffix: bytes} of members to add (or replace) for sample i."""
    root = pathlib.Path(root)
    root.mkdir(parents=True, exist_ok=True)
    ext = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp"}[fmt]
    shards = (n + per_shard - 1) // per_shard
    for s in range(shards):
        with tarfile.open(root / f"{s:05d}.tar", "w") as tar:
            for i in range(s * per_shard, min(n, (s + 1) * per_shard)):
                key = f"{s:05d}{i:04d}"
                members = {
                    ext: encode(image_of(i), fmt),
                    "txt": caption_of(i).encode(),
                    "json": json.dumps({"key": key, "index": i}).encode(),
                }
                if extra:
                    members.update(extra(i) or {})
                for suffix, data in members.items():
                    if data is None:
                        continue
                    info = tarfile.TarInfo(f"{key}.{suffix}")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
    return str(root / ("{00000..%05d}.tar" % (shards - 1)))


class CharacterTeacher(kclip.Teacher):
    """A teacher written in Python: letter frequencies. Stands where C++ takes a kclip::Teacher."""

    def embed(self, texts):
        out = torch.zeros(len(texts), 26)
        for i, text in enumerate(texts):
            for ch in text.lower():
                if "a" <= ch <= "z":
                    out[i, ord(ch) - 97] += 1
        return out

    def dim(self):
        return 26

    def id(self):
        return "letters-v1"
