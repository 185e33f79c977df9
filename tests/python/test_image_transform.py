"""kclip's image decoding and CLIP preprocessing against Pillow (the resampler OpenAI's pipeline runs) and
OpenAI's reference pixels (../shared/golden/clip-tiny)."""
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

import kclip

GOLDEN = ["china.jpg", "flower.jpg", "fmnist_test_0_label9.png", "fmnist_test_1_label2.png"]


def pil_tensor(image):
    return torch.from_numpy(np.array(image)).permute(2, 0, 1).contiguous()


def pil_preprocess(path, size):
    """OpenAI's clip._transform with Pillow and numpy: Resize(size, BICUBIC), CenterCrop, RGB, ToTensor, Normalize."""
    image = Image.open(path)
    w, h = image.size
    short, long = min(w, h), max(w, h)
    new_w, new_h = (size, int(size * long / short)) if w <= h else (int(size * long / short), size)
    image = image.resize((new_w, new_h), Image.BICUBIC)
    top, left = int(round((new_h - size) / 2.0)), int(round((new_w - size) / 2.0))
    image = image.crop((left, top, left + size, top + size)).convert("RGB")
    x = torch.from_numpy(np.array(image)).permute(2, 0, 1).float().div(255)
    mean, std = torch.tensor(kclip.OPENAI_DATASET_MEAN), torch.tensor(kclip.OPENAI_DATASET_STD)
    return (x - mean[:, None, None]) / std[:, None, None]


def test_resize_is_bit_identical_to_pillow_bicubic(shared):
    photo = pil_tensor(Image.open(shared("golden/clip-tiny/china.jpg")).convert("RGB"))
    generator = torch.Generator().manual_seed(0)
    noise = torch.randint(0, 256, (3, 45, 71), dtype=torch.uint8, generator=generator)
    for image in (photo, noise):
        pil = Image.fromarray(image.permute(1, 2, 0).numpy())
        for w, h in [(224, 149), (333, 224), (50, 37), (700, 500), (28, 28), (1, 1), (31, 400), (71, 45), (72, 44)]:
            expected = pil_tensor(pil.resize((w, h), Image.BICUBIC))
            assert torch.equal(kclip.resize_bicubic(image, h, w), expected), (tuple(image.shape), w, h)


def test_reference_images_equal_openai_pixels(shared):
    """OpenAI's preprocessing of the reference photos and PNGs (Pillow's decoders and resampler), value for value."""
    expected = kclip.load_safetensors(shared("golden/clip-tiny/expected.safetensors"))
    paths = [shared("golden/clip-tiny/" + name) for name in GOLDEN]
    for size, key in ((224, "pixel_values_224"), (64, "pixel_values")):
        pixels = kclip.preprocess(paths, size)
        assert pixels.shape == (4, 3, size, size) and pixels.dtype == torch.float32
        assert torch.allclose(pixels, expected[key], atol=1e-6), (pixels - expected[key]).abs().max()


def test_flickr_photos_match_the_pillow_pipeline(shared):
    """JPEGs decode with libjpeg-turbo, as in Pillow, and resize with Pillow's resampler: the same pixels."""
    paths = sorted(shared("data/flickr8k-1k/images").glob("*.jpg"))[:40]
    ours = kclip.preprocess(paths, 224)
    reference = torch.stack([pil_preprocess(p, 224) for p in paths])
    assert torch.allclose(ours, reference, atol=1e-6), (ours - reference).abs().max()
    for path in paths:  # decoding alone
        assert torch.equal(kclip.read_image(path), pil_tensor(Image.open(path).convert("RGB"))), path.name


def test_jpeg_modes_decode_and_preprocess_exactly_like_pillow(tmp_path):
    """Grey, colour (subsampled or not, baseline or progressive) and Adobe CMYK JPEGs: Pillow opens CMYK as
    "CMYK" and OpenAI's transform resizes it before convert("RGB"), so kclip resizes the inks too."""
    rng = np.random.default_rng(1)
    smooth = np.kron(rng.integers(0, 256, (12, 17, 4), dtype=np.uint8), np.ones((5, 5, 1), dtype=np.uint8))
    base = Image.fromarray(smooth[:, :, :3], "RGB")
    files = {
        "grey.jpg": (base.convert("L"), {}), "rgb.jpg": (base, {}), "rgb444.jpg": (base, {"subsampling": 0}),
        "progressive.jpg": (base, {"progressive": True}), "cmyk.jpg": (Image.fromarray(smooth, "CMYK"), {}),
    }
    for name, (image, options) in files.items():
        image.save(tmp_path / name, quality=90, **options)
        assert Image.open(tmp_path / name).mode == image.mode
        expected = pil_tensor(Image.open(tmp_path / name).convert("RGB"))
        assert torch.equal(kclip.read_image(tmp_path / name), expected), name
        assert torch.equal(kclip.decode_image((tmp_path / name).read_bytes()), expected), name
        for size in (24, 64):
            ours = kclip.preprocess(tmp_path / name, size)
            assert torch.allclose(ours, pil_preprocess(tmp_path / name, size), atol=1e-6), (name, size)
    # Huffman coding spends at least a bit per 8x8 block: blank files reach ~255 pixels a byte; a header claiming
    # more than 512 a byte is refused before libjpeg fills the image with grey
    Image.new("L", (4000, 3000)).save(tmp_path / "blank.jpg", quality=1, progressive=True, optimize=True)
    assert kclip.read_image(tmp_path / "blank.jpg").shape == (3, 3000, 4000)
    data = (tmp_path / "rgb.jpg").read_bytes()
    sof = data.index(b"\xff\xc0")
    (tmp_path / "tall.jpg").write_bytes(data[:sof + 5] + (65000).to_bytes(2, "big") + data[sof + 7:])
    with pytest.raises(kclip.Error, match=r"tall.jpg: truncated JPEG: 85x65000 pixels cannot be coded in \d+ bytes"):
        kclip.read_image(tmp_path / "tall.jpg")
    # resizing in CMYK differs from resizing the converted RGB (the check above can fail)
    converted = kclip.preprocess(kclip.read_image(tmp_path / "cmyk.jpg"), 24)
    assert not torch.allclose(converted, pil_preprocess(tmp_path / "cmyk.jpg", 24), atol=1e-3)


def test_centre_crops_of_extreme_aspect_ratios_equal_pillows_whole_resize(tmp_path):
    """kclip resizes only the centre window the crop keeps (a 2 x 3000 image would otherwise resize to 64 x 96 000
    pixels); Pillow resizes everything, then crops: the same values, for bicubic, nearest and premultiplied modes."""
    rng = np.random.default_rng(2)
    for h, w in [(2, 3000), (3000, 3), (7, 301), (300, 299), (1, 1)]:
        rgba = rng.integers(0, 256, (h, w, 4), dtype=np.uint8)
        for mode in ("RGB", "P", "RGBA"):
            image = Image.fromarray(rgba, "RGBA").convert("RGB").quantize(40) if mode == "P" else \
                Image.fromarray(rgba, "RGBA").convert(mode)
            path = tmp_path / f"{h}x{w}-{mode}.png"
            image.save(path)
            for size in (24, 64):
                assert torch.allclose(kclip.preprocess(path, size), pil_preprocess(path, size), atol=1e-6), (path.name, size)


def test_png_and_gif_headers_are_held_against_the_file_before_decoding(tmp_path):
    """stb_image sizes buffers from headers before reading the data: a chunk or canvas the bytes cannot back is
    refused first, naming what is wrong; the untouched files still decode exactly as Pillow."""
    image = Image.fromarray(np.arange(12 * 9 * 3, dtype=np.uint8).reshape(12, 9, 3) % 251, "RGB")
    image.save(tmp_path / "ok.png")
    image.quantize(16).save(tmp_path / "ok.gif")
    png, gif = (tmp_path / "ok.png").read_bytes(), (tmp_path / "ok.gif").read_bytes()
    idat = png.index(b"IDAT") - 4
    blocks = 13 + 3 * (2 << (gif[10] & 7))  # after the global colour table
    cases = {
        "long-idat.png": (png[:idat] + (10**9).to_bytes(4, "big") + png[idat + 4:], "chunk IDAT at byte 33 declares 1000000000 bytes"),
        "cut.png": (png[:idat + 12], "truncated PNG: chunk IDAT"),
        "huge-canvas.gif": (gif[:6] + (60000).to_bytes(2, "little") * 2 + gif[10:], "a 60000x60000 GIF canvas"),
        "no-image.gif": (gif[:blocks] + b"\x3b", "a GIF without an image"),
        "cut.gif": (gif[:-8], "truncated GIF: its first image ends before its data does"),
        "odd-block.gif": (gif[:blocks] + b"\x55" + gif[blocks:], f"unknown block 0x55 at byte {blocks}"),
    }
    for name, (data, reason) in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(kclip.Error, match=f"{name}: .*{reason}"):
            kclip.read_image(tmp_path / name)
    empty_idat = b"\x00\x00\x00\x00IDAT" + zlib.crc32(b"IDAT").to_bytes(4, "big")  # legal: stb mishandles it
    (tmp_path / "empty-idat.png").write_bytes(png[:idat] + empty_idat + png[idat:])
    for h, w in [(1, 1), (2, 3)]:  # the smallest BMPs are shorter than the headers' largest form
        image.crop((0, 0, w, h)).save(tmp_path / f"{h}x{w}.bmp")
    (tmp_path / "cut-header.bmp").write_bytes((tmp_path / "2x3.bmp").read_bytes()[:32])
    with pytest.raises(kclip.Error, match="cut-header.bmp: truncated BMP: its header implies 54 bytes, the file has 32"):
        kclip.read_image(tmp_path / "cut-header.bmp")
    for name in ("ok.png", "ok.gif", "empty-idat.png", "1x1.bmp", "2x3.bmp"):
        assert torch.equal(kclip.read_image(tmp_path / name), pil_tensor(Image.open(tmp_path / name).convert("RGB")))
    # zlib's best ratio is 1032:1: blank images compressed as far as Pillow can still decode (up to 7400 pixels a byte)
    for mode in ("1", "L", "RGBA", "P"):
        Image.new(mode, (3000, 2000), 0).save(tmp_path / f"blank-{mode}.png", optimize=True, compress_level=9)
        assert kclip.read_image(tmp_path / f"blank-{mode}.png").shape == (3, 2000, 3000)
    width, height = 9, 16715532  # IHDR edited to 150 million pixels: 27 bytes of data cannot hold them
    ihdr = png[:16] + width.to_bytes(4, "big") + height.to_bytes(4, "big") + png[24:]
    (tmp_path / "tall.png").write_bytes(ihdr)
    with pytest.raises(kclip.Error, match=r"tall.png: truncated PNG: 9x16715532 pixels need \d+ bytes"):
        kclip.read_image(tmp_path / "tall.png")


def test_a_jpeg_of_thousands_of_scans_is_refused(tmp_path):
    """Each progressive scan passes over the whole image: a file repeating one tiny scan 600 times (libjpeg only
    warns) is refused after 500 scans instead of decoding for minutes at full size."""
    Image.new("RGB", (64, 64), (200, 30, 30)).save(tmp_path / "p.jpg", progressive=True)
    data = (tmp_path / "p.jpg").read_bytes()
    first = data.index(b"\xff\xda")  # the first scan (DC) runs to the next marker that is not a restart/stuffing
    end = first + 2
    while not (data[end] == 0xFF and data[end + 1] not in (0x00, *range(0xD0, 0xD8))):
        end += 1
    (tmp_path / "bomb.jpg").write_bytes(data[:first] + data[first:end] * 600 + data[end:])
    with pytest.raises(kclip.Error, match="bomb.jpg: corrupt JPEG: more than 500 scans"):
        kclip.read_image(tmp_path / "bomb.jpg")
    assert kclip.read_image(tmp_path / "p.jpg").shape == (3, 64, 64)


def test_preprocess_accepts_paths_tensors_and_batches(shared):
    path = shared("golden/clip-tiny/flower.jpg")
    one = kclip.preprocess(path, 64)
    assert one.shape == (3, 64, 64)
    image = kclip.read_image(path)
    assert image.dtype == torch.uint8 and image.shape == (3, 427, 640)
    assert torch.equal(kclip.preprocess(str(path), 64), one)
    assert torch.equal(kclip.preprocess(image, 64), one)
    assert torch.equal(kclip.preprocess([image, image], 64)[1], one)
    assert torch.equal(kclip.preprocess(torch.stack([image, image]), 64)[0], one)
    assert torch.equal(kclip.decode_image(path.read_bytes()), image)
    grey = kclip.read_image(shared("golden/clip-tiny/fmnist_test_0_label9.png"))
    assert torch.equal(grey[0], grey[1]) and torch.equal(grey[1], grey[2])
    assert torch.equal(kclip.preprocess(grey[0], 32), kclip.preprocess(grey, 32))
    transform = kclip.ImageTransform(32, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    assert transform(grey).min() >= -1 and transform(grey).max() <= 1


def test_bad_images_name_the_file(shared, tmp_path):
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(shared("golden/clip-tiny/china.jpg").read_bytes()[:20000])
    with pytest.raises(kclip.Error, match="cut.jpg: truncated JPEG"):
        kclip.preprocess([cut])
    (tmp_path / "notes.png").write_text("hello")
    with pytest.raises(kclip.Error, match="notes.png: cannot decode image"):
        kclip.read_image(tmp_path / "notes.png")
    with pytest.raises(kclip.Error, match="cannot open"):
        kclip.read_image(tmp_path / "absent.jpg")
    with pytest.raises(ValueError, match="expected uint8"):
        kclip.preprocess(torch.zeros(3, 8, 8))


def test_png_and_gif_modes_preprocess_exactly_like_pillow(tmp_path):
    """Lossless files leave only the resampling to compare: Pillow resizes palette and 1-bit images with nearest
    neighbour and LA / RGBA ones premultiplied by alpha; kclip follows the mode the file opens as."""
    rng = np.random.default_rng(0)
    rgba = rng.integers(0, 256, (37, 53, 4), dtype=np.uint8)
    rgba[:10, :, 3] = 0  # fully transparent rows: their colour is lost in Pillow's premultiplied resize
    base = Image.fromarray(rgba, "RGBA")
    images = {
        "rgb.png": base.convert("RGB"), "grey.png": base.convert("L"), "rgba.png": base, "la.png": base.convert("LA"),
        "palette.png": base.convert("RGB").quantize(17), "bilevel.png": base.convert("1"),
        "palette.gif": base.convert("RGB").quantize(31), "grey.gif": base.convert("L"),
    }
    for name, image in images.items():
        image.save(tmp_path / name)
        assert Image.open(tmp_path / name).mode == image.mode or name.endswith(".gif")
        for size in (24, 64):
            ours = kclip.preprocess(tmp_path / name, size)
            assert torch.allclose(ours, pil_preprocess(tmp_path / name, size), atol=1e-6), (name, size)
    # A uint8 RGBA tensor takes the premultiplied path too.
    tensor = torch.from_numpy(rgba).permute(2, 0, 1).contiguous()
    assert torch.allclose(kclip.preprocess(tensor, 24), pil_preprocess(tmp_path / "rgba.png", 24), atol=1e-6)
