"""Probes, representation geometry and ``robult inspect``: controls on planted and random targets, the known factors
of the generated data, and the command with its defaults on a tiny run."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from robult import TaskSpec
from robult.cli import app
from robult.config import load_config
from robult.data.registry import load_dataset
from robult.data.synthetic import SyntheticConfig, generate_synthetic, split_factors
from robult.inspection import (
    Representations,
    geometry,
    inspect_run,
    logistic_probe,
    pca_2d,
    probe_table,
    r2_score,
    read_probes,
    representations,
    ridge_probe,
)
from robult.methods import build_method
from robult.training.run import train_run

PNG = b"\x89PNG\r\n\x1a\n"


def _features(seed: int, n: int, p: int = 16) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, p))


def test_r2_score_golden_values() -> None:
    y = np.array([1.0, 2.0, 3.0, 4.0])
    assert r2_score(y, y) == pytest.approx(1.0)
    assert r2_score(y, np.full(4, 2.5)) == pytest.approx(0.0)  # the mean: no better than the baseline
    assert r2_score(y, np.array([2.0, 2.0, 3.0, 3.0])) == pytest.approx(1 - 2 / 5)
    two = np.stack([y, -y], axis=1)
    assert r2_score(two, np.stack([y, np.full(4, -2.5)], axis=1)) == pytest.approx(0.5)  # mean over columns


def test_ridge_probe_recovers_a_planted_factor_and_not_a_random_one() -> None:
    x_tr, x_te = _features(0, 600), _features(1, 300)
    w = np.random.default_rng(2).standard_normal((16, 2))
    noise = np.random.default_rng(3)
    planted_tr = x_tr @ w + 0.05 * noise.standard_normal((600, 2))
    planted_te = x_te @ w + 0.05 * noise.standard_normal((300, 2))
    r2, alpha = ridge_probe(x_tr, planted_tr, x_te, planted_te)
    assert r2 > 0.995 and alpha <= 1e-2  # positive control: a linear function of the features, little penalty
    random_tr, random_te = noise.standard_normal((600, 2)), noise.standard_normal((300, 2))
    r2, alpha = ridge_probe(x_tr, random_tr, x_te, random_te)
    assert -0.03 < r2 < 0.01 and alpha >= 10.0  # negative control: nothing held out to find, heavy penalty chosen
    # a factor behind a non-linearity is found only in part, and a shifted, scaled copy of the features changes nothing
    bent_tr, bent_te = np.tanh(2 * planted_tr), np.tanh(2 * planted_te)
    partial, _ = ridge_probe(x_tr, bent_tr, x_te, bent_te)
    assert 0.3 < partial < 0.95
    assert ridge_probe(3 * x_tr + 7, bent_tr, 3 * x_te + 7, bent_te)[0] == pytest.approx(partial, abs=1e-9)


def test_logistic_probe_recovers_planted_classes_and_not_random_ones() -> None:
    x_tr, x_te = _features(0, 600, 8), _features(1, 300, 8)
    w = np.random.default_rng(2).standard_normal((8, 4))
    acc, _ = logistic_probe(x_tr, (x_tr @ w).argmax(1), x_te, (x_te @ w).argmax(1))
    assert acc > 0.9  # positive control: linearly separable classes
    rng = np.random.default_rng(4)
    acc, _ = logistic_probe(x_tr, rng.integers(0, 4, 600), x_te, rng.integers(0, 4, 300))
    assert abs(acc - 0.25) < 0.07  # negative control: chance


def _reps(shared: np.ndarray, specific: np.ndarray, fused: np.ndarray, target: np.ndarray) -> Representations:
    n, m, _ = shared.shape
    return Representations(shared.copy(), shared, specific, fused, np.ones((n, m), bool), target)


def test_probe_table_reads_each_representation_and_masks_absent_rows() -> None:
    """Crafted representations: Z holds the shared factor, U^m its own unique factor; the table says so."""
    rng = np.random.default_rng(0)

    def split(n: int) -> tuple[Representations, dict[str, np.ndarray]]:
        shared_f, unique_f = rng.standard_normal((n, 1)), rng.standard_normal((n, 2))
        z = np.concatenate([shared_f, 0.01 * rng.standard_normal((n, 3))], 1)
        u = np.stack([np.concatenate([unique_f[:, m : m + 1], rng.standard_normal((n, 3))], 1) for m in (0, 1)], 1)
        reps = _reps(np.stack([z, z], 1), u, z, (shared_f[:, 0] > 0).astype(np.int64))
        return reps, {"redundant": shared_f, "unique:a": unique_f[:, :1], "unique:b": unique_f[:, 1:]}

    (train, f_tr), (test, f_te) = split(400), split(200)
    train.present[:50, 1] = False  # modality b absent in 50 training rows: its probes fit on 350
    train.shared[:50, 1] = np.nan  # absent rows hold NaN and are never read
    table = probe_table(train, test, ["a", "b"], TaskSpec("multiclass", num_classes=2), f_tr, f_te)
    score = {(p.representation, p.factor): p for p in table}
    assert score[("Z^a", "redundant")].value > 0.99 and score[("U^a", "unique:a")].value > 0.99
    assert score[("U^b", "unique:b")].value > 0.99 and abs(score[("Z^a", "unique:a")].value) < 0.05
    assert abs(score[("U^a", "unique:b")].value) < 0.05  # U^a knows nothing of b's factor
    assert score[("Z^a", "label")].metric == "accuracy" and score[("Z^a", "label")].value > 0.95
    assert score[("Z^b", "redundant")].n_train == 350 and score[("Z^a", "redundant")].n_train == 400
    assert {p.representation for p in table} == {"H^a", "H^b", "Z^a", "Z^b", "U^a", "U^b", "S"}


def test_geometry_values_on_crafted_vectors() -> None:
    e = np.eye(4, dtype=np.float32)
    shared = np.stack([e * 5, e * 2], 1)  # Z^a and Z^b parallel, four orthogonal rows
    reps = Representations(shared, shared, -shared, e, np.ones((4, 2), bool), np.zeros(4))
    geo = geometry(reps, ["a", "b"])
    assert geo["alignment Z^a-S"] == pytest.approx(0.0, abs=1e-7)
    assert geo["alignment Z^a-Z^b"] == pytest.approx(0.0, abs=1e-7)
    assert geo["uniformity S"] == pytest.approx(-4.0)  # orthonormal: log exp(-2 · 2)
    assert geo["uniformity U^b"] == pytest.approx(-4.0)


def test_pca_2d_finds_the_main_axes() -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((500, 3)) * np.array([10.0, 3.0, 0.1])
    coords, share = pca_2d(x)
    assert coords.shape == (500, 2) and share[0] > 0.9 and share[0] + share[1] > 0.999
    assert abs(np.corrcoef(coords[:, 0], x[:, 0])[0, 1]) > 0.99


def test_split_factors_are_the_generated_rows_of_each_split() -> None:
    options = {"n_samples": 300}
    bundle = load_dataset("synthetic", seed=1, **options)
    data = generate_synthetic(SyntheticConfig(n_samples=300))
    factors = split_factors(bundle.test, "synthetic", options)
    assert sorted(factors) == sorted(data.factors) and "nuisance:m2" in factors and "synergy:m0" in factors
    rows = bundle.test.source_rows.numpy()
    np.testing.assert_array_equal(np.asarray(bundle.test.inputs["m1"]), data.inputs["m1"][rows])
    np.testing.assert_array_equal(factors["unique:m1"], data.factors["unique:m1"][rows])
    with pytest.raises(ValueError, match="has no known factors"):
        split_factors(bundle.test, "handwritten")


def test_a_model_without_z_and_u_is_refused_with_one_line() -> None:
    bundle = load_dataset("synthetic", n_samples=200)
    model, _ = build_method("supervised", bundle.modalities, bundle.task)
    with pytest.raises(ValueError, match="'supervised' model has no shared"):
        representations(model, bundle.test, method="supervised")
    robult_model, _ = build_method("robult", bundle.modalities, bundle.task)
    test = bundle.test.with_present(
        torch.ones(len(bundle.test), 3, dtype=torch.bool).index_fill_(1, torch.tensor([2]), False)
    )
    reps = representations(robult_model, test)
    assert reps.shared.shape == (len(test), 3, 64) and np.isfinite(reps.fused).all()
    assert np.isnan(reps.specific[:, 2]).all() and np.isfinite(reps.specific[:, :2]).all()  # absent: NaN, not read


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("inspect")
    cfg = load_config(
        None,
        [
            "dataset.options.n_samples=400",
            "train.max_epochs=3",
            "train.patience=1",
            "eval.rates=[0.0]",
            f"out_dir={out}",
            "name=tiny",
        ],
    )
    return train_run(cfg).run_dir


def test_inspect_command_with_its_defaults_writes_what_the_python_call_returns(tiny_run: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["inspect", str(tiny_run)])
    assert result.exit_code == 0, result.output
    out = tiny_run / "inspect"
    for name in ("probes.png", "alignment.png", "embedding.png"):
        data = (out / name).read_bytes()
        assert data[:8] == PNG and len(data) > 20_000, name
    assert "Z^m0" in result.output and "unique:m0 (R2)" in result.output and "label (acc)" in result.output
    written = read_probes(out / "probes.csv")
    again = inspect_run(tiny_run, tmp_path / "again", plots=False)  # deterministic: the same numbers
    assert [(p.representation, p.factor, p.value) for p in written] == [
        (p.representation, p.factor, p.value) for p in again.probes
    ]
    assert len(written) == 10 * 10  # (H, Z, U) x 3 modalities + S; 9 factors + the label
    doc = json.loads((out / "inspect.json").read_text())
    assert doc["geometry"] == pytest.approx(again.geometry) and doc["weights"] == "model"
    assert doc["epoch"] == json.loads((tiny_run / "model" / "model.json").read_text())["best_epoch"]
    # the generated factors: each H^m holds its own unique factor, not another modality's
    assert again.probe("H^m0", "unique:m0") > 0.3 and abs(again.probe("H^m0", "unique:m1")) < 0.1
    assert all(0.0 <= v <= 4.0 for k, v in again.geometry.items() if k.startswith("alignment"))
    assert not (tmp_path / "again" / "probes.png").exists()


def test_inspect_last_weights_and_bad_input(tiny_run: Path, tmp_path: Path) -> None:
    last = inspect_run(tiny_run, tmp_path / "last", plots=False, weights="last")
    assert last.epoch == 2  # three epochs trained: the last checkpoint is epoch 2
    result = CliRunner().invoke(app, ["inspect", str(tiny_run), "--weights", "first", "--out", str(tmp_path / "x")])
    assert result.exit_code == 2 and "unknown weights 'first'" in result.output
    result = CliRunner().invoke(app, ["inspect", str(tmp_path / "nosuch")])
    assert result.exit_code == 2 and "no such run" in result.output
    assert len([line for line in result.output.splitlines() if line.strip()]) == 1
    assert math.isfinite(last.probe("S", "label"))


def test_last_weights_that_do_not_fit_the_model_are_one_line_naming_the_file_and_key(tiny_run: Path) -> None:
    """``weights='last'`` into a model the checkpoint was not trained for: one line naming the checkpoint and the
    first key that does not fit (the trainer's own check, not torch's wording)."""
    from robult.inspection.run import _load_last

    with pytest.raises(ValueError) as info:
        _load_last(torch.nn.Linear(3, 2), tiny_run)
    line = str(info.value)
    assert "\n" not in line and line.startswith(f"{tiny_run / 'checkpoints' / 'last.ckpt'}: does not fit"), line
    assert "it lacks 'weight'" in line, line
