"""Hateful Memes (Kiela et al. 2020): the released memes → encoded ``image`` and ``text`` features.

Layout: ``img/<id>.png`` plus JSON-lines files with keys ``id``, ``img`` (relative path, ``img/42953.png``), ``text``
and ``label`` (0/1): ``train.jsonl``, ``dev_seen.jsonl``, ``test_seen.jsonl`` (phase 2 release; phase 1 has
``dev.jsonl`` / ``test.jsonl``, whose test labels are withheld, as are ``test_unseen``'s in some copies). By default
the test split is ``dev_seen.jsonl`` (or ``dev.jsonl``), the customary labelled evaluation set, and validation is a
seeded, stratified ``val_fraction`` of train; ``test_file=`` / ``val_file=`` choose other files (a file without labels
is refused). Binary; primary metric ``auroc``.

:func:`load_hateful_memes` returns the bundle (registered as ``hateful_memes``); :func:`prepare_hateful_memes` writes
it in the user format (:mod:`robult.data.user`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from torch import nn

from robult.data.registry import DatasetBundle
from robult.data.user import write_bundle
from robult.prepare.encoders import IMAGENET_MEAN, IMAGENET_STD, TextEncoder
from robult.prepare.features import RawSample, encoded_bundle, make_encoding, register_release
from robult.specs import TaskSpec

__all__ = ["load_hateful_memes", "prepare_hateful_memes", "read_hateful_memes"]


def read_hateful_memes(root: str | Path, file: str, require_labels: bool = True) -> list[RawSample]:
    """Read one Hateful Memes JSON-lines file (keys ``id``, ``img``, ``text``, ``label``) under ``root``."""
    root = Path(root)
    path = root / file
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    samples: list[RawSample] = []
    unlabeled = 0
    with open(path, encoding="utf-8") as fh:
        for line_no, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}: line {line_no} is not JSON ({err})") from err
            if not isinstance(obj, dict):
                raise ValueError(f"{path}: line {line_no} is a {type(obj).__name__}, expected an object")
            for key in ("id", "img", "text"):
                if key not in obj:
                    raise ValueError(f"{path}: line {line_no} has no key {key!r}; keys: {sorted(obj)}")
            label = obj.get("label")
            if label is None:
                unlabeled += 1
            elif label not in (0, 1):
                raise ValueError(f"{path}: line {line_no}: label {label!r} is not 0 or 1")
            img = root / str(obj["img"])
            samples.append(
                RawSample(
                    str(obj["id"]),
                    img if img.is_file() else None,
                    str(obj["text"] or ""),
                    None if label is None else int(label),
                )
            )
    if not samples:
        raise ValueError(f"{path} lists no samples")
    if require_labels and unlabeled:
        raise ValueError(
            f"{path}: {unlabeled} of {len(samples)} samples have no 'label' (withheld test labels?); use a labelled "
            "file such as dev_seen.jsonl for evaluation"
        )
    return samples


# ----------------------------------------------------------------------------------------------------------------


def load_hateful_memes(
    root: str | Path,
    *,
    train_file: str = "train.jsonl",
    test_file: str | None = None,
    val_file: str | None = None,
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
    """Load Hateful Memes from its released layout (see the module docstring for files and defaults).

    Args:
        root: the dataset folder (holding ``img/`` and the ``.jsonl`` files).
        train_file: training annotations.
        test_file: test annotations; default ``dev_seen.jsonl`` (else ``dev.jsonl``).
        val_file: validation annotations; default a stratified ``val_fraction`` of train.
        Other arguments as in :func:`load_food101`.
    """
    root = Path(root)
    if test_file is None:
        test_file = next((f for f in ("dev_seen.jsonl", "dev.jsonl") if (root / f).is_file()), "dev_seen.jsonl")
    enc = make_encoding(text_encoder, image_encoder, image_size, cache_dir, batch_size, device, image_mean, image_std)
    groups = {"train": read_hateful_memes(root, train_file), "test": read_hateful_memes(root, test_file)}
    if val_file is not None:
        groups["val"] = read_hateful_memes(root, val_file)
    split_note = f"train: {train_file}; test: {test_file}; val: " + (
        val_file if val_file else f"stratified {val_fraction:g} of train (seed {seed})"
    )
    return encoded_bundle(
        "hateful_memes",
        groups,
        root,
        enc,
        TaskSpec("binary"),
        metrics=["auroc", "accuracy"],
        split=split_note,
        seed=seed,
        val_fraction=val_fraction,
    )


def prepare_hateful_memes(root: str | Path, directory: str | Path, **kwargs: Any) -> Path:
    """:func:`load_hateful_memes` (``kwargs`` as there) written in the user format under ``directory``
    (:func:`robult.data.user.write_bundle`); returns the path of its ``dataset.yaml``."""
    return write_bundle(load_hateful_memes(root, **kwargs), directory)


register_release(
    "hateful_memes",
    "Hateful Memes: binary hatefulness from meme image + text (encoded features, cached)",
    load_hateful_memes,
    ("train_file", "test_file", "val_file"),
)
