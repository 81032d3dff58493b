"""CMU-MOSI / CMU-MOSEI in their public pickle releases (MMSA or MultiBench layout).

**CMU-MOSI / CMU-MOSEI** (:func:`load_mosi`, :func:`load_mosei`) read one pickle holding
``{'train', 'valid', 'test'}``, each a dict of numpy arrays, in either public layout:

- *MMSA* (``thuiar/MMSA``, files ``aligned_50.pkl`` / ``unaligned_50.pkl``): ``text`` ``(N, T, 768)`` BERT
  features and/or ``text_bert`` ``(N, 3, T)`` (token ids, attention mask, segment ids), ``audio`` ``(N, Ta, 5|74)``,
  ``vision`` ``(N, Tv, 20|35)``, ``raw_text`` and ``id`` (object arrays of ``str``), ``regression_labels`` ``(N,)``
  in [-3, 3], ``classification_labels``; unaligned files add ``audio_lengths`` and ``vision_lengths``.
- *MultiBench* (``pliang279/MultiBench``, files ``mosi_data.pkl`` / ``mosei_senti_data.pkl`` (word-aligned, from
  MulT) or ``mosi_raw.pkl`` / ``mosei_raw.pkl``): ``text``, ``audio``, ``vision`` ``(N, T, d)``, ``labels``
  ``(N, 1, 1)`` and ``id``.

The format is detected from the label key (``regression_labels`` → MMSA, ``labels`` → MultiBench). The three
modalities become ``sequence`` inputs with per-sample lengths, right-padded (valid rows first, as every robult
sequence encoder expects):

- given lengths (``audio_lengths`` / ``vision_lengths``) are used as they are (clipped to ``[1, T]``);
- MMSA text lengths come from the BERT attention mask (``text_bert[:, 1]``); in aligned MMSA files (no length
  arrays, audio/vision as long as the text) audio and vision take the text lengths too, as MMSA's aligned models do
  (*assumption*: aligned MMSA audio/vision rows follow the BERT tokens and are right-padded);
- otherwise lengths are inferred from zero padding: the valid span runs from the first to the last row that is not
  all zero (one shared span for the three modalities when they are word-aligned, i.e. share ``T`` and no lengths are
  given). MultiBench data is **left**-zero-padded ("padding with zeros at the front"); such samples are shifted so
  that their valid rows come first. All-zero sequences get length 1 and are counted in ``notes``.

NaN / ±Inf in features (MOSEI holds some, and ``audio`` has ``-inf``) are replaced with 0 and counted in ``notes``.
The task is regression on the sentiment score in [-3, 3]; the primary metric is ``mae`` (lower is better), and
``corr``, ``acc2``, ``acc7`` and ``f1`` are the customary companions. Splits are the file's ``train`` / ``valid`` /
``test`` (``LoadOptions.val_fraction`` is not used). If ``text`` is absent and only ``text_bert`` is present, text
becomes a ``tokens`` modality (BERT token ids).

Registered as ``mosi`` (folder ``mosi``: the first of ``aligned_50.pkl``, ``unaligned_50.pkl``, ``mosi_data.pkl``,
``mosi_raw.pkl``) and ``mosei`` (folder ``mosei``: ``aligned_50.pkl``, ``unaligned_50.pkl``,
``mosei_senti_data.pkl``, ``mosei_raw.pkl``); ``file=NAME`` picks another name in the folder, ``path=FILE`` an
explicit file, ``fmt=`` forces ``mmsa`` / ``multibench``. Pickles are read with
:func:`robult.data.safe_pickle.safe_load` (numpy arrays and containers only); pass ``sha256=HEX`` to verify a file
first.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from robult.data.dataset import MultimodalDataset
from robult.data.paper.common import CHUNK, check_file, clean_nonfinite, find_file
from robult.data.registry import DatasetBundle, LoadOptions, default_metric, register_dataset
from robult.data.safe_pickle import safe_load
from robult.specs import ModalitySpec, TaskSpec

__all__ = [
    "AFFECT_MODALITIES",
    "AFFECT_SPLITS",
    "MOSEI_FILES",
    "MOSI_FILES",
    "detect_affect_format",
    "load_mosei",
    "load_mosi",
]

AFFECT_SPLITS = ("train", "valid", "test")
AFFECT_MODALITIES = ("text", "audio", "vision")
MOSI_FILES = ("aligned_50.pkl", "unaligned_50.pkl", "mosi_data.pkl", "mosi_raw.pkl")
MOSEI_FILES = ("aligned_50.pkl", "unaligned_50.pkl", "mosei_senti_data.pkl", "mosei_raw.pkl")


def detect_affect_format(data: Mapping[str, Any], source: str = "<data>") -> str:
    """``"mmsa"`` or ``"multibench"`` from the label key of the ``train`` split; ``ValueError`` if neither."""
    split = data.get("train")
    if not isinstance(split, Mapping):
        raise ValueError(f"{source}: split 'train' is missing or not a dict")
    if "regression_labels" in split:
        return "mmsa"
    if "labels" in split:
        return "multibench"
    raise ValueError(
        f"{source}: split 'train' has neither 'regression_labels' (MMSA) nor 'labels' (MultiBench); "
        f"keys: {sorted(map(str, split))}"
    )


def _float_array(value: Any, where: str, ndim: int) -> np.ndarray:
    arr = np.asarray(value)
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise ValueError(f"{where} holds {arr.dtype} values, expected a numeric array")
    if arr.ndim != ndim:
        raise ValueError(f"{where} has shape {arr.shape}, expected {ndim} dimensions")
    out = np.asarray(arr, dtype=np.float32)
    return out if out.flags.writeable else out.copy()


def _nonzero_rows(x: np.ndarray) -> np.ndarray:
    """``[N, T]`` bool: which rows of each sequence are not all zero."""
    out = np.empty(x.shape[:2], dtype=bool)
    for lo in range(0, x.shape[0], CHUNK):
        out[lo : lo + CHUNK] = (x[lo : lo + CHUNK] != 0).any(axis=2)
    return out


def _span(nz: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """First valid row, length (>= 1) and an all-zero flag per sample from a ``[N, T]`` non-zero-row mask."""
    t = nz.shape[1]
    has = nz.any(axis=1)
    first = np.where(has, nz.argmax(axis=1), 0)
    last = np.where(has, t - 1 - nz[:, ::-1].argmax(axis=1), 0)
    return first.astype(np.int64), (last - first + 1).astype(np.int64), ~has


def _left_align(x: np.ndarray, first: np.ndarray) -> int:
    """Shift samples whose valid rows start at ``first > 0`` to the front (zeros behind); return how many moved."""
    t = x.shape[1]
    rows = np.flatnonzero(first > 0)
    for i in rows:
        s = int(first[i])
        x[i, : t - s] = x[i, s:]
        x[i, t - s :] = 0
    return len(rows)


def _label_vector(value: Any, where: str) -> np.ndarray:
    arr = np.asarray(value)
    if arr.dtype == object or not np.issubdtype(arr.dtype, np.number):
        raise ValueError(f"{where} holds {arr.dtype} values, expected numbers")
    if arr.ndim == 0 or arr.size != arr.shape[0]:
        raise ValueError(f"{where} has shape {arr.shape}, expected (N,), (N, 1) or (N, 1, 1)")
    y = arr.reshape(-1).astype(np.float32)
    if not np.isfinite(y).all():
        raise ValueError(f"{where} holds NaN or Inf")
    if y.size and (y.min() < -3 - 1e-4 or y.max() > 3 + 1e-4):
        bad = float(y.min() if y.min() < -3 else y.max())
        raise ValueError(f"{where} holds {bad:g}, outside the sentiment range [-3, 3]")
    return np.clip(y, -3.0, 3.0)


def _parse_affect_split(
    split: Mapping[str, Any], name: str, fmt: str, text_field: str, source: str, notes: dict[str, Any]
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], np.ndarray, str]:
    """One split → (inputs, lengths, target, text kind)."""
    where = f"{source}: split {name!r}"
    label_key = "regression_labels" if fmt == "mmsa" else "labels"
    if text_field == "auto":
        text_field = "text" if ("text" in split or fmt == "multibench") else "text_bert"
    required = [text_field, "audio", "vision", label_key]
    for key in required:
        if key not in split:
            raise ValueError(f"{where} has no key {key!r} ({fmt} format); keys: {sorted(map(str, split))}")
    target = _label_vector(split[label_key], f"{where} key {label_key!r}")
    n = target.shape[0]

    inputs: dict[str, np.ndarray] = {}
    lengths: dict[str, np.ndarray] = {}
    text_kind = "sequence"
    mask_len: np.ndarray | None = None
    if fmt == "mmsa" and "text_bert" in split:
        tb = _float_array(split["text_bert"], f"{where} key 'text_bert'", 3)
        if tb.shape[0] != n or tb.shape[1] < 2:
            raise ValueError(f"{where} key 'text_bert' has shape {tb.shape}, expected ({n}, 3, T)")
        mask = tb[:, 1, :]
        if not np.isin(mask, (0.0, 1.0)).all():
            raise ValueError(f"{where} key 'text_bert': row 1 (the attention mask) holds values other than 0 and 1")
        mask_len = np.clip(mask.sum(axis=1).astype(np.int64), 1, None)
        if text_field == "text_bert":
            ids = np.rint(tb[:, 0, :]).astype(np.int64)
            inputs["text"] = ids
            lengths["text"] = mask_len
            text_kind = "tokens"
            notes.setdefault("text_vocab_size", 0)
            notes["text_vocab_size"] = max(notes["text_vocab_size"], int(ids.max(initial=0)) + 1)
    for key in ("text", "audio", "vision"):
        if key == "text" and text_kind == "tokens":
            continue
        x = _float_array(split[key], f"{where} key {key!r}", 3)
        if x.shape[0] != n:
            raise ValueError(f"{where}: key {key!r} has {x.shape[0]} rows (shape {x.shape}), key {label_key!r} has {n}")
        bad = clean_nonfinite(x)
        if bad:
            notes.setdefault("nonfinite_replaced", {})[f"{name}/{key}"] = bad
        inputs[key] = x
    for key in ("id", "raw_text"):
        if key in split and len(split[key]) != n:
            raise ValueError(f"{where}: key {key!r} has {len(split[key])} rows, key {label_key!r} has {n}")

    # lengths
    given: dict[str, np.ndarray] = {}
    for key in ("audio", "vision"):
        lk = f"{key}_lengths"
        if lk in split:
            ln = np.asarray(split[lk]).reshape(-1)
            if ln.shape[0] != n or not np.issubdtype(ln.dtype, np.number):
                raise ValueError(f"{where} key {lk!r} has shape {np.asarray(split[lk]).shape}, expected ({n},)")
            t = inputs[key].shape[1]
            zero = int((ln < 1).sum())
            if zero:
                notes.setdefault("zero_lengths", {})[f"{name}/{key}"] = zero
            given[key] = np.clip(ln.astype(np.int64), 1, t)
    lengths.update(given)
    t_text = inputs["text"].shape[1]
    aligned = not given and all(inputs[k].shape[1] == t_text for k in AFFECT_MODALITIES)
    if mask_len is not None:
        lengths.setdefault("text", np.minimum(mask_len, t_text))
        if aligned:
            for key in ("audio", "vision"):
                lengths[key] = np.minimum(mask_len, inputs[key].shape[1])
    todo = [k for k in AFFECT_MODALITIES if k not in lengths]
    if todo:
        groups = [todo] if aligned else [[k] for k in todo]
        for group in groups:
            nz = np.zeros((n, inputs[group[0]].shape[1]), dtype=bool)
            for key in group:
                nz |= _nonzero_rows(inputs[key])
            first, ln, empty = _span(nz)
            for key in group:
                moved = _left_align(inputs[key], first)
                if moved:
                    notes.setdefault("left_padded_shifted", {})[f"{name}/{key}"] = moved
                lengths[key] = ln
                if empty.any():
                    notes.setdefault("all_zero_sequences", {})[f"{name}/{key}"] = int(empty.sum())
    return inputs, lengths, target, text_kind


def load_mosi(
    path: str | Path,
    fmt: str = "auto",
    *,
    name: str = "mosi",
    text_field: str = "auto",
    sha256: str | None = None,
) -> DatasetBundle:
    """Load CMU-MOSI (or MOSEI: same layout) from an MMSA or MultiBench pickle (see the module docstring).

    Args:
        path: the pickle.
        fmt: ``"auto"``, ``"mmsa"`` or ``"multibench"``.
        name: the bundle's name.
        text_field: MMSA only: ``"auto"`` (``text`` features if present, else ``text_bert`` token ids), ``"text"``
            or ``"text_bert"``.
        sha256: verify the file's SHA-256 first.
    """
    path = Path(path)
    if fmt not in ("auto", "mmsa", "multibench"):
        raise ValueError(f"fmt must be 'auto', 'mmsa' or 'multibench', got {fmt!r}")
    if text_field not in ("auto", "text", "text_bert"):
        raise ValueError(f"text_field must be 'auto', 'text' or 'text_bert', got {text_field!r}")
    check_file(path, sha256)
    data = safe_load(path)
    source = str(path)
    if not isinstance(data, Mapping):
        raise ValueError(f"{source}: expected a dict with keys {list(AFFECT_SPLITS)}, got {type(data).__name__}")
    for split in AFFECT_SPLITS:
        if split not in data:
            raise ValueError(f"{source}: missing split key {split!r}; keys: {sorted(map(str, data))}")
        if not isinstance(data[split], Mapping):
            raise ValueError(f"{source}: split {split!r} is a {type(data[split]).__name__}, expected a dict")
    if fmt == "auto":
        fmt = detect_affect_format(data, source)
    if fmt == "multibench" and text_field == "text_bert":
        raise ValueError("text_field='text_bert' needs an MMSA file")

    notes: dict[str, Any] = {
        "format": fmt,
        "metrics": ["mae", "corr", "acc2", "acc7", "f1"],
        "split": "fixed train/valid/test from the file",
    }
    parsed = {s: _parse_affect_split(data[s], s, fmt, text_field, source, notes) for s in AFFECT_SPLITS}
    del data

    text_kind = parsed["train"][3]
    specs: list[ModalitySpec] = []
    for key in AFFECT_MODALITIES:
        shapes = {s: parsed[s][0][key].shape[1:] for s in AFFECT_SPLITS}
        if text_kind == "tokens" and key == "text":
            ts = {sh[0] for sh in shapes.values()}
            specs.append(ModalitySpec("text", "tokens", (ts.pop() if len(ts) == 1 else None,)))
            continue
        dims = {sh[1] for sh in shapes.values()}
        if len(dims) != 1:
            raise ValueError(f"{source}: key {key!r} has feature sizes {shapes} that differ between splits")
        ts = {sh[0] for sh in shapes.values()}
        specs.append(ModalitySpec(key, "sequence", (ts.pop() if len(ts) == 1 else None, dims.pop())))
    if any(parsed[s][3] != text_kind for s in AFFECT_SPLITS):
        raise ValueError(f"{source}: splits disagree on the text field (features vs token ids)")
    task = TaskSpec("regression", target_range=(-3.0, 3.0))

    def make(s: str) -> MultimodalDataset:
        inputs, lengths, target, _ = parsed[s]
        return MultimodalDataset(specs, task, inputs, target, lengths=lengths)

    return DatasetBundle(
        name=name,
        modalities=specs,
        task=task,
        primary_metric=default_metric(task),
        train=make("train"),
        val=make("valid"),
        test=make("test"),
        source=source,
        notes=notes,
    )


def load_mosei(
    path: str | Path, fmt: str = "auto", *, text_field: str = "auto", sha256: str | None = None
) -> DatasetBundle:
    """Load CMU-MOSEI from an MMSA or MultiBench pickle (same layout as :func:`load_mosi`)."""
    return load_mosi(path, fmt, name="mosei", text_field=text_field, sha256=sha256)


def _register(name: str, title: str, files: tuple[str, ...]) -> None:
    """Register ``name`` as :func:`load_mosi` of the first of ``files`` in the folder ``name`` (see the module
    docstring for the options)."""

    def loader(opts: LoadOptions) -> DatasetBundle:
        return load_mosi(
            find_file(opts, name, files),
            opts.extra.get("fmt", "auto"),
            name=name,
            text_field=opts.extra.get("text_field", "auto"),
            sha256=opts.extra.get("sha256"),
        )

    register_dataset(name, f"{title} sentiment regression (MMSA or MultiBench pickle)", folder=name, group="paper")(
        loader
    )


_register("mosi", "CMU-MOSI", MOSI_FILES)
_register("mosei", "CMU-MOSEI", MOSEI_FILES)
