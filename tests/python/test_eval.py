"""Evaluation: OpenAI's zero-shot procedure, exact accuracies, blockwise retrieval against a dense computation, the
linear probe against scikit-learn, the text reconstruction probe's sanity (injective vs constant encoders), concept
agreement, and `kclip eval`'s results document."""
import json
import random
import subprocess

import pytest
import torch
import torch.nn.functional as F
from sklearn.linear_model import LogisticRegression

import kclip
from data_fixtures import image_of, write_pairs
from test_data import HashTeacher


def test_zeroshot_classifier_is_openais_procedure_on_the_golden_model(shared):
    golden = shared("golden/clip-tiny")
    model = kclip.CLIP.load(str(golden / "model.safetensors"))
    captions = json.loads((golden / "captions.json").read_text())
    reference = kclip.load_safetensors(str(golden / "expected.safetensors"))["text_features"].float()
    groups = [[0, 1], [2, 3], [4, 5, 6]]
    weights = kclip.zeroshot_classifier(model, texts=[[captions[i] for i in g] for g in groups])
    # OpenAI's notebook: normalise each text embedding, average per class, normalise again (OpenAI's own features)
    unit = F.normalize(reference, dim=1)
    expected = torch.stack([F.normalize(unit[g].mean(0), dim=0) for g in groups], 1)
    assert weights.shape == (64, 3)
    assert (weights - expected).abs().max() < 1e-5
    # class names × templates build the same texts
    by_name = kclip.zeroshot_classifier(model, ["cat"], ["a photo of a {}.", "a photo of a {}."])
    assert torch.allclose(by_name[:, 0], F.normalize(unit[0], dim=0), atol=1e-5)
    assert kclip.class_prompt_name("001.Black_footed_Albatross") == "Black footed Albatross"


def test_accuracy_of_known_logits_is_exact():
    logits = torch.tensor([[5.0, 1, 0, 0, 0, 0], [0, 5, 1, 0, 0, 0], [1, 0, 5, 0, 0, 0], [0, 0, 0, 1, 2, 3],
                           [9, 8, 7, 6, 5, 0], [0, 1, 2, 3, 4, 5]])
    labels = torch.tensor([0, 1, 0, 3, 5, 5])
    r = kclip.classification_accuracy(logits, labels)
    assert r["top1"] == 3 / 6 and r["top5"] == 5 / 6 and r["samples"] == 6 and r["classes"] == 6
    assert r["per_class"] == {"0": 0.5, "1": 1.0, "2": None, "3": 0.0, "4": None, "5": 0.5}


def test_zeroshot_pipeline_equals_its_parts(tmp_path):
    for name, shift in [("red_car", 0), ("blue_boat", 7)]:
        (tmp_path / name).mkdir()
        for i in range(4):
            image_of(i + shift).save(tmp_path / name / f"{i}.png")
    torch.manual_seed(0)
    model = kclip.CLIP(kclip.CLIPConfig.named("tiny"))
    result = kclip.evaluate_zeroshot(model, str(tmp_path), templates="openai-cifar10", batch_size=3)
    features, labels = kclip.encode_images(model, kclip.ImageFolderDataset(tmp_path))
    classifier = kclip.zeroshot_classifier(model, ["red car", "blue boat"], "openai-cifar10")
    direct = kclip.classification_accuracy(100 * features @ classifier, labels)
    assert result["top1"] == direct["top1"] and result["per_class"].keys() == {"red_car", "blue_boat"}
    assert labels.tolist() == [0] * 4 + [1] * 4 and torch.allclose(features.norm(dim=1), torch.ones(8))


@pytest.mark.parametrize("block", [1, 7, 64, 4096])
def test_blockwise_retrieval_equals_a_dense_computation(block):
    torch.manual_seed(block)
    images, texts = F.normalize(torch.randn(40, 12), dim=1), F.normalize(torch.randn(170, 12), dim=1)
    owner = torch.randint(0, 40, (170,))
    owner[:40] = torch.arange(40)  # every image has a caption
    texts[:40] = F.normalize(images + 0.3 * torch.randn(40, 12), dim=1)  # some of them close to it
    result = kclip.retrieval_recall(images, texts, owner, block=block)
    similarity = images @ texts.T
    ranked = similarity.argsort(dim=1, descending=True)
    ranked_images = similarity.T.argsort(dim=1, descending=True)
    for k in (1, 5, 10):
        i2t = (owner[ranked[:, :k]] == torch.arange(40)[:, None]).any(1).float().mean().item()
        t2i = (ranked_images[:, :k] == owner[:, None]).any(1).float().mean().item()
        assert result["image_to_text"][f"R@{k}"] == pytest.approx(i2t)
        assert result["text_to_image"][f"R@{k}"] == pytest.approx(t2i)
    assert result["image_to_text"]["R@1"] > 0.1  # the close captions are found


def test_retrieval_from_a_pairs_csv(tmp_path):
    csv = write_pairs(tmp_path, 12)
    rows = csv.read_text().splitlines()
    csv.write_text("\n".join(rows + [rows[1].split(",")[0] + ",another caption of the first image"]) + "\n")
    torch.manual_seed(0)
    model = kclip.CLIP(kclip.CLIPConfig.named("tiny"))
    r = kclip.evaluate_retrieval(model, csv, img_key="filepath", caption_key="title")
    assert r["images"] == 12 and r["texts"] == 13 and set(r["image_to_text"]) == {"R@1", "R@5", "R@10"}
    assert all(0 <= v <= 1 for v in list(r["image_to_text"].values()) + list(r["text_to_image"].values()))


def gaussian_classes(n, seed):
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(6, 24, generator=torch.Generator().manual_seed(99)) * 1.2
    y = torch.randint(0, 6, (n,), generator=g)
    return centers[y] + torch.randn(n, 24, generator=g) * 1.5, y


def test_linear_probe_matches_scikit_learn():
    train_x, train_y = gaussian_classes(900, 0)
    test_x, test_y = gaussian_classes(600, 1)
    for c in (0.01, 1.0, 100.0):
        w, b = kclip.fit_logistic_regression(train_x, train_y, 6, c)
        ours = ((test_x @ w + b).argmax(1) == test_y).float().mean().item()
        reference = LogisticRegression(C=c, max_iter=5000).fit(train_x.numpy(), train_y.numpy())
        theirs = (reference.predict(test_x.numpy()) == test_y.numpy()).mean()
        assert abs(ours - theirs) <= 0.005, (c, ours, theirs)
    result = kclip.linear_probe(train_x, train_y, test_x, test_y)
    assert result["c"] in (1e-3, 1e-2, 1e-1, 1, 10, 100, 1000) and len(result["validation"]) == 7
    best = LogisticRegression(C=result["c"], max_iter=5000).fit(train_x.numpy(), train_y.numpy())
    assert abs(result["top1"] - (best.predict(test_x.numpy()) == test_y.numpy()).mean()) <= 0.005


def test_cub_split_for_the_linear_probe(shared):
    split_dir = shared("data/cub200-50")
    model = kclip.CLIP(kclip.CLIPConfig.named("tiny"))
    features, labels = kclip.encode_images(model, kclip.ImageFolderDataset(split_dir / "images"), batch_size=512)
    assert features.shape == (2889, 64) and labels.max().item() == 49
    result = kclip.evaluate_linear_probe(model, str(split_dir), c_grid=[0.1, 10.0], batch_size=512)
    assert result["train"] == 1500 and result["test"] == 1389 and result["classes"] == 50
    assert 1 / 50 < result["top1"] <= 1  # a random tiny student's features still beat chance


def random_captions(n, seed):
    words = "dog cat bird horse boat car tree child ball river beach snow red blue green small big runs jumps sits".split()
    rng = random.Random(seed)
    return sorted({" ".join(rng.choice(words) for _ in range(rng.randint(3, 6))) for _ in range(n)})


def test_text_probe_reads_back_an_injective_encoding_and_nothing_from_a_constant():
    train, test = kclip.split_captions(random_captions(3000, 0), 0.2)
    assert not set(train) & set(test) and 0.15 < len(test) / (len(train) + len(test)) < 0.25
    tokenizer = kclip.ClipTokenizer()
    codes = torch.randn(49408, 16, generator=torch.Generator().manual_seed(1))

    def injective(texts):  # each position's token as a random code: everything is in the vector
        out = torch.zeros(len(texts), 8 * 16)
        for i, text in enumerate(texts):
            for j, token in enumerate(tokenizer.encode(text)[:8]):
                out[i, j * 16 : (j + 1) * 16] = codes[token]
        return out

    options = dict(width=128, max_tokens=10, epochs=10, lr=2e-3)
    readable = kclip.TextProbe(train, 128, **options).run(injective, train, test)
    constant = kclip.TextProbe(train, 4, **options).run(lambda texts: torch.ones(len(texts), 4), train, test)
    assert readable["exact_match"] >= 0.4 and readable["token_accuracy"] >= 0.75, readable
    assert constant["exact_match"] <= 0.01 and constant["token_accuracy"] < 0.35, constant
    assert readable["test"] == len(test) and len(readable["examples"]) == 5


def test_concept_agreement(tmp_path):
    csv = write_pairs(tmp_path, 30)
    captions = kclip.CsvDataset(csv).captions()
    cache = kclip.EmbeddingCache.build(str(tmp_path / "cache"), HashTeacher(), captions, progress=False)
    km = kclip.KMeans(3, seed=0).fit(cache.get(captions))
    km.save(str(tmp_path / "k.safetensors"))
    trainer = kclip.Trainer(alpha=1.0, beta=1.0, teacher_dim=12, num_concepts=3, max_steps=1, logs=str(tmp_path),
                            progress=False)
    with_heads = kclip.evaluate_concepts(trainer.model, trainer.loss, csv, tmp_path / "cache", tmp_path / "k.safetensors",
                                         img_key="filepath", caption_key="title")
    assert with_heads["head"] == "per_modality" and with_heads["pairs"] == 30 and with_heads["concepts"] == 3
    for key in ("nmi", "purity", "ari", "distill_cosine", "knn_overlap"):
        assert with_heads[key] is not None, key
    assert 1 / 3 <= with_heads["purity"] <= 1 and 0 <= with_heads["knn_overlap"] <= 1
    bare = kclip.evaluate_concepts(trainer.model, None, csv, tmp_path / "cache", km, img_key="filepath",
                                   caption_key="title")
    assert bare["nmi"] is None and bare["distill_cosine"] is None and 0 <= bare["kmeans"]["nmi"] <= 1


def test_cli_writes_one_results_document(tmp_path, kclip_cli):
    csv = write_pairs(tmp_path / "pairs", 20)
    for name, shift in [("cat", 0), ("dog", 9)]:
        (tmp_path / "classes" / name).mkdir(parents=True)
        for i in range(3):
            image_of(i + shift).save(tmp_path / "classes" / name / f"{i}.png")
    for split in ("train", "test"):
        for name, shift in [("cat", 0), ("dog", 9)]:
            (tmp_path / "probe" / split / name).mkdir(parents=True)
            for i in range(8):
                image_of(i + shift + (0 if split == "train" else 100)).save(tmp_path / "probe" / split / name / f"{i}.png")
    model = kclip.CLIP(kclip.CLIPConfig.named("tiny"))
    model.save(str(tmp_path / "student.safetensors"))
    out = tmp_path / "results.json"
    run = subprocess.run([kclip_cli, "eval", "--model", tmp_path / "student.safetensors", "--zeroshot",
                          tmp_path / "classes", "--templates", "simple", "--retrieval", csv, "--csv-img-key", "filepath",
                          "--csv-caption-key", "title", "--linear-probe", tmp_path / "probe", "--text-probe", csv,
                          "--text-probe-epochs", "2", "--out", out], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    results = json.loads(out.read_text())
    assert 0 <= results["zeroshot"]["top1"] <= 1 and 0 <= results["zeroshot"]["top5"] <= 1
    assert set(results["retrieval"]["image_to_text"]) == {"R@1", "R@5", "R@10"}
    assert set(results["retrieval"]["text_to_image"]) == {"R@1", "R@5", "R@10"}
    assert 0 <= results["linear_probe"]["top1"] <= 1
    assert 0 <= results["text_probe"]["exact_match"] <= 1 and 0 <= results["text_probe"]["token_accuracy"] <= 1
    assert results["model"]["path"].endswith("student.safetensors") and results["model"]["fingerprint"]
    (tmp_path / "captions_only.csv").write_text("caption\na dog\n")
    no_images = subprocess.run([kclip_cli, "eval", "--model", tmp_path / "student.safetensors", "--retrieval",
                                tmp_path / "captions_only.csv"], capture_output=True, text=True)
    assert no_images.returncode == 2 and "no column 'image' (--csv-img-key)" in no_images.stderr
    (tmp_path / "classes" / "empty").mkdir()
    bad = subprocess.run([kclip_cli, "eval", "--model", tmp_path / "student.safetensors", "--zeroshot",
                          tmp_path / "classes"], capture_output=True, text=True)
    assert bad.returncode == 2 and "class folder 'empty' holds no images" in bad.stderr


def test_cli_concept_agreement_of_a_trainer_checkpoint(tmp_path, kclip_cli):
    csv = write_pairs(tmp_path / "pairs", 24)
    captions = kclip.CsvDataset(csv).captions()
    cache = kclip.EmbeddingCache.build(str(tmp_path / "cache"), HashTeacher(), captions, progress=False)
    kclip.KMeans(4, seed=0).fit(cache.get(captions)).save(str(tmp_path / "k.safetensors"), {"teacher_id": cache.teacher_id})
    trainer = kclip.Trainer(train_data=str(csv), teacher_cache=str(tmp_path / "cache"),
                            concepts=str(tmp_path / "k.safetensors"), batch_size=8, epochs=1, logs=str(tmp_path / "runs"),
                            name="run", progress=False)
    trainer.fit()
    checkpoint = tmp_path / "runs/run/checkpoints/step_00000003"
    run = subprocess.run([kclip_cli, "eval", "--model", checkpoint, "--concepts", tmp_path / "k.safetensors",
                          "--concept-data", csv, "--csv-img-key", "filepath", "--csv-caption-key", "title",
                          "--quiet"], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    concepts = json.loads(run.stdout)["concepts"]  # the teacher cache came from the run's config
    assert concepts["head"] == "per_modality" and concepts["pairs"] == 24 and concepts["concepts"] == 4
    assert all(0 <= concepts[k] <= 1 for k in ("nmi", "purity")) and -1 <= concepts["distill_cosine"] <= 1
    loss = kclip.evaluate_concepts(trainer.model, trainer.loss, csv, tmp_path / "cache", tmp_path / "k.safetensors",
                                   img_key="filepath", caption_key="title")
    assert loss["nmi"] == pytest.approx(concepts["nmi"]) and loss["distill_cosine"] == pytest.approx(concepts["distill_cosine"], abs=1e-6)
