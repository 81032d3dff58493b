"""AV-digits: spoken digits (audio) paired with handwritten digit images by label, as AV-MNIST pairs FSDD and MNIST.

Modalities:

- ``audio``: a ``sequence`` ``(T, 40)`` of log-mel frames (:mod:`robult.data.audio`: 32 ms Hann windows, 16 ms hop,
  40 mel bands up to 4 kHz) of one Free Spoken Digit Dataset recording (``<data>/fsdd/recordings/*.wav``, 8 kHz
  mono 16-bit, 3000 files: 10 digits x 6 speakers x 50 takes), with its true length in frames. The features are
  computed once and cached (:func:`robult.data.registry.cache_dir`, ``avdigits/``, keyed by the recordings' digest
  and the front-end settings).
- ``image``: an ``image`` ``(1, 16, 15)``: the 240-pixel view (``pix``, 2x3-window pixel averages 0..6) of the UCI
  Multiple Features digits (``<data>/handwritten/handwritten_6views.mat``, 2000 images, 200 per digit).

Splits. Recordings: ``split="official"`` (default) keeps the FSDD test split (takes 0-4 of every digit and speaker,
300 recordings); ``split="speaker"`` tests on every recording of one held-out speaker (``test_speaker``, default
``george``; 500 recordings) and trains on the other five, a harder setting that measures generalisation to a new
voice. Validation is a stratified ``val_fraction`` of the remaining recordings (seed ``seed + 1``). Images: the
file's fixed 400-image test split is the test pool; validation images are a stratified ``val_fraction`` of the other
1600 (seed ``seed + 1``), the rest the training pool. Both use the one split rule with a fixed test split
(:func:`robult.data.splits.train_val_test_split`), so the three splits share no recording and no image.

Pairing. Within each split and digit, the recordings (in a seeded order) take the split's images of that digit in a
seeded order, cycling through them, so every image of a pool is used ``floor`` or ``ceil`` of (recordings / images)
times (training: each image about 1.7 times, as AV-MNIST reuses FSDD recordings). The pairing depends on ``seed``
only (``seed + 3``): the same seed gives the same pairs.

Inputs are standardised with training statistics (present rows): audio per mel band over valid frames, images by
one mean and standard deviation. ``train_missing_rate`` drops modalities of training samples
(:func:`robult.data.multiview.random_presence`, seed ``seed + 2``); dropped inputs are zero-filled.

Checks: every recording file named ``{digit}_{speaker}_{take}.wav`` must be there (a missing one is named), the
recordings' combined SHA-256 (of the sorted ``name<TAB>sha256`` lines) and the image file's SHA-256 must match.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import scipy.io
import torch

from robult.data.audio import LogMelSettings, log_mel, mel_filterbank, pad_sequences, read_wav
from robult.data.dataset import MultimodalDataset
from robult.data.multiview import SOURCES as MULTIVIEW_SOURCES
from robult.data.multiview import MultiviewSource, locate_file, random_presence
from robult.data.registry import (
    DatasetBundle,
    LoadOptions,
    cache_dir,
    default_metric,
    register_dataset,
    resolve_data_dir,
)
from robult.data.splits import train_val_test_split
from robult.specs import ModalitySpec, TaskSpec
from robult.utils.io import ChecksumError, atomic_open, sha256_file

__all__ = ["SOURCE", "AVDigitsSource", "load_avdigits", "pair_by_label", "recordings_digest"]

CACHE_VERSION = 1
SPLITS = ("official", "speaker")
MODALITIES = ("audio", "image")


@dataclass(frozen=True)
class AVDigitsSource:
    """Where AV-digits is read from and what it must hold.

    Attributes:
        folder: sub-folder of the data directory holding ``recordings/``.
        speakers: the speakers, as spelt in the file names.
        takes: takes per digit and speaker (``0 .. takes - 1``).
        test_takes: takes of the official test split (``0 .. test_takes - 1``).
        recordings_sha256: SHA-256 of the sorted ``"<file name>\\t<file SHA-256>\\n"`` lines of every recording.
        sample_rate: the recordings' sample rate.
        image: the multi-view file whose ``pix`` view (keys ``x1_train`` / ``x1_test``, ``gt_train`` / ``gt_test``)
            holds the images.
        image_shape: ``(H, W)`` of one image (row-major in the file).
        origin: where the recordings come from (for the error message and the notes).
    """

    folder: str = "fsdd"
    speakers: tuple[str, ...] = ("george", "jackson", "lucas", "nicolas", "theo", "yweweler")
    takes: int = 50
    test_takes: int = 5
    recordings_sha256: str = "8dac6ce326e419e9fcfadedf2e4a67d6c08a40968c34bb8fa2b4e27d74753d5a"
    sample_rate: int = 8000
    image: MultiviewSource = field(default_factory=lambda: MULTIVIEW_SOURCES["handwritten"])
    image_shape: tuple[int, int] = (16, 15)
    origin: str = (
        "GitHub Jakobovski/free-spoken-digit-dataset, commit 26eb9aaf76e81b692f806f9140c2d2777410d7a1, "
        "folder recordings/ (CC BY-SA 4.0)"
    )

    def file_names(self) -> list[str]:
        """Every expected recording name, sorted."""
        return sorted(f"{d}_{s}_{t}.wav" for d in range(10) for s in self.speakers for t in range(self.takes))


SOURCE = AVDigitsSource()
"""The real data: FSDD (``<data>/fsdd``) and the ``handwritten`` file's pixel view."""


# -------------------------------------------------------------------------------------------------------- reading


def recordings_digest(folder: Path, names: list[str]) -> str:
    """SHA-256 of the sorted ``"<name>\\t<SHA-256 of the file>\\n"`` lines of ``folder/<name>`` (one digest for a
    folder of many files)."""
    h = hashlib.sha256()
    for name in sorted(names):
        h.update(f"{name}\t{sha256_file(folder / name)}\n".encode())
    return h.hexdigest()


def _recordings_dir(source: AVDigitsSource, opts: LoadOptions) -> Path:
    root = resolve_data_dir(opts.data_dir)
    folder = root / source.folder / "recordings"
    if not folder.is_dir():
        raise FileNotFoundError(
            f"dataset 'avdigits': folder {folder} not found; it holds the Free Spoken Digit Dataset recordings "
            f"({source.origin}); place the {10 * len(source.speakers) * source.takes} WAV files there"
        )
    names = source.file_names()
    missing = [n for n in names if not (folder / n).is_file()]
    if missing:
        raise FileNotFoundError(
            f"dataset 'avdigits': recording {folder / missing[0]} not found ({len(missing)} of {len(names)} missing)"
        )
    digest = recordings_digest(folder, names)
    if digest != source.recordings_sha256:
        raise ChecksumError(
            f"{folder}: the combined SHA-256 of the {len(names)} recordings is {digest}, expected "
            f"{source.recordings_sha256}; a recording is corrupted or another version ({source.origin})"
        )
    return folder


def _features_cache(opts: LoadOptions) -> Path | None:
    if opts.extra.get("cache") is False:
        return None
    given = opts.extra.get("cache_dir")
    return Path(given).expanduser() if given else cache_dir() / "avdigits"


def _log_mels(
    folder: Path, names: list[str], source: AVDigitsSource, settings: LogMelSettings, opts: LoadOptions
) -> tuple[np.ndarray, np.ndarray]:
    """``(frames [sum T, n_mels], lengths [N])`` of the recordings, from the cache when it holds them."""
    key = hashlib.sha256(
        repr((CACHE_VERSION, source.recordings_sha256, sorted(settings.as_dict().items()))).encode()
    ).hexdigest()[:16]
    cache = _features_cache(opts)
    path = None if cache is None else cache / f"logmel-{key}.npz"
    if path is not None and path.is_file():
        try:
            with np.load(path, allow_pickle=False) as z:
                frames, lengths = z["frames"], z["lengths"]
            if len(lengths) == len(names) and int(lengths.sum()) == len(frames):
                return frames, lengths
        except (OSError, ValueError, KeyError, EOFError):
            pass  # a damaged cache file is recomputed
    bank = mel_filterbank(
        settings.n_fft // 2 + 1, settings.n_mels, settings.sample_rate, settings.f_min, settings.f_max
    )
    feats = []
    for name in names:
        samples, rate = read_wav(folder / name)
        if rate != settings.sample_rate:
            raise ValueError(f"{folder / name}: sample rate {rate} Hz, expected {settings.sample_rate} Hz")
        feats.append(log_mel(samples, settings, bank).numpy())
    frames = np.concatenate(feats).astype(np.float32)
    lengths = np.array([len(f) for f in feats], dtype=np.int64)
    if path is not None:
        with atomic_open(path, "wb", encoding=None) as fh:
            np.savez(fh, frames=frames, lengths=lengths)
    return frames, lengths


def _read_images(source: AVDigitsSource, opts: LoadOptions) -> tuple[np.ndarray, np.ndarray, np.ndarray, Path]:
    """``(images [N, H, W] float32, labels [N], fixed test indices, path)`` of the image file (SHA-256 checked)."""
    path = locate_file(source.image, opts)
    mat = scipy.io.loadmat(str(path), variable_names=["x1_train", "x1_test", "gt_train", "gt_test"])
    missing = [k for k in ("x1_train", "x1_test", "gt_train", "gt_test") if k not in mat]
    if missing:
        raise ValueError(f"{path}: no variable {missing[0]!r} (the pixel view and labels of the handwritten file)")
    pix = np.concatenate([mat["x1_train"], mat["x1_test"]]).astype(np.float32)
    labels = np.concatenate([np.asarray(mat["gt_train"]).ravel(), np.asarray(mat["gt_test"]).ravel()]).astype(np.int64)
    labels -= 1  # stored 1..10 for digits 0..9
    h, w = source.image_shape
    if pix.ndim != 2 or pix.shape[1] != h * w:
        raise ValueError(f"{path}: pixel view has shape {pix.shape}, expected (N, {h * w}) ({h}x{w} images)")
    if len(labels) != len(pix) or labels.min() < 0 or labels.max() > 9:
        raise ValueError(f"{path}: {len(labels)} labels in [{labels.min()}, {labels.max()}] for {len(pix)} images")
    test = np.arange(len(np.asarray(mat["gt_train"]).ravel()), len(labels))
    return pix.reshape(-1, h, w), labels, test, path


# -------------------------------------------------------------------------------------------------------- pairing


def pair_by_label(
    recording_labels: np.ndarray, image_labels: np.ndarray, rng: np.random.Generator, where: str = ""
) -> np.ndarray:
    """For each recording, the index of an image of the same label.

    Within a label the recordings, in a random order, take the images in a random order, cycling; so each image is
    used ``floor`` or ``ceil`` of (recordings / images) times. A label with recordings but no image is an error.
    """
    out = np.full(len(recording_labels), -1, dtype=np.int64)
    for c in np.unique(recording_labels):
        recs = np.flatnonzero(recording_labels == c)
        imgs = np.flatnonzero(image_labels == c)
        if len(imgs) == 0:
            raise ValueError(f"{where}no image of digit {c} to pair with its {len(recs)} recordings")
        recs = recs[rng.permutation(len(recs))]
        order = imgs[rng.permutation(len(imgs))]
        out[recs] = order[np.arange(len(recs)) % len(order)]
    return out


def _recording_split(
    digits: np.ndarray, speakers: np.ndarray, takes: np.ndarray, source: AVDigitsSource, opts: LoadOptions
) -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
    mode = opts.extra.get("split", "official")
    if mode not in SPLITS:
        raise ValueError(f"dataset 'avdigits': option split={mode!r}; use one of {list(SPLITS)}")
    test_speaker = opts.extra.get("test_speaker")
    if mode == "official":
        if test_speaker is not None:
            raise ValueError("dataset 'avdigits': test_speaker applies to split='speaker' only")
        test_mask = takes < source.test_takes
        rule = f"FSDD official test split (takes 0-{source.test_takes - 1} of every digit and speaker)"
    else:
        test_speaker = source.speakers[0] if test_speaker is None else test_speaker
        if test_speaker not in source.speakers:
            raise ValueError(
                f"dataset 'avdigits': test_speaker={test_speaker!r} is not a speaker; speakers: {list(source.speakers)}"
            )
        test_mask = speakers == test_speaker
        rule = f"speaker-disjoint: test = every recording of {test_speaker}, train/val = the other speakers"
    split = train_val_test_split(digits, opts.seed, opts.val_fraction, fixed_test=np.flatnonzero(test_mask))
    rule += f"; validation: stratified {opts.val_fraction:g} of the other recordings (seed {opts.seed + 1})"
    return split.train, split.val, split.test, rule


def load_avdigits(source: AVDigitsSource, opts: LoadOptions) -> DatasetBundle:
    """Load AV-digits from ``source`` (see the module docstring).

    Args:
        source: the files and their checks (:data:`SOURCE` for the real data).
        opts: loader options; ``extra`` may hold ``split`` (``"official"`` or ``"speaker"``), ``test_speaker``,
            ``train_missing_rate`` (share of training sample-modality entries dropped), ``cache`` (``False``: no
            feature cache), ``cache_dir`` (feature cache and image download folder) and ``download`` (the image file).

    Raises:
        FileNotFoundError: the recordings folder, a recording or the image file is missing (named).
        robult.utils.io.ChecksumError: the recordings or the image file differ from the expected SHA-256.
    """
    known = {"split", "test_speaker", "train_missing_rate", "cache", "cache_dir", "download"}
    unknown = sorted(set(opts.extra) - known)
    if unknown:
        raise ValueError(f"dataset 'avdigits': unknown option {unknown[0]!r}; options: {sorted(known)}")
    folder = _recordings_dir(source, opts)
    names = source.file_names()
    parts = [n[: -len(".wav")].split("_") for n in names]
    digits = np.array([int(p[0]) for p in parts], dtype=np.int64)
    speakers = np.array([p[1] for p in parts])
    takes = np.array([int(p[2]) for p in parts], dtype=np.int64)
    settings = LogMelSettings(sample_rate=source.sample_rate)
    frames, lengths = _log_mels(folder, names, source, settings, opts)
    images, image_labels, image_test, image_path = _read_images(source, opts)

    train_rec, val_rec, test_rec, rule = _recording_split(digits, speakers, takes, source, opts)
    image_split = train_val_test_split(image_labels, opts.seed, opts.val_fraction, fixed_test=image_test)
    image_pools = {"train": image_split.train, "val": image_split.val, "test": image_split.test}
    rng = np.random.default_rng(opts.seed + 3)
    recs = {"train": train_rec, "val": val_rec, "test": test_rec}
    pairs = {}
    for split, rec in recs.items():
        pool = image_pools[split]
        pairs[split] = pool[pair_by_label(digits[rec], image_labels[pool], rng, where=f"{split} split: ")]

    offsets = np.concatenate([[0], np.cumsum(lengths)])
    sequences = [frames[offsets[i] : offsets[i + 1]] for i in range(len(names))]

    rate = float(opts.extra.get("train_missing_rate", 0.0) or 0.0)
    train_present = random_presence(len(train_rec), len(MODALITIES), rate, seed=opts.seed + 2)
    audio_rows = train_rec[train_present[:, 0]]
    if len(audio_rows) == 0 or not train_present[:, 1].any():
        raise ValueError(f"dataset 'avdigits': train_missing_rate={rate} leaves a modality with no training sample")
    train_frames = np.concatenate([sequences[i] for i in audio_rows]).astype(np.float64)
    audio_mean, audio_std = train_frames.mean(0), train_frames.std(0)
    audio_std[audio_std < 1e-8] = 1.0
    train_pixels = images[pairs["train"][train_present[:, 1]]].astype(np.float64)
    image_mean, image_std = float(train_pixels.mean()), float(train_pixels.std()) or 1.0

    h, w = source.image_shape
    modalities = [ModalitySpec("audio", "sequence", (None, settings.n_mels)), ModalitySpec("image", "image", (1, h, w))]
    task = TaskSpec("multiclass", num_classes=10, label_names=tuple(str(d) for d in range(10)))

    def build(split: str, present: np.ndarray | None = None) -> MultimodalDataset:
        rec = recs[split]
        audio, audio_len = pad_sequences([(sequences[i] - audio_mean) / audio_std for i in rec])
        image = ((images[pairs[split]] - image_mean) / image_std).astype(np.float32)[:, None]
        if present is None:
            present = np.ones((len(rec), len(MODALITIES)), dtype=bool)
        else:
            audio[~present[:, 0]] = 0.0
            image[~present[:, 1]] = 0.0
        return MultimodalDataset(
            modalities,
            task,
            {"audio": torch.from_numpy(audio), "image": torch.from_numpy(image)},
            torch.from_numpy(digits[rec]),
            present=torch.from_numpy(present),
            lengths={"audio": torch.from_numpy(audio_len)},
            source_rows=torch.from_numpy(rec),
            sources={"audio": str(folder), "image": str(image_path)},
        )

    train, val, test = build("train", train_present), build("val"), build("test")
    notes: dict[str, Any] = {
        "split": rule,
        "sizes": {"train": len(train), "val": len(val), "test": len(test)},
        "images": (
            f"pix view of {image_path.name} as {h}x{w}: test pool = the file's fixed {len(image_test)}-image test "
            f"split; validation pool = stratified {opts.val_fraction:g} of the rest (seed {opts.seed + 1})"
        ),
        "pairing": f"by digit within each split, seeded (seed {opts.seed + 3}); images reused evenly",
        "image_pool_sizes": {k: len(v) for k, v in image_pools.items()},
        "audio_features": settings.as_dict(),
        "standardisation": "audio: per mel band over valid training frames; image: one mean/std of training pixels",
        "train_missing_rate": rate,
        "recordings_sha256": source.recordings_sha256,
        "image_sha256": source.image.sha256,
        "origin": source.origin,
    }
    normalization = {
        "audio": (audio_mean.astype(np.float32), audio_std.astype(np.float32)),
        "image": (np.full((1, 1, 1), image_mean, np.float32), np.full((1, 1, 1), image_std, np.float32)),
    }
    return DatasetBundle(
        "avdigits",
        modalities,
        task,
        default_metric(task),
        train,
        val,
        test,
        source=str(folder.parent),
        notes=notes,
        normalization=normalization,
    )


@register_dataset(
    "avdigits",
    "AV-digits: FSDD spoken digits (log-mel sequences) paired by label with handwritten digit images (16x15), "
    "3000 pairs, 10 classes; raw signals, built-in encoders",
    folder=SOURCE.folder,
    group="multimodal",
)
def load_avdigits_dataset(opts: LoadOptions) -> DatasetBundle:
    """Load ``avdigits`` (:data:`SOURCE`; options in :func:`load_avdigits`)."""
    return load_avdigits(SOURCE, opts)
