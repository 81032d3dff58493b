"""Raw image + text samples → two ``vector`` modalities (``image``, ``text``), through the encoders and the cache.

Features are written atomically as ``.npy`` files under a cache directory, keyed by a hash of the inputs (annotation
texts, image files' relative paths, sizes and modification times, the source split) and the encoder's identity and
configuration, so a second load with the same encoders reads the cache instead of encoding again.

A missing image file marks the sample's ``image`` modality absent and an empty text marks ``text`` absent (both
counted in ``notes``); a sample with neither is dropped.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from robult.data.dataset import MultimodalDataset
from robult.data.registry import DatasetBundle, LoadOptions, default_metric, register_dataset, resolve_data_dir
from robult.data.splits import stratified_split
from robult.prepare.cache import CACHE_VERSION, cached, default_cache_dir, digest, files_fingerprint
from robult.prepare.encoders import (
    SmallCNN,
    TextEncoder,
    encode_images,
    image_hw,
    module_identity,
    resolve_text_encoder,
    text_identity,
)
from robult.specs import ModalitySpec, TaskSpec

__all__ = [
    "ENCODING_KEYS",
    "Encoding",
    "RawSample",
    "assemble",
    "build_dataset",
    "encoded_bundle",
    "make_encoding",
    "register_release",
    "release_root",
]


@dataclass(frozen=True)
class RawSample:
    """One sample of a raw release: its id, image file (``None`` if missing), text and label (``None`` if the
    file has none)."""

    id: str
    image: Path | None
    text: str
    label: int | None


@dataclass
class Encoding:
    """The encoders and settings of one load, with the identities that key the cache (see :func:`make_encoding`)."""

    text_encoder: Any
    image_encoder: nn.Module
    image_size: tuple[int, int]
    cache_dir: Path
    batch_size: int
    device: str
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def __post_init__(self) -> None:
        self.text_id = text_identity(self.text_encoder)
        self.image_id = module_identity(self.image_encoder)


def _encode_group(
    dataset: str, group: str, samples: list[RawSample], root: Path, enc: Encoding, notes: dict[str, Any]
) -> tuple[np.ndarray | None, np.ndarray | None, np.ndarray]:
    """Features of one source file's samples: (image rows of present images, text rows of present texts, present)."""
    present = np.array([[s.image is not None, bool(s.text.strip())] for s in samples], dtype=bool).reshape(-1, 2)
    folder = enc.cache_dir / dataset
    images = [s.image for s in samples if s.image is not None]
    texts = [s.text for s in samples if s.text.strip()]
    img_feats = txt_feats = None
    hits = notes.setdefault("cache_hits", [])
    if images:
        key = digest(
            {
                "v": CACHE_VERSION,
                "kind": "image",
                "dataset": dataset,
                "group": group,
                "files": files_fingerprint(images, root),
                "encoder": enc.image_id,
                "size": list(enc.image_size),
                "mean": list(enc.mean),
                "std": list(enc.std),
            }
        )
        img_feats, hit = cached(
            folder / f"{group}-image-{key[:24]}.npy",
            len(images),
            lambda: encode_images(
                images, enc.image_encoder, enc.image_size, enc.batch_size, enc.device, enc.mean, enc.std
            ),
        )
        if hit:
            hits.append(f"{group}/image")
    if texts:
        key = digest(
            {
                "v": CACHE_VERSION,
                "kind": "text",
                "dataset": dataset,
                "group": group,
                "texts": hashlib.sha256("\x00".join(texts).encode("utf-8")).hexdigest(),
                "encoder": enc.text_id,
            }
        )
        txt_feats, hit = cached(
            folder / f"{group}-text-{key[:24]}.npy", len(texts), lambda: enc.text_encoder.encode(list(texts))
        )
        if hit:
            hits.append(f"{group}/text")
    return img_feats, txt_feats, present


def assemble(
    dataset: str,
    groups: dict[str, list[RawSample]],
    root: Path,
    enc: Encoding,
    notes: dict[str, Any],
) -> tuple[dict[str, dict[str, np.ndarray]], list[ModalitySpec]]:
    """Encode every group and lay features out as full ``[N, d]`` arrays (zeros where absent) with masks."""
    encoded = {g: _encode_group(dataset, g, s, root, enc, notes) for g, s in groups.items()}
    dims: dict[str, int] = {}
    for img, txt, _ in encoded.values():
        for mod, arr in (("image", img), ("text", txt)):
            if arr is not None and dims.setdefault(mod, arr.shape[1]) != arr.shape[1]:
                raise ValueError(f"{mod} features of {dataset} have differing widths across files")
    for mod in ("image", "text"):
        if mod not in dims:
            raise ValueError(f"{root}: no sample of {dataset} has its {mod} (all image files missing or texts empty)")
    out: dict[str, dict[str, np.ndarray]] = {}
    for g, (img, txt, present) in encoded.items():
        n = present.shape[0]
        full = {}
        for col, (mod, arr) in enumerate((("image", img), ("text", txt))):
            x = np.zeros((n, dims[mod]), dtype=np.float32)
            if arr is not None:
                x[present[:, col]] = arr
            full[mod] = x
            absent = int((~present[:, col]).sum())
            if absent:
                notes.setdefault("absent", {})[f"{g}/{mod}"] = absent
        keep = present.any(axis=1)
        if not keep.all():
            notes.setdefault("dropped_no_modality", {})[g] = int((~keep).sum())
        labels = np.array([-1 if s.label is None else s.label for s in groups[g]], dtype=np.int64)
        out[g] = {
            "image": full["image"][keep],
            "text": full["text"][keep],
            "present": present[keep],
            "label": labels[keep],
        }
    specs = [ModalitySpec("image", "vector", (dims["image"],)), ModalitySpec("text", "vector", (dims["text"],))]
    return out, specs


def build_dataset(
    specs: list[ModalitySpec], task: TaskSpec, part: dict[str, np.ndarray], idx: Any = None
) -> MultimodalDataset:
    sel = slice(None) if idx is None else idx
    return MultimodalDataset(
        specs,
        task,
        {"image": part["image"][sel], "text": part["text"][sel]},
        part["label"][sel],
        present=part["present"][sel],
    )


def encoded_bundle(
    name: str,
    groups: dict[str, list[RawSample]],
    root: Path,
    enc: Encoding,
    task: TaskSpec,
    *,
    metrics: list[str],
    split: str,
    seed: int,
    val_fraction: float,
) -> DatasetBundle:
    """Encode a release's ``train`` / ``test`` groups (and ``val``, if read from its own file) into a bundle.

    Args:
        name: the dataset's registry name (also the cache sub-folder).
        groups: raw samples by split; without ``"val"``, validation is a stratified ``val_fraction`` of train.
        root: the release folder (image paths are fingerprinted relative to it).
        enc: encoders and settings (:func:`make_encoding`).
        task: the task spec; the primary metric is its default (:func:`robult.data.registry.default_metric`).
        metrics: the metrics listed in ``notes``.
        split: how the splits were made, for ``notes``.
        seed, val_fraction: the stratified validation carve-out when ``groups`` has no ``"val"``.
    """
    notes: dict[str, Any] = {
        "metrics": metrics,
        "text_encoder": enc.text_id,
        "image_encoder": enc.image_id,
        "image_size": list(enc.image_size),
        "split": split,
    }
    parts, specs = assemble(name, groups, root, enc, notes)
    if "val" in parts:
        train, val = build_dataset(specs, task, parts["train"]), build_dataset(specs, task, parts["val"])
    else:
        train_idx, val_idx = stratified_split(parts["train"]["label"], val_fraction, seed)
        train = build_dataset(specs, task, parts["train"], train_idx)
        val = build_dataset(specs, task, parts["train"], val_idx)
    return DatasetBundle(
        name=name,
        modalities=specs,
        task=task,
        primary_metric=default_metric(task),
        train=train,
        val=val,
        test=build_dataset(specs, task, parts["test"]),
        source=str(root),
        notes=notes,
    )


def make_encoding(
    text_encoder: TextEncoder | str | None,
    image_encoder: nn.Module | None,
    image_size: int | Sequence[int],
    cache_dir: str | Path | None,
    batch_size: int,
    device: str,
    image_mean: Sequence[float],
    image_std: Sequence[float],
) -> Encoding:
    if image_encoder is not None and not isinstance(image_encoder, nn.Module):
        raise TypeError(f"image_encoder must be an nn.Module, got {type(image_encoder).__name__}")
    return Encoding(
        text_encoder=resolve_text_encoder(text_encoder),
        image_encoder=image_encoder if image_encoder is not None else SmallCNN(),
        image_size=image_hw(image_size),
        cache_dir=Path(cache_dir) if cache_dir is not None else default_cache_dir(),
        batch_size=int(batch_size),
        device=str(device),
        mean=tuple(float(v) for v in image_mean),
        std=tuple(float(v) for v in image_std),
    )


ENCODING_KEYS = (
    "text_encoder",
    "image_encoder",
    "image_size",
    "cache_dir",
    "batch_size",
    "device",
    "image_mean",
    "image_std",
)


def release_root(opts: LoadOptions, folder: str) -> Path:
    return Path(opts.extra["path"]) if opts.extra.get("path") else resolve_data_dir(opts.data_dir) / folder


def register_release(
    name: str, description: str, load: Callable[..., DatasetBundle], options: tuple[str, ...] = ()
) -> None:
    """Register ``load(root, *, seed, val_fraction, **kw)`` as the ``paper`` dataset ``name``, read from the folder
    ``name`` under the data directory (or the ``path`` option); ``kw`` are the :data:`ENCODING_KEYS` and ``options``
    given among the load options."""

    def loader(opts: LoadOptions) -> DatasetBundle:
        kw = {k: opts.extra[k] for k in (*ENCODING_KEYS, *options) if k in opts.extra}
        return load(release_root(opts, name), seed=opts.seed, val_fraction=opts.val_fraction, **kw)

    register_dataset(name, description, folder=name, group="paper")(loader)
