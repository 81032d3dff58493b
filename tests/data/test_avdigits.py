"""AV-digits: a small copy written in the real formats (WAV recordings, the handwritten .mat file) exercises the
loader without the data; the real set is checked when it is present (slow)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch

import robult.data.avdigits as avd
from robult.data.audio import LogMelSettings, log_mel, read_wav
from robult.data.avdigits import SOURCE, AVDigitsSource, load_avdigits, pair_by_label, recordings_digest
from robult.data.multiview import SOURCES
from robult.data.registry import DatasetBundle, LoadOptions, default_data_dir, load_dataset, registered_datasets
from robult.utils.io import ChecksumError, sha256_file

from .test_audio import write_wav

SPEAKERS = ("anna", "bob")
TAKES, TEST_TAKES = 8, 2
WIDTHS = (240, 76, 216, 47, 64, 6)  # the six views of handwritten_6views.mat


def _write_tiny_copy(root: Path) -> AVDigitsSource:
    """10 digits x 2 speakers x 8 takes of short 8 kHz tones (length and pitch vary), and a handwritten file with 12
    training and 4 test images per digit, each image unique (pixel values 0..6, stored as in the real file)."""
    rng = np.random.default_rng(0)
    rec = root / "fsdd" / "recordings"
    rec.mkdir(parents=True)
    for d in range(10):
        for s, _speaker in enumerate(SPEAKERS):
            for take in range(TAKES):
                n = int(rng.integers(200, 1400))
                t = np.arange(n) / 8000
                tone = 0.3 * np.sin(2 * np.pi * (300 + 250 * d + 40 * s) * t) + 0.01 * rng.normal(size=n)
                write_wav(rec / f"{d}_{SPEAKERS[s]}_{take}.wav", np.round(tone * 32767).astype(np.int16))
    mat: dict[str, np.ndarray] = {}
    for part, per_digit in (("train", 12), ("test", 4)):
        labels = np.repeat(np.arange(1, 11), per_digit).astype(np.uint8)[:, None]  # 1..10 as in the file
        mat[f"gt_{part}"] = labels
        for v, width in enumerate(WIDTHS, start=1):
            mat[f"x{v}_{part}"] = rng.integers(0, 7, size=(len(labels), width)).astype(np.uint8)
    image = root / "handwritten" / "handwritten_6views.mat"
    image.parent.mkdir(parents=True)
    scipy.io.savemat(str(image), mat)
    names = AVDigitsSource(speakers=SPEAKERS, takes=TAKES).file_names()
    return AVDigitsSource(
        speakers=SPEAKERS,
        takes=TAKES,
        test_takes=TEST_TAKES,
        recordings_sha256=recordings_digest(rec, names),
        image=dataclasses.replace(SOURCES["handwritten"], sha256=sha256_file(image)),
    )


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, AVDigitsSource]:
    root = tmp_path_factory.mktemp("avdigits")
    return root, _write_tiny_copy(root)


def _load(tiny: tuple[Path, AVDigitsSource], seed: int = 0, **extra: object) -> DatasetBundle:
    root, source = tiny
    extra.setdefault("cache_dir", str(root / "cache"))
    return load_avdigits(source, LoadOptions(data_dir=root, seed=seed, val_fraction=0.25, extra=extra))


def _raw_images(root: Path) -> np.ndarray:
    m = scipy.io.loadmat(str(root / "handwritten" / "handwritten_6views.mat"))
    return np.concatenate([m["x1_train"], m["x1_test"]]).astype(np.float32).reshape(-1, 16, 15)


def _image_rows(bundle: DatasetBundle, split: str, raw: np.ndarray) -> np.ndarray:
    """Which row of the image file each sample of ``split`` shows (images are unique; undo the z-score)."""
    mean, std = bundle.normalization["image"]
    x = getattr(bundle, split).inputs["image"].numpy()[:, 0] * std[0] + mean[0]
    dist = np.abs(x[:, None] - raw[None]).reshape(len(x), len(raw), -1).max(-1)
    assert (dist.min(1) < 1e-4).all()
    return dist.argmin(1)


def test_registered() -> None:
    info = registered_datasets()["avdigits"]
    assert info.folder == "fsdd" and info.loader is avd.load_avdigits_dataset
    assert len(SOURCE.file_names()) == 3000 and SOURCE.file_names()[0] == "0_george_0.wav"


def test_shapes_splits_and_values(tiny: tuple[Path, AVDigitsSource]) -> None:
    root, _ = tiny
    b = _load(tiny)
    assert [(s.name, s.kind.value, s.shape) for s in b.modalities] == [
        ("audio", "sequence", (None, 40)),
        ("image", "image", (1, 16, 15)),
    ]
    assert b.task.num_classes == 10 and b.primary_metric == "accuracy"
    # official split: takes 0-1 are test (10 digits x 2 speakers x 2), validation a quarter of the rest per digit
    assert b.notes["sizes"] == {"train": 90, "val": 30, "test": 40}
    names = AVDigitsSource(speakers=SPEAKERS, takes=TAKES).file_names()
    takes = np.array([int(n[:-4].split("_")[2]) for n in names])
    assert (takes[b.test.source_rows.numpy()] < TEST_TAKES).all()
    assert (takes[np.concatenate([b.train.source_rows.numpy(), b.val.source_rows.numpy()])] >= TEST_TAKES).all()
    # audio: the log-mel frames of the file, z-scored per band with training statistics; true lengths
    i = 3
    name = names[int(b.train.source_rows[i])]
    samples, _ = read_wav(root / "fsdd" / "recordings" / name)
    expected = log_mel(samples, LogMelSettings()).numpy()
    mean, std = b.normalization["audio"]
    n = int(b.train.lengths["audio"][i])
    assert n == LogMelSettings().num_frames(len(samples)) == len(expected)
    np.testing.assert_allclose(b.train.inputs["audio"][i, :n].numpy(), (expected - mean) / std, rtol=1e-4, atol=1e-4)
    assert b.train.inputs["audio"][i, n:].abs().sum() == 0
    assert int(b.train.target[i]) == int(name[0])
    # training statistics: per band mean 0, std 1 over valid training frames
    valid = torch.arange(b.train.inputs["audio"].shape[1])[None] < b.train.lengths["audio"][:, None]
    frames = b.train.inputs["audio"][valid].double()
    torch.testing.assert_close(frames.mean(0), torch.zeros(40, dtype=torch.float64), atol=1e-4, rtol=0)
    torch.testing.assert_close(frames.std(0, correction=0), torch.ones(40, dtype=torch.float64), atol=1e-4, rtol=0)


def test_splits_share_no_recording_and_no_image_and_pairs_match_digits(tiny: tuple[Path, AVDigitsSource]) -> None:
    root, _ = tiny
    raw = _raw_images(root)
    raw_labels = np.concatenate([np.repeat(np.arange(10), 12), np.repeat(np.arange(10), 4)])
    for split_option in ("official", "speaker"):
        b = _load(tiny, split=split_option)
        recs = {s: set(getattr(b, s).source_rows.tolist()) for s in ("train", "val", "test")}
        images = {s: _image_rows(b, s, raw) for s in ("train", "val", "test")}
        assert sum(len(r) for r in recs.values()) == 160 == len(set.union(*recs.values()))
        for a, c in (("train", "val"), ("train", "test"), ("val", "test")):
            assert not recs[a] & recs[c]
            assert not set(images[a]) & set(images[c])
        assert set(images["test"]) <= set(range(120, 160))  # the file's fixed test images
        for s in ("train", "val", "test"):
            target = getattr(b, s).target.numpy()
            np.testing.assert_array_equal(raw_labels[images[s]], target)
            # images of a digit are used evenly: counts differ by at most one
            for d in range(10):
                counts = np.unique(images[s][target == d], return_counts=True)[1]
                assert counts.max() - counts.min() <= 1


def test_pairing_is_reproducible_and_seeded(tiny: tuple[Path, AVDigitsSource]) -> None:
    a, b, c = _load(tiny, seed=0), _load(tiny, seed=0), _load(tiny, seed=1)
    for s in ("train", "val", "test"):
        for name in ("audio", "image"):
            torch.testing.assert_close(getattr(a, s).inputs[name], getattr(b, s).inputs[name], rtol=0, atol=0)
    # another seed: the same test recordings, paired with other images
    assert a.test.source_rows.tolist() == c.test.source_rows.tolist()
    assert not torch.equal(a.test.inputs["image"], c.test.inputs["image"])
    rng = np.random.default_rng(5)
    pairs = pair_by_label(np.array([0, 0, 0, 1, 1]), np.array([1, 0, 0]), rng)
    assert sorted(pairs[:3].tolist()) in ([1, 1, 2], [1, 2, 2]) and pairs[3:].tolist() == [0, 0]
    with pytest.raises(ValueError, match="no image of digit 2 to pair with its 1 recordings"):
        pair_by_label(np.array([2]), np.array([0, 1]), rng)


def test_speaker_split(tiny: tuple[Path, AVDigitsSource]) -> None:
    names = np.array(AVDigitsSource(speakers=SPEAKERS, takes=TAKES).file_names())
    b = _load(tiny, split="speaker", test_speaker="bob")
    assert all("_bob_" in n for n in names[b.test.source_rows.numpy()]) and len(b.test) == 80
    assert not any("_bob_" in n for n in names[b.train.source_rows.numpy()])
    assert "speaker-disjoint: test = every recording of bob" in b.notes["split"]
    default = _load(tiny, split="speaker")
    assert all("_anna_" in n for n in names[default.test.source_rows.numpy()])
    with pytest.raises(ValueError, match=r"test_speaker='carl' is not a speaker; speakers: \['anna', 'bob'\]"):
        _load(tiny, split="speaker", test_speaker="carl")
    with pytest.raises(ValueError, match="option split='random'; use one of"):
        _load(tiny, split="random")
    with pytest.raises(ValueError, match="test_speaker applies to split='speaker' only"):
        _load(tiny, test_speaker="bob")
    with pytest.raises(ValueError, match="unknown option 'n_samples'"):
        _load(tiny, n_samples=3)


def test_train_missing_rate(tiny: tuple[Path, AVDigitsSource]) -> None:
    b = _load(tiny, train_missing_rate=0.3)
    present = b.train.present
    assert int((~present).sum()) == round(0.3 * 90 * 2) and present.any(1).all()
    assert b.train.inputs["audio"][~present[:, 0]].abs().sum() == 0
    assert b.train.inputs["image"][~present[:, 1]].abs().sum() == 0
    assert b.val.present.all() and b.test.present.all()


def test_features_are_cached(tiny: tuple[Path, AVDigitsSource], monkeypatch: pytest.MonkeyPatch) -> None:
    root, _ = tiny
    first = _load(tiny, cache_dir=str(root / "cache2"))
    assert len(list((root / "cache2").glob("logmel-*.npz"))) == 1

    def no_reading(path: Path) -> None:
        raise AssertionError(f"read {path} despite the cache")

    monkeypatch.setattr(avd, "read_wav", no_reading)
    again = _load(tiny, cache_dir=str(root / "cache2"))
    torch.testing.assert_close(first.train.inputs["audio"], again.train.inputs["audio"], rtol=0, atol=0)
    with pytest.raises(AssertionError, match="despite the cache"):
        _load(tiny, cache=False)


def test_errors_name_the_missing_or_changed_file(tiny: tuple[Path, AVDigitsSource], tmp_path: Path) -> None:
    root, source = tiny
    opts = LoadOptions(data_dir=tmp_path, extra={"cache": False})
    with pytest.raises(FileNotFoundError, match=rf"folder {tmp_path / 'fsdd' / 'recordings'} not found"):
        load_avdigits(source, opts)
    rec = tmp_path / "fsdd" / "recordings"
    rec.mkdir(parents=True)
    for f in sorted((root / "fsdd" / "recordings").iterdir()):
        (rec / f.name).write_bytes(f.read_bytes())
    (rec / "7_bob_3.wav").unlink()
    with pytest.raises(FileNotFoundError, match=r"recording .*7_bob_3\.wav not found \(1 of 160 missing\)"):
        load_avdigits(source, opts)
    data = bytearray((root / "fsdd" / "recordings" / "7_bob_3.wav").read_bytes())
    data[-1] ^= 0xFF
    (rec / "7_bob_3.wav").write_bytes(bytes(data))
    with pytest.raises(ChecksumError, match="combined SHA-256 of the 160 recordings"):
        load_avdigits(source, opts)
    (rec / "7_bob_3.wav").write_bytes((root / "fsdd" / "recordings" / "7_bob_3.wav").read_bytes())
    with pytest.raises(FileNotFoundError, match=r"handwritten_6views\.mat not found"):
        load_avdigits(source, opts)


def test_trains_and_scores_every_subset_with_missing_training_data(
    tiny: tuple[Path, AVDigitsSource], tmp_path: Path
) -> None:
    from robult.config import load_config
    from robult.training.run import train_run

    configs = Path(__file__).resolve().parents[2] / "configs"
    cfg = load_config(
        configs / "avdigits.yaml",
        [
            f"out_dir={tmp_path}",
            "train.max_epochs=1",
            "train.progress=false",
            "train.label_ratio=0.2",
            "train.batch_size=32",
            "train.accelerator=cpu",
            "eval.rates=[0.0,0.5]",
        ],
    )
    assert cfg.model.sequence_encoder == "conv"
    bundle = _load(tiny, train_missing_rate=0.3)
    result = train_run(cfg, bundle=bundle)
    test = json.loads((result.run_dir / "result.json").read_text())["test"]
    assert set(test["subsets"]) == {"audio", "image", "audio+image"}
    assert set(test["random_rate"]) == {"0.0", "0.5"}
    assert all(0.0 <= s["accuracy"] <= 1.0 for s in test["subsets"].values())


@pytest.mark.slow
def test_real_data() -> None:
    root = default_data_dir()
    if root is None or not (root / "fsdd" / "recordings").is_dir():
        pytest.skip("…/shared/data/fsdd not found; set ROBULT_DATA_DIR")
    b = load_dataset("avdigits", data_dir=root)
    assert b.notes["sizes"] == {"train": 2430, "val": 270, "test": 300}
    assert b.notes["image_pool_sizes"] == {"train": 1440, "val": 160, "test": 400}
    rows = [set(getattr(b, s).source_rows.tolist()) for s in ("train", "val", "test")]
    assert len(set.union(*rows)) == 3000
    assert torch.bincount(b.test.target).tolist() == [30] * 10
    lengths = b.train.lengths["audio"]
    assert int(lengths.min()) >= 7 and int(lengths.max()) <= 141
    speaker = load_dataset("avdigits", data_dir=root, split="speaker", test_speaker="theo")
    assert speaker.notes["sizes"]["test"] == 500 and len(speaker.train) + len(speaker.val) == 2500
