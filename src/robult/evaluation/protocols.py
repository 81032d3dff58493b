"""Test-time missing-modality protocols, with masks as named, seeded, saved artefacts.

- **all-subsets**: every non-empty subset of the modalities, applied to the whole test set (``2^M - 1`` settings).
- **random-rate**: each (sample, modality) entry is dropped independently with probability ``η``; a sample left
  with no modality gets one back, chosen uniformly at random. Masks are generated once per
  (dataset, split, rate, seed), saved as ``.npy`` with a SHA-256 in a manifest, and read back by every later
  evaluation, so that every method is scored on the very same masks. See ``docs/protocols.md``.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from robult.specs import all_subsets, subset_key
from robult.utils.io import atomic_open, atomic_write_json, sha256_file
from robult.utils.paths import path_component_problem

PROTOCOLS = ("all-subsets", "random-rate")
RATES: tuple[float, ...] = tuple(round(0.1 * i, 1) for i in range(10))
MANIFEST = "manifest.json"
RANDOM_RATE = "random-rate"


def rate_key(rate: float) -> str:
    """The canonical text of a missing rate (``0.3`` -> ``"0.3"``), used in result keys and file names."""
    return repr(round(float(rate), 6))


def _check_rate(rate: float) -> float:
    rate = float(rate)
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"missing rate must lie in [0, 1), got {rate}")
    return rate


def random_rate_mask(n: int, m: int, rate: float, seed: int) -> Tensor:
    """A per-sample random presence mask.

    Each entry is dropped independently with probability ``rate``; a sample left with no modality gets one back,
    chosen uniformly at random with the same generator. The expected fraction of dropped entries is therefore
    ``rate - rate^m / m``. The generator is numpy's ``default_rng`` seeded with ``(seed, round(rate * 1000))``, so
    masks of different rates are independent and each is reproducible on its own.

    Args:
        n: number of samples.
        m: number of modalities.
        rate: drop probability ``η`` in ``[0, 1)``.
        seed: non-negative mask seed.

    Returns:
        ``BoolTensor[n, m]``, ``True`` where the modality is kept.
    """
    rate = _check_rate(rate)
    if n < 0 or m < 1:
        raise ValueError(f"need n >= 0 samples and m >= 1 modalities, got n={n}, m={m}")
    if seed < 0:
        raise ValueError(f"mask seed must be non-negative, got {seed}")
    rng = np.random.default_rng([int(seed), round(rate * 1000)])
    keep = rng.random((n, m)) >= rate
    empty = np.flatnonzero(~keep.any(axis=1))
    keep[empty, rng.integers(0, m, size=empty.size)] = True
    return torch.from_numpy(keep)


def subset_keys(names: Sequence[str]) -> list[str]:
    """Keys of every non-empty modality subset (the all-subsets protocol), by size and then modality order."""
    return [subset_key(list(s), list(names)) for s in all_subsets(list(names))]


def mask_filename(rate: float, seed: int) -> str:
    """``random-rate_eta<rate>_seed<seed>.npy``."""
    return f"{RANDOM_RATE}_eta{rate_key(rate)}_seed{int(seed)}.npy"


@dataclass(frozen=True)
class SavedMask:
    """A mask read from (or just written to) the store.

    Attributes:
        mask: ``BoolTensor[n, m]``, ``True`` where the modality is kept.
        path: the ``.npy`` file.
        sha256: its SHA-256.
    """

    mask: Tensor
    path: Path
    sha256: str


def _safe_component(value: str, what: str) -> str:
    problem = path_component_problem(value)
    if problem is not None:
        raise ValueError(f"{what} {value!r} cannot be used as a directory name in the mask store: {problem}")
    return value


def check_store_name(dataset: str) -> str:
    """``dataset`` when it can name the dataset's directory of a mask store (one plain path component), else a
    ``ValueError`` naming it: checked before a run trains, not when its test split is scored."""
    return _safe_component(dataset, "dataset name")


def seeded_mask_sha256(n: int, m: int, rate: float, seed: int) -> str:
    """The SHA-256 of the saved form (the ``.npy`` bytes a :class:`MaskStore` holds) of the seeded random-rate mask
    ``random_rate_mask(n, m, rate, seed)``: what a saved mask must hash to, checked without writing it."""
    return hashlib.sha256(_npy_bytes(random_rate_mask(n, m, rate, seed).numpy())).hexdigest()


def _npy_bytes(mask: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(mask, dtype=np.bool_), allow_pickle=False)
    return buf.getvalue()


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    """An exclusive advisory lock on ``directory/.lock`` (POSIX), so concurrent writers do not lose manifest
    entries; a no-op where ``fcntl`` is unavailable."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / ".lock"
    try:  # never through a symbolic link (its target would be created or opened for writing)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o644)
    except OSError as err:
        if path.is_symlink():
            raise ValueError(f"{path}: the mask store's lock file is a symbolic link; remove it") from err
        raise
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


class MaskStore:
    """Saved random-rate masks under ``root/<dataset>/<split>/``.

    Each mask is ``random-rate_eta<rate>_seed<seed>.npy`` (bool ``[n, m]``, ``np.save`` without pickle), written
    atomically; ``manifest.json`` beside it records per file the protocol, rate, seed, n, modalities and SHA-256.
    Reading checks the hash and the recorded shape and modalities against the request and raises ``ValueError``
    naming the file and what differs; a mask is never silently regenerated over a different one. The file is
    written before its manifest entry; a file left unlisted by a killed writer is adopted when its bytes are the
    ones the seed regenerates.

    Args:
        root: the store's root directory (created on first write).
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def directory(self, dataset: str, split: str) -> Path:
        return self.root / _safe_component(dataset, "dataset name") / _safe_component(split, "split name")

    def manifest(self, dataset: str, split: str) -> dict[str, dict[str, Any]]:
        """The manifest's ``files`` mapping (file name -> entry); empty when there is none yet."""
        return self._read_manifest(self.directory(dataset, split) / MANIFEST)

    @staticmethod
    def _read_manifest(path: Path) -> dict[str, dict[str, Any]]:
        if not path.is_file():
            return {}
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as err:
            raise ValueError(f"{path}: cannot read the mask manifest ({err}); restore it or remove the store") from None
        files = doc.get("files") if isinstance(doc, dict) else None
        if not isinstance(files, dict):
            raise ValueError(f"{path}: the mask manifest has no 'files' mapping")
        return files

    def get_or_create(
        self, dataset: str, split: str, n: int, modalities: Sequence[str], rate: float, seed: int
    ) -> SavedMask:
        """The random-rate mask of (dataset, split, rate, seed): read and verified if saved, else created and saved.

        Args:
            dataset: dataset name (a directory level).
            split: split name, e.g. ``"test"``.
            n: number of samples of the split.
            modalities: modality names, in the dataset's order (the mask's columns).
            rate: drop probability in ``[0, 1)``.
            seed: mask seed.

        Returns:
            the :class:`SavedMask`.

        Raises:
            ValueError: when the saved file or its manifest entry disagrees with the request or its hash.
        """
        rate = _check_rate(rate)
        modalities = list(modalities)
        directory = self.directory(dataset, split)
        name = mask_filename(rate, seed)
        path = directory / name
        request = {
            "protocol": RANDOM_RATE,
            "rate": round(rate, 6),
            "seed": int(seed),
            "n": int(n),
            "modalities": modalities,
        }
        entry = self._read_manifest(directory / MANIFEST).get(name)
        if entry is not None and path.exists():
            return self._read(path, entry, request)
        with _locked(directory):  # another process may be creating the same mask right now
            files = self._read_manifest(directory / MANIFEST)
            entry = files.get(name)
            if entry is not None:
                if path.exists():
                    return self._read(path, entry, request)
                # the file was deleted: recreate it only if it reproduces the recorded hash exactly
                self._compare(path, entry, request)
                data = _npy_bytes(random_rate_mask(n, len(modalities), rate, seed).numpy())
                if hashlib.sha256(data).hexdigest() != entry.get("sha256"):
                    raise ValueError(
                        f"{path}: missing, and regenerating it does not reproduce the SHA-256 recorded in "
                        f"{directory / MANIFEST}; restore the file"
                    )
                with atomic_open(path, "wb") as fh:
                    fh.write(data)
                return self._read(path, entry, request)
            mask = random_rate_mask(n, len(modalities), rate, seed)
            data = _npy_bytes(mask.numpy())
            digest = hashlib.sha256(data).hexdigest()
            if path.exists():
                # written by a run killed before it listed the file: adopt it when it is exactly what the seed
                # regenerates (the file is written before its manifest entry, so this is the only crash leftover)
                found = sha256_file(path)
                if found != digest:
                    raise ValueError(
                        f"{path}: mask file exists but is not listed in {directory / MANIFEST}, and its SHA-256 "
                        f"{found} is not that of the mask this seed generates ({digest}); remove the file or "
                        "restore the manifest"
                    )
            else:
                with atomic_open(path, "wb") as fh:
                    fh.write(data)
            files[name] = {**request, "sha256": digest}
            atomic_write_json(directory / MANIFEST, {"files": dict(sorted(files.items()))})
        return SavedMask(mask, path, digest)

    @staticmethod
    def _compare(path: Path, entry: dict[str, Any], request: dict[str, Any]) -> None:
        for key, wanted in request.items():
            recorded = entry.get(key)
            if key == "rate" and recorded is not None:
                recorded = round(float(recorded), 6)
            if recorded != wanted:
                raise ValueError(
                    f"{path}: saved mask was made for {key}={recorded!r}, this evaluation asks for {key}={wanted!r}; "
                    "use another mask directory or the matching data"
                )

    def _read(self, path: Path, entry: dict[str, Any], request: dict[str, Any]) -> SavedMask:
        self._compare(path, entry, request)
        digest = sha256_file(path)
        if digest != entry.get("sha256"):
            raise ValueError(
                f"{path}: SHA-256 {digest} differs from {entry.get('sha256')} recorded in the manifest; the mask file "
                "was modified or corrupted — restore it (masks are never regenerated over a recorded hash)"
            )
        try:
            arr = np.load(path, allow_pickle=False)
        except (OSError, ValueError, EOFError) as err:  # EOFError: an empty file
            raise ValueError(f"{path}: cannot read the mask ({err or type(err).__name__})") from None
        expected = (request["n"], len(request["modalities"]))
        if arr.dtype != np.bool_ or arr.shape != expected:
            raise ValueError(f"{path}: mask is {arr.dtype} {arr.shape}, expected bool {expected}")
        return SavedMask(torch.from_numpy(np.ascontiguousarray(arr)), path, digest)
