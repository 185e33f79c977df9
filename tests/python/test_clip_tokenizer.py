"""kclip.ClipTokenizer: OpenAI's reference ids, and agreement with an independent Python tokenizer
(clip_tokenizer_reference.py) over the 5000 Flickr8k captions and Unicode edge cases."""
import csv
import json

import pytest
import torch

import kclip
from clip_tokenizer_reference import ReferenceTokenizer

VOCAB = "tokenizers/clip/bpe_simple_vocab_16e6.txt.gz"

EDGE_CASES = [
    "ΟΔΟΣ Σ ΣΑ aΣ", "İstanbul", "Straße", "東京タワーの夜景 2024年", "١٢٣ ٤٥ arabic digits", "Ⅻ ½ ² ③",
    "emoji 🙂👍🏽 family 👨‍👩‍👧", "zero\u200bwidth", "combining e\u0301 a\u0308", "tab\tnew\nline\u00a0nbsp",
    "&amp; &lt;b&gt; &#39; &#x27; &#128512; &#0; &#150; &#xD800; &#1114112; &ampfoo &notit; &#; &#x;",
    "&lt;&lt;&lt;", "&;", "a & b", "it's I'M we'LL they'Re you've he'd 'tis ''s", "u.s.a. e-mail #tag @user",
    "$12.50 (approx.) -- 50% off!!!", "<|startoftext|>hello<|endoftext|>", "<|endoftext|>", "x" * 300,
    "supercalifragilisticexpialidocious", "ß ẞ", "a\u0345b !\u0345? \u0399\u0345", "<|ſtartoftext|> it'ſ", "Ⓐ ⓑ", "\u3000 ideographic", "",
]


@pytest.fixture(scope="module")
def tokenizers(shared):
    path = shared(VOCAB)
    return kclip.ClipTokenizer(path), ReferenceTokenizer(path)


def test_reference_captions_match_openai_ids(shared):
    tokenizer = kclip.ClipTokenizer(shared(VOCAB))
    reference = json.loads(shared("golden/clip-tiny/tokens.json").read_text(encoding="utf-8"))
    ids = tokenizer(reference["captions"])
    assert ids.dtype == torch.int64 and ids.shape == (12, 77)
    for row, expected in zip(ids.tolist(), reference["ids"]):
        assert row == expected + [0] * (77 - len(expected))
    assert torch.equal(ids, kclip.load_safetensors(shared("golden/clip-tiny/expected.safetensors"))["input_ids"].long())
    assert (tokenizer.sot_token_id, tokenizer.eot_token_id, tokenizer.vocab_size) == (49406, 49407, 49408)


def test_flickr_captions_and_edge_cases_match_independent_reference(shared, tokenizers):
    ours, reference = tokenizers
    with open(shared("data/flickr8k-1k/captions.csv"), newline="", encoding="utf-8") as f:
        captions = [row["caption"] for row in csv.DictReader(f)]
    assert len(captions) == 5000
    for text in captions + EDGE_CASES:
        assert ours.encode(text) == reference.encode(text), text


def test_call_truncates_with_eot_last_and_accepts_a_string(shared):
    tokenizer = kclip.ClipTokenizer(shared(VOCAB), context_length=8)
    ids = tokenizer("one two three four five six seven eight nine")
    assert ids.shape == (1, 8)
    assert ids[0, 0] == 49406 and ids[0, -1] == 49407
    assert ids[0, 1:7].tolist() == tokenizer.encode("one two three four five six")
    assert tokenizer(["a"], context_length=4).tolist() == [[49406, tokenizer.encode("a")[0], 49407, 0]]
    assert tokenizer.decode(tokenizer.encode("A Dog, running!")) == "a dog , running ! "


def test_hugging_face_vocab_and_merges_give_the_same_ids(shared, tokenizers, tmp_path):
    ours, reference = tokenizers
    reference.write_hf(tmp_path)
    hf = kclip.ClipTokenizer(tmp_path)
    assert hf.vocab_size == 49408
    for text in EDGE_CASES + ["a photo of a cat."]:
        assert hf.encode(text) == ours.encode(text), text


def test_pickles_for_dataloader_workers(shared):
    import pickle
    tokenizer = kclip.ClipTokenizer(shared(VOCAB), context_length=16)
    copy = pickle.loads(pickle.dumps(tokenizer))
    assert copy.context_length == 16 and copy.path == tokenizer.path
    assert torch.equal(copy(["a photo of a cat"]), tokenizer(["a photo of a cat"]))
    transform = pickle.loads(pickle.dumps(kclip.ImageTransform(32, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))))
    assert transform.size == 32 and list(transform.std) == [0.25, 0.25, 0.25]


def test_errors(shared, tmp_path):
    with pytest.raises(kclip.Error, match="CLIP BPE vocabulary not found"):
        kclip.ClipTokenizer(tmp_path / "nope.txt.gz")
    tokenizer = kclip.ClipTokenizer(shared(VOCAB))
    with pytest.raises(ValueError, match="outside the vocabulary"):
        tokenizer.decode([50000])
    with pytest.raises(ValueError, match="no room for SOT and EOT"):
        tokenizer(["a"], context_length=1)


def test_default_path_from_environment(shared, monkeypatch):
    monkeypatch.setenv("KCLIP_CLIP_VOCAB", str(shared(VOCAB)))
    assert kclip.ClipTokenizer.default_vocab_path() == shared(VOCAB)
    assert kclip.ClipTokenizer().encode("a cat") == kclip.ClipTokenizer(shared(VOCAB)).encode("a cat")


def test_vocabulary_fetched_by_make_is_found_by_default(monkeypatch):
    """`make` runs scripts/fetch-assets.sh, which puts OpenAI's file where ClipTokenizer() looks."""
    import os
    monkeypatch.delenv("KCLIP_CLIP_VOCAB", raising=False)
    path = kclip.ClipTokenizer.default_vocab_path()
    if not path.exists():
        message = f"{path} missing: run scripts/fetch-assets.sh"
        if os.environ.get("KCLIP_REQUIRE_SHARED") == "1":
            pytest.fail(message)
        pytest.skip(message)
    assert kclip.ClipTokenizer()("a photo of a cat")[0, :7].tolist() == [49406, 320, 1125, 539, 320, 2368, 49407]


def _ftfy_changes(char):
    """Characters ftfy's fixes rewrite (the independent reference has no ftfy, so random texts avoid them)."""
    o = ord(char)
    return ((o < 0x20 and char not in "\t\n\r\x0c") or 0x7F <= o <= 0x9F or o == 0x2BC or 0x2018 <= o <= 0x201F
            or 0xFF01 <= o < 0xFFF0 or o in (0x3000, 0x2028, 0x2029, 0xFEFF) or o in (0x132, 0x133, 0x149)
            or 0x1C4 <= o <= 0x1CC or 0x1F1 <= o <= 0x1F3 or 0xFB00 <= o <= 0xFB06 or 0x206A <= o <= 0x206F
            or 0xFFF9 <= o <= 0xFFFC)


def test_random_texts_match_independent_reference(tokenizers):
    """Random mixes of entity fragments, contractions, special tokens, marks, scripts and symbols."""
    import random
    import unicodedata
    ours, reference = tokenizers
    pieces = ["&", "#", "x", ";", "amp", "lt", "quot", "notin", "AMP", "&#", "&#x", "12", "9999999", "'s", "'LL",
              "'", "<", "|", "<|endoftext|>", "<|startoftext|>", " ", "\t", "\n", "e\u0301", "Σ", "İ", "ß", "ſ",
              "½", "٣", "日本", "🙂", "\u200b", "\u0345", "x" * 5]
    rng = random.Random(0)

    def random_char():
        while True:
            c = chr(rng.choice([rng.randrange(0x20, 0x7F), rng.randrange(0xA0, 0x3000), rng.randrange(0x3000, 0x10000),
                                rng.randrange(0x10000, 0x30000)]))
            if not _ftfy_changes(c) and unicodedata.category(c) not in ("Cs", "Cn", "Co"):
                return c

    for _ in range(3000):
        text = "".join(rng.choice(pieces) if rng.random() < 0.6 else random_char() for _ in range(rng.randrange(1, 12)))
        assert ours.encode(text) == reference.encode(text), repr(text)


def test_long_and_repetitive_words_match_independent_reference(tokenizers):
    """Long words exercise the heap-ordered merge rounds: overlapping runs ("aaaa...") and random letters."""
    import random
    ours, reference = tokenizers
    rng = random.Random(1)
    words = ["a" * 999, "ab" * 400, "abc" * 300, "mississippi" * 60,
             "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(1500)),
             "".join(rng.choice("東京タワーの夜景") for _ in range(300))]
    for word in words:
        assert ours.encode(word) == reference.encode(word), word[:20]
