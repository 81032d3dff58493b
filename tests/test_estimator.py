"""robult.RobultClassifier / RobultRegressor: scikit-learn estimators on per-modality arrays with missing rows and
unlabeled (-1 / NaN) targets, with the defaults a notebook user gets (progress bar, default threads)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.model_selection import cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

import robult
from robult import RobultClassifier, RobultRegressor

SMALL = {
    "max_epochs": 8,
    "batch_size": 64,
    "lr": 0.01,
    "config_overrides": {"model.hidden_dim": 16, "model.encoder_hidden": [16]},
}


def _data(n: int = 240, seed: int = 0) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """Two modalities that both see the class, 20% of rows lacking ``a`` (NaN), 70% unlabeled (-1)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    a = (rng.standard_normal((n, 6)) + 2.0 * y[:, None]).astype(np.float32)
    b = (rng.standard_normal((n, 4)) + 2.0 * y[:, None]).astype(np.float32)
    a[rng.random(n) < 0.2] = np.nan
    y_semi = y.copy()
    y_semi[rng.random(n) < 0.7] = -1
    return {"a": a, "b": b}, y, y_semi


def test_fit_predict_with_missing_rows_and_unlabeled() -> None:
    X, y, y_semi = _data()
    clf = RobultClassifier(**SMALL).fit(X, y_semi)  # defaults otherwise: progress bar on, default threads
    assert list(clf.classes_) == [0, 1, 2]
    assert clf.labels_used_["source"] == "given"
    # every labeled row trains except the validation share (stratified 0.1 of the labeled rows)
    n_val = 240 - clf.labels_used_["n_train"]
    assert clf.labels_used_["n_labeled"] == int((y_semi >= 0).sum()) - n_val and 5 <= n_val <= 10
    pred = clf.predict(X)
    assert pred.shape == (240,) and set(np.unique(pred)) <= {0, 1, 2}
    assert clf.score(X, y) > 0.8  # well-separated classes
    proba = clf.predict_proba(X)
    assert proba.shape == (240, 3) and np.allclose(proba.sum(axis=1), 1.0, atol=1e-5)
    only_b = clf.predict({"b": X["b"]})  # a modality left out: absent for every row
    assert (only_b == y).mean() > 0.75
    # the same rows and labels give the same model (seeded)
    again = RobultClassifier(**SMALL).fit(X, y_semi)
    np.testing.assert_array_equal(again.predict_proba(X), proba)
    # a list of arrays names the modalities m0, m1
    assert RobultClassifier(**{**SMALL, "max_epochs": 1}).fit([X["a"], X["b"]], y_semi).modality_names_ == [
        "m0",
        "m1",
    ]


def test_string_classes_and_save_load(tmp_path: Path) -> None:
    X, _, y_semi = _data(seed=1)
    names = np.array(["cat", "dog", "eel"])
    labels = np.where(y_semi >= 0, names[np.maximum(y_semi, 0)], "-1")
    clf = RobultClassifier(**SMALL).fit(X, labels)
    assert list(clf.classes_) == ["cat", "dog", "eel"]
    assert set(clf.predict(X)) <= set(names)
    path = clf.save(tmp_path / "model")
    loaded = robult.load(path)
    present = np.stack([~np.isnan(X["a"]).all(axis=1), np.ones(240, dtype=bool)], axis=1)
    pred = loaded.predict(X, present)
    np.testing.assert_allclose(pred.probabilities, clf.predict_proba(X), atol=1e-6)
    assert pred.class_names == ["cat", "dog", "eel"]


def test_clone_params_and_cross_val_score_on_one_array() -> None:
    X, y, y_semi = _data(seed=2)
    flat = np.hstack([X["a"], X["b"]])
    clf = RobultClassifier(modalities=[6, 4], **SMALL)
    params = clf.get_params()
    assert params["max_epochs"] == 8 and params["modalities"] == [6, 4] and params["method"] == "robult"
    twin = clone(clf).set_params(lr=0.02)
    assert twin.lr == 0.02 and clf.lr == 0.01
    scores = cross_val_score(clf, flat, y_semi, cv=3)  # scored on each fold's labeled rows
    assert scores.shape == (3,) and scores.min() > 0.6
    # in a Pipeline: StandardScaler keeps NaN rows NaN, so they stay missing
    pipe = make_pipeline(StandardScaler(), RobultClassifier(modalities={"a": range(6), "b": range(6, 10)}, **SMALL))
    pipe.fit(flat, y_semi)
    assert pipe.score(flat, y) > 0.8


def test_regressor_with_nan_targets() -> None:
    rng = np.random.default_rng(3)
    n = 200
    z = rng.standard_normal(n)
    X = {"a": (z[:, None] + 0.1 * rng.standard_normal((n, 5))).astype(np.float32), "b": rng.standard_normal((n, 3))}
    y = 3.0 * z
    y_semi = y.copy()
    y_semi[rng.random(n) < 0.5] = np.nan
    reg = RobultRegressor(method="supervised", max_epochs=20, patience=0, lr=3e-3).fit(X, y_semi)
    assert reg.predict(X).shape == (n,)
    assert reg.score(X, y) > 0.5


def test_bad_inputs_are_one_line() -> None:
    X, _, y_semi = _data(n=60)
    with pytest.raises(ValueError, match=r"y: shape \(59,\)"):
        RobultClassifier(**SMALL).fit(X, y_semi[:59])
    bad = {k: v.copy() for k, v in X.items()}
    row = int(np.flatnonzero(~np.isnan(bad["a"]).any(axis=1))[0])
    bad["a"][row, 2] = np.nan
    with pytest.raises(ValueError, match=rf"modality 'a': row {row} holds NaN"):
        RobultClassifier(**SMALL).fit(bad, y_semi)
    with pytest.raises(ValueError, match="a classifier needs at least 2"):
        RobultClassifier(**SMALL).fit(X, np.where(y_semi >= 0, 1, -1))
    with pytest.raises(ValueError, match=r"modalities=\[5, 4\]"):
        RobultClassifier(modalities=[5, 4], **SMALL).fit(np.hstack([X["a"], X["b"]]), y_semi)
    with pytest.raises(ValueError, match="config_overrides: 'hidden_dim' is not a `section"):
        RobultClassifier(config_overrides={"hidden_dim": 3}).fit(X, y_semi)


def test_import_robult_does_not_import_sklearn() -> None:
    code = "import sys, robult; assert 'sklearn' not in sys.modules and 'lightning' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_readme_estimator_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    import re

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme.split("## Your own data: `fit`, or one command", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    assert "max_epochs=30" in code, "README example changed; update this test"
    monkeypatch.chdir(tmp_path)
    exec(compile(code.replace("max_epochs=30", "max_epochs=3"), "README.md", "exec"), {})  # as printed, shorter
    score = float(capsys.readouterr().out.split()[0])
    assert 0.0 <= score <= 1.0 and robult.load(tmp_path / "my_model").modality_names == ["audio", "text"]
