"""MM-IMDb (Arevalo et al. 2017) from its public HDF5 release.

**MM-IMDb** (:func:`load_mmimdb`) reads Arevalo et al.'s ``multimodal_imdb.hdf5`` (``johnarevalo/gmu-mmimdb``),
the file MultiBench's ``datasets/imdb/get_data.py`` also reads: ``features`` ``(N, 300)`` float32 (mean word2vec
of the plot: the *text*), ``vgg_features`` ``(N, 4096)`` float32 (VGG-16 poster features: the *image*), ``genres``
``(N, 23)`` int32 multi-hot (``genres.attrs['target_names']``: JSON list of genre names), plus ``images``,
``sequences``, ``three_grams``, ``word_grams`` and ``imdb_ids`` (not read). The split comes from the Fuel split
array in the root attribute ``split`` (fields ``split``, ``source``, ``start``, ``stop``, ``available``; splits
``train`` / ``dev`` / ``test``); without it the fixed MultiBench ranges train ``[0, 15552)``, val
``[15552, 18160)``, test ``[18160, 25959)`` are used (the file must then hold 25,959 rows). Multilabel task with
23 genres; primary metric ``macro_f1`` (``micro_f1`` reported too). Needs ``h5py``: ``pip install 'robult[hdf5]'``.

Registered as ``mmimdb`` (folder ``mmimdb``: ``multimodal_imdb.hdf5``; ``path=FILE`` an explicit file;
``split="multibench"`` forces the fixed ranges; ``sha256=HEX`` verifies the file first).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from robult.data.dataset import MultimodalDataset
from robult.data.paper.common import check_file, clean_nonfinite, find_file
from robult.data.registry import DatasetBundle, LoadOptions, default_metric, register_dataset
from robult.specs import ModalitySpec, TaskSpec

__all__ = ["MMIMDB_FILE", "MMIMDB_MULTIBENCH_SPLIT", "load_mmimdb"]

MMIMDB_FILE = "multimodal_imdb.hdf5"
MMIMDB_MULTIBENCH_SPLIT = {"train": (0, 15552), "val": (15552, 18160), "test": (18160, 25959)}


def _import_h5py() -> Any:
    try:
        import h5py
    except ImportError as err:
        raise ImportError("reading MM-IMDb's HDF5 file needs h5py: pip install 'robult[hdf5]'") from err
    return h5py


def _text(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _fuel_split(attr: Any, source: str) -> dict[str, tuple[int, int]]:
    """Split ranges from a Fuel ``split`` attribute (a structured array of split/source/start/stop/available)."""
    arr = np.asarray(attr)
    fields = arr.dtype.names or ()
    missing = [f for f in ("split", "source", "start", "stop") if f not in fields]
    if missing:
        raise ValueError(
            f"{source}: root attribute 'split' has fields {list(fields)}, expected a Fuel split array with {missing}"
        )
    per_split: dict[str, dict[str, tuple[int, int]]] = {}
    for row in arr.reshape(-1):
        if "available" in fields and not bool(row["available"]):
            continue
        split = _text(row["split"])
        split = {"dev": "val", "valid": "val", "validation": "val"}.get(split, split)
        per_split.setdefault(split, {})[_text(row["source"])] = (int(row["start"]), int(row["stop"]))
    # every source of a split shares one range in the public file; prefer the labels' range
    return {s: src.get("genres", next(iter(src.values()))) for s, src in per_split.items()}


def load_mmimdb(
    path: str | Path,
    *,
    text_key: str = "features",
    image_key: str = "vgg_features",
    split: str = "auto",
    sha256: str | None = None,
) -> DatasetBundle:
    """Load MM-IMDb from ``multimodal_imdb.hdf5`` (see the module docstring).

    Args:
        path: the HDF5 file.
        text_key: dataset holding the text vectors (``features``: 300-d mean word2vec).
        image_key: dataset holding the image vectors (``vgg_features``: 4096-d VGG-16).
        split: ``"auto"`` (the file's Fuel split attribute, else the MultiBench ranges), ``"file"`` or
            ``"multibench"`` (fixed ranges 0:15552 / 15552:18160 / 18160:25959).
        sha256: verify the file's SHA-256 first.
    """
    h5py = _import_h5py()
    path = Path(path)
    source = str(path)
    if split not in ("auto", "file", "multibench"):
        raise ValueError(f"split must be 'auto', 'file' or 'multibench', got {split!r}")
    check_file(path, sha256)
    notes: dict[str, Any] = {"metrics": ["macro_f1", "micro_f1"], "text": text_key, "image": image_key}
    try:
        fh = h5py.File(path, "r")
    except OSError as err:
        raise ValueError(f"{source}: not a readable HDF5 file ({err})") from err
    with fh as f:
        for key in (text_key, image_key, "genres"):
            if key not in f:
                raise ValueError(f"{source}: no dataset {key!r}; the file holds {sorted(f.keys())}")
        arrays = {}
        for mod, key in (("text", text_key), ("image", image_key)):
            x = f[key]
            if x.ndim != 2:
                raise ValueError(f"{source}: dataset {key!r} has shape {x.shape}, expected (N, d)")
            arrays[mod] = np.asarray(x[...], dtype=np.float32)
        g = f["genres"]
        if g.ndim != 2 or g.shape[1] < 2:
            raise ValueError(f"{source}: dataset 'genres' has shape {g.shape}, expected (N, number of genres)")
        genres = np.asarray(g[...])
        names_attr = g.attrs.get("target_names")
        label_names: tuple[str, ...] = ()
        if names_attr is not None:
            try:
                label_names = tuple(json.loads(_text(names_attr)))
            except (ValueError, TypeError):
                label_names = tuple(_text(v) for v in np.asarray(names_attr).reshape(-1))
            if len(label_names) != genres.shape[1]:
                label_names = ()
        fuel = f.attrs.get("split")
    n = genres.shape[0]
    for mod, x in arrays.items():
        if x.shape[0] != n:
            raise ValueError(f"{source}: dataset {notes[mod]!r} has {x.shape[0]} rows, 'genres' has {n}")
        bad = clean_nonfinite(x)
        if bad:
            notes.setdefault("nonfinite_replaced", {})[mod] = bad
    if not np.isin(genres, (0, 1)).all():
        raise ValueError(f"{source}: dataset 'genres' holds values other than 0 and 1")

    if split == "multibench" or (split == "auto" and fuel is None):
        if n != MMIMDB_MULTIBENCH_SPLIT["test"][1]:
            raise ValueError(
                f"{source}: {n} rows and no Fuel 'split' attribute; the fixed MultiBench split needs "
                f"{MMIMDB_MULTIBENCH_SPLIT['test'][1]} rows"
            )
        ranges = dict(MMIMDB_MULTIBENCH_SPLIT)
        notes["split"] = "MultiBench fixed ranges"
    else:
        if fuel is None:
            raise ValueError(f"{source}: split='file' but the file has no root attribute 'split'")
        ranges = _fuel_split(fuel, source)
        notes["split"] = "the file's Fuel split attribute"
    for s in ("train", "val", "test"):
        if s not in ranges:
            raise ValueError(f"{source}: the split defines {sorted(ranges)}, missing {s!r}")
        lo, hi = ranges[s]
        if not 0 <= lo < hi <= n:
            raise ValueError(f"{source}: split {s!r} range [{lo}, {hi}) does not fit the {n} rows")
    notes["split_ranges"] = {s: list(ranges[s]) for s in ("train", "val", "test")}

    specs = [
        ModalitySpec("text", "vector", (arrays["text"].shape[1],)),
        ModalitySpec("image", "vector", (arrays["image"].shape[1],)),
    ]
    task = TaskSpec("multilabel", num_classes=genres.shape[1], label_names=label_names)
    target = genres.astype(np.float32)

    def make(s: str) -> MultimodalDataset:
        lo, hi = ranges[s]
        return MultimodalDataset(specs, task, {k: v[lo:hi] for k, v in arrays.items()}, target[lo:hi])

    return DatasetBundle(
        name="mmimdb",
        modalities=specs,
        task=task,
        primary_metric=default_metric(task),
        train=make("train"),
        val=make("val"),
        test=make("test"),
        source=source,
        notes=notes,
    )


@register_dataset("mmimdb", "MM-IMDb movie genres, 23 labels (multimodal_imdb.hdf5)", folder="mmimdb", group="paper")
def _mmimdb(opts: LoadOptions) -> DatasetBundle:
    path = find_file(opts, "mmimdb", (MMIMDB_FILE,))
    return load_mmimdb(
        path,
        text_key=opts.extra.get("text_key", "features"),
        image_key=opts.extra.get("image_key", "vgg_features"),
        split=opts.extra.get("split", "auto"),
        sha256=opts.extra.get("sha256"),
    )
