"""UPMC Food-101 (Wang et al. 2015): the released images and titles → encoded ``image`` and ``text`` features.

Layout under the dataset folder::

    images/train/<class>/<image>.jpg     images/test/<class>/<image>.jpg
    texts/train_titles.csv               texts/test_titles.csv

The CSVs have no header and three columns: image file name (e.g. ``apple_pie_0.jpg``), text (the recipe page
title) and class name; a first row whose first field is not an image file name is taken as a header and skipped.
Classes are the folder names under ``images/train`` (101 in the release), sorted; labels are their indices. The
released split is train / test; validation is a seeded, stratified ``val_fraction`` of train (MMBT holds out 5,000
train samples instead). Multiclass; primary metric ``accuracy``.

:func:`load_food101` returns the bundle (registered as ``food101``); :func:`prepare_food101` writes it in the user
format (:mod:`robult.data.user`).
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from torch import nn

from robult.data.registry import DatasetBundle
from robult.data.user import write_bundle
from robult.prepare.encoders import IMAGENET_MEAN, IMAGENET_STD, TextEncoder
from robult.prepare.features import RawSample, encoded_bundle, make_encoding, register_release
from robult.specs import TaskSpec

__all__ = ["load_food101", "prepare_food101", "read_food101"]

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")


def read_food101(root: str | Path) -> tuple[dict[str, list[RawSample]], list[str]]:
    """Read UPMC Food-101's ``images/`` and ``texts/`` → ``({"train": [...], "test": [...]}, class names)``."""
    root = Path(root)
    class_dir = root / "images" / "train"
    if not class_dir.is_dir():
        raise FileNotFoundError(f"{class_dir} does not exist (expected images/{{train,test}}/<class>/<image>.jpg)")
    classes = sorted(d.name for d in class_dir.iterdir() if d.is_dir())
    if len(classes) < 2:
        raise ValueError(f"{class_dir}: found {len(classes)} class folders, expected one per class (101)")
    index = {c: i for i, c in enumerate(classes)}
    out: dict[str, list[RawSample]] = {}
    for split in ("train", "test"):
        csv_path = root / "texts" / f"{split}_titles.csv"
        if not csv_path.is_file():
            raise FileNotFoundError(f"{csv_path} does not exist (expected texts/{{train,test}}_titles.csv)")
        samples: list[RawSample] = []
        with open(csv_path, encoding="utf-8", errors="replace", newline="") as fh:
            for line_no, row in enumerate(csv.reader(fh), 1):
                if not row or all(not f.strip() for f in row):
                    continue
                if len(row) < 3:
                    raise ValueError(
                        f"{csv_path}: line {line_no} has {len(row)} fields, expected 3 (image name, text, label)"
                    )
                name, label = row[0].strip(), row[-1].strip()
                text = ",".join(row[1:-1]).strip()  # an unquoted comma inside the text splits it: join back
                if line_no == 1 and not name.lower().endswith(IMAGE_EXTS):
                    continue  # a header row
                if label not in index:
                    raise ValueError(f"{csv_path}: line {line_no}: label {label!r} is not a folder under {class_dir}")
                img = root / "images" / split / label / name
                samples.append(RawSample(f"{label}/{name}", img if img.is_file() else None, text, index[label]))
        if not samples:
            raise ValueError(f"{csv_path} lists no samples")
        out[split] = samples
    return out, classes


def load_food101(
    root: str | Path,
    *,
    text_encoder: TextEncoder | str | None = "minilm",
    image_encoder: nn.Module | None = None,
    image_size: int | Sequence[int] = 224,
    cache_dir: str | Path | None = None,
    seed: int = 0,
    val_fraction: float = 0.1,
    batch_size: int = 64,
    device: str = "cpu",
    image_mean: Sequence[float] = IMAGENET_MEAN,
    image_std: Sequence[float] = IMAGENET_STD,
) -> DatasetBundle:
    """Load UPMC Food-101 from its released layout, encoding (or reading cached) image and text features.

    Args:
        root: the dataset folder (holding ``images/`` and ``texts/``).
        text_encoder: a :class:`TextEncoder`, ``"minilm"`` (default) or ``"hashing"``.
        image_encoder: an ``nn.Module`` ``(B, 3, H, W) → (B, d)``; default a seeded random :class:`SmallCNN`.
        image_size: resize target, ``int`` or ``(H, W)``.
        cache_dir: feature cache (default ``$ROBULT_CACHE_DIR`` or ``~/.cache/robult/features``).
        seed, val_fraction: the stratified validation carve-out of the train split.
        batch_size, device: for the image encoder.
        image_mean, image_std: per-channel normalisation after scaling pixels to [0, 1].
    """
    root = Path(root)
    enc = make_encoding(text_encoder, image_encoder, image_size, cache_dir, batch_size, device, image_mean, image_std)
    groups, classes = read_food101(root)
    return encoded_bundle(
        "food101",
        groups,
        root,
        enc,
        TaskSpec("multiclass", num_classes=len(classes), label_names=tuple(classes)),
        metrics=["accuracy", "macro_f1"],
        split=f"released train/test; val: stratified {val_fraction:g} of train (seed {seed})",
        seed=seed,
        val_fraction=val_fraction,
    )


def prepare_food101(root: str | Path, directory: str | Path, **kwargs: Any) -> Path:
    """:func:`load_food101` (``kwargs`` as there) written in the user format under ``directory``
    (:func:`robult.data.user.write_bundle`); returns the path of its ``dataset.yaml``."""
    return write_bundle(load_food101(root, **kwargs), directory)


register_release(
    "food101",
    "UPMC Food-101: 101 dishes from photo + page title (encoded features, cached)",
    load_food101,
)
