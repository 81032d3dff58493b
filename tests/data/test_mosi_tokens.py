"""CMU-MOSI with ``text_field=text_bert`` (BERT token ids, a ``tokens`` modality) trains with the built-in token
encoder: ``robult train`` on a small MMSA-format file whose sentiment is carried by one token, then
``robult.load(...).predict`` and the TorchScript / ONNX exports of the trained model."""

from __future__ import annotations

import json
import pickle
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import robult
from robult.cli import app
from robult.data.paper import load_mosi
from robult.modules import GRUEncoder, TokenEncoder

runner = CliRunner()
GOOD, BAD = 2204, 2919  # BERT ids of "good" and "bad"
SIZES = {"train": 160, "valid": 40, "test": 40}


def _split(n: int, seed: int, t: int = 12) -> dict:
    """An MMSA ``aligned_50.pkl`` split without BERT features: the label (±2) is told by one word of the text
    ([CLS] ... good|bad ... [SEP], random other ids up to 30000); audio and vision are noise."""
    rng = np.random.default_rng(seed)
    lens = rng.integers(4, t + 1, n)
    ids = np.zeros((n, 3, t), dtype=np.float32)  # token ids, attention mask, segment ids
    y = rng.choice([-2.0, 2.0], n).astype(np.float32)
    for i, ln in enumerate(lens):
        words = rng.integers(1000, 30000, ln)
        words[0], words[ln - 1] = 101, 102
        words[rng.integers(1, ln - 1)] = GOOD if y[i] > 0 else BAD
        ids[i, 0, :ln] = words
        ids[i, 1, :ln] = 1
    split = {"text_bert": ids, "regression_labels": y, "id": np.array([f"v{seed}_{i}" for i in range(n)], dtype=object)}
    for key, d in (("audio", 5), ("vision", 20)):
        x = rng.standard_normal((n, t, d)).astype(np.float32)
        for i, ln in enumerate(lens):
            x[i, ln:] = 0
        split[key] = x
    return split


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(run directory, data file) of one `robult train` run of robult for 5 epochs on all training labels."""
    root = tmp_path_factory.mktemp("mosi_tokens")
    (root / "mosi").mkdir()
    data = {s: _split(n, k) for k, (s, n) in enumerate(SIZES.items())}
    path = root / "mosi" / "aligned_50.pkl"
    path.write_bytes(pickle.dumps(data, protocol=4))
    sets = [
        f"out_dir={root / 'runs'}",
        "name=tokens",
        "dataset.options.text_field=text_bert",
        "train.max_epochs=5",
        "train.patience=0",
        "train.batch_size=32",
        "train.lr=0.003",
        "train.progress=false",
        "train.num_threads=1",
        "model.hidden_dim=16",
        "model.shared_dim=8",
        "model.specific_dim=8",
        "model.encoder_hidden=[16]",
        "eval.rates=[0.0]",
    ]
    args = ["train", "--dataset", "mosi", "--data-dir", str(root), "--label-ratio", "1"]
    result = runner.invoke(app, [*args, *(a for s in sets for a in ("--set", s))])
    assert result.exit_code == 0, result.output
    return root / "runs" / "tokens", path


def _test_inputs(path: Path) -> tuple[dict, dict, np.ndarray]:
    bundle = load_mosi(path, text_field="text_bert")
    test = bundle.test
    inputs = {k: np.asarray(v).copy() for k, v in test.inputs.items()}
    return inputs, {k: v.numpy() for k, v in test.lengths.items()}, test.target.numpy()


def test_text_bert_trains_with_the_builtin_token_encoder(trained) -> None:
    run_dir, _ = trained
    result = json.loads((run_dir / "result.json").read_text())
    assert result["modalities"] == ["text", "audio", "vision"]
    mae = {k: v["mae"] for k, v in result["test"]["subsets"].items()}
    acc2 = {k: v["acc2"] for k, v in result["test"]["subsets"].items()}
    # the token carries the label (|y| = 2): text learns it, the noise modalities stay near chance (mae about 2)
    assert mae["text"] < 1.2 and acc2["text"] >= 0.9, (mae, acc2)
    assert mae["audio"] > 1.5 and mae["vision"] > 1.5, mae
    assert mae["text+audio+vision"] < 1.2, mae
    predictor = robult.load(run_dir)
    assert predictor.modalities[0].kind.value == "tokens" and predictor.modalities[0].shape == (12,)
    encoder = predictor.model.encoders.encoders["text"]
    assert isinstance(encoder, TokenEncoder) and isinstance(encoder.sequence, GRUEncoder)
    assert tuple(encoder.embedding.weight.shape) == (32768, 16)  # model.token_buckets rows of model.hidden_dim


def test_predictor_reproduces_the_run_and_never_reads_padding(trained) -> None:
    run_dir, path = trained
    predictor = robult.load(run_dir)
    inputs, lengths, target = _test_inputs(path)
    result = json.loads((run_dir / "result.json").read_text())
    text = predictor.predict({"text": inputs["text"]}, lengths={"text": lengths["text"]}).values
    assert np.abs(text - target).mean() == pytest.approx(result["test"]["subsets"]["text"]["mae"])
    full = predictor.predict(inputs, lengths=lengths).values
    # garbage (negative, huge) beyond each length, and ids shifted by the bucket count, change no prediction
    ids = inputs["text"]
    beyond = np.arange(ids.shape[1])[None, :] >= lengths["text"][:, None]
    garbage = ids.copy()
    garbage[beyond] = np.random.default_rng(0).integers(-(10**9), 10**9, int(beyond.sum()))
    np.testing.assert_array_equal(predictor.predict({**inputs, "text": garbage}, lengths=lengths).values, full)
    shifted = np.where(beyond, ids, ids + 32768)
    np.testing.assert_array_equal(predictor.predict({**inputs, "text": shifted}, lengths=lengths).values, full)
    bad = ids.copy()
    bad[3, 1] = -1
    with pytest.raises(ValueError, match=r"modality 'text': negative token id -1 at step 1"):
        predictor.predict({**inputs, "text": bad}, lengths=lengths)


def _missing(predictor, inputs: dict, lengths: dict, seed: int) -> tuple[np.ndarray, dict, np.ndarray]:
    """A random missing pattern (garbage in absent entries: negative ids, NaN features) and the predictor's values."""
    g = np.random.default_rng(seed)
    n = len(next(iter(inputs.values())))
    present = g.random((n, 3)) > 0.4
    present[~present.any(1), 0] = True
    x = {k: v.copy() for k, v in inputs.items()}
    x["text"][~present[:, 0]] = -5
    for j, name in ((1, "audio"), (2, "vision")):
        x[name][~present[:, j]] = np.nan
    return present, x, predictor.predict(x, present, lengths=lengths).values


def test_torchscript_export_of_a_token_encoder_matches_the_predictor(trained, tmp_path: Path) -> None:
    run_dir, path = trained
    out = tmp_path / "model.pt"
    result = runner.invoke(app, ["export", str(run_dir), "--format", "torchscript", "--out", str(out)])
    assert result.exit_code == 0, result.output
    extra = {"robult.json": ""}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        module = torch.jit.load(str(out), _extra_files=extra)
    layout = json.loads(extra["robult.json"])["inputs"]
    assert layout[1] == {"name": "text", "shape": ["B", 12], "dtype": "int64"}
    predictor = robult.load(run_dir)
    inputs, lengths, _ = _test_inputs(path)
    present, x, expected = _missing(predictor, inputs, lengths, seed=1)
    args = [torch.from_numpy(present)]
    for name in ("text", "audio", "vision"):
        args += [torch.from_numpy(x[name]), torch.from_numpy(lengths[name])]
    with torch.no_grad():
        got = module(*args).numpy()
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)
    assert np.abs(expected).max() > 0.1  # not a constant model


def test_onnx_export_of_a_token_encoder_matches_the_predictor(trained, tmp_path: Path) -> None:
    """The token encoder's GRU is unrolled like a sequence modality's; onnxruntime predicts what the predictor does."""
    pytest.importorskip("onnx", reason="onnx (robult[onnx]) is not installed")
    ort = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed")
    run_dir, path = trained
    out = tmp_path / "model.onnx"
    result = runner.invoke(app, ["export", str(run_dir), "--format", "onnx", "--out", str(out)])
    assert result.exit_code == 0, result.output
    predictor = robult.load(run_dir)
    inputs, lengths, _ = _test_inputs(path)
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    assert names == ["present", "text", "text_lengths", "audio", "audio_lengths", "vision", "vision_lengths"]
    for seed in (2, 3):
        present, x, expected = _missing(predictor, inputs, lengths, seed)
        feed = {"present": present, **x, **{f"{k}_lengths": v for k, v in lengths.items()}}
        np.testing.assert_allclose(session.run(None, feed)[0], expected, rtol=0, atol=1e-5)
