"""The model artefact, ``robult.load`` / ``Predictor.predict``, ``robult predict`` / ``export`` / ``config show``.

Tiny seeded runs (synthetic data and user-format directories written here) are trained once per module. The central
check: a predictor loaded from a run, fed the *raw* test inputs and the saved masks, reproduces ``robult evaluate``'s
metrics for every protocol setting, for every task kind.
"""

from __future__ import annotations

import csv
import json
import math
import re
import shlex
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import robult
from robult.cli import app
from robult.config import describe_config, load_config
from robult.evaluation.metrics import compute_metrics
from robult.inference import ArtefactError, Predictor
from robult.specs import all_subsets
from robult.utils.io import ChecksumError

from ..conftest import TINY_TWO_EPOCHS

runner = CliRunner()
SYNTH = ["dataset.options.n_samples=240", "dataset.options.modality_dims=[6, 5, 4]"]


def _user_dir(root: Path, kind: str, seed: int) -> dict:
    """A user-format dataset on a raw scale (``standardize: true``), with missing entries and a fixed split."""
    from robult.data.user import write_user_dataset

    g = np.random.default_rng(seed)
    n = 200
    a = (5.0 + 3.0 * g.standard_normal((n, 6))).astype(np.float32)
    s = (-2.0 + 0.5 * g.standard_normal((n, 4, 3))).astype(np.float32)
    s_len = g.integers(1, 5, n)
    score = (a[:, 0] - 5.0) / 3.0 + (s[:, 0, 0] + 2.0) / 0.5  # about N(0, 2): every class is frequent
    if kind == "regression":
        labels = np.clip(score, -3, 3).astype(np.float32)
        task = {"kind": "regression", "target_range": [-3, 3]}
    else:
        labels = np.digitize(score, [-1.0, 0.0, 1.0]).astype(np.int64)
        task = {"kind": "multiclass", "num_classes": 4, "label_names": ["low", "mid", "high", "top"]}
    present = g.random((n, 2)) > 0.25
    present[~present.any(1), 0] = True
    a[~present[:, 0]] = np.nan  # absent entries hold NaN: never read
    split = np.zeros(n, dtype=np.int64)
    split[140:170], split[170:] = 1, 2
    directory = root / f"user_{kind}"
    write_user_dataset(
        directory,
        {"a": a, "s": s},
        labels,
        task,
        name=f"user_{kind}",
        lengths={"s": s_len},
        split=split,
        present=present,
        standardize=True,
    )
    test = split == 2
    return {
        "dir": directory,
        "inputs": {"a": a[test], "s": s[test]},
        "lengths": {"s": s_len[test]},
        "present": present[test],
        "target": labels[test],
    }


CASES = {
    "multiclass": ("synthetic", ["train.method=robult"]),
    "binary": ("synthetic", ["dataset.options.task=binary", "train.method=supervised"]),
    "multilabel": ("synthetic", ["dataset.options.task=multilabel", "train.method=robult"]),
    "regression": ("user", ["train.method=robult", "model.use_fused_when_complete=true"]),
    "user_multiclass": ("user", ["train.method=moddrop"]),
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Kind -> (run_dir, raw test data), trained on first use."""
    root = tmp_path_factory.mktemp("predictor")
    cache: dict = {}

    def get(kind: str) -> tuple[Path, dict]:
        if kind not in cache:
            from robult.training.run import load_bundle, train_run

            source, extra = CASES[kind]
            opts = [*TINY_TWO_EPOCHS, f"out_dir={root / kind}", f"name={kind}", *extra]
            if source == "user":
                data = _user_dir(root, "regression" if kind == "regression" else "multiclass", seed=len(kind))
                opts += ["dataset.name=user", f"dataset.options.path={data['dir']}", "train.label_ratio=0.3"]
            else:
                opts += SYNTH
            cfg = load_config(None, opts)
            result = train_run(cfg)
            if source != "user":
                test = load_bundle(cfg).test
                data = {
                    "inputs": {k: np.asarray(v) for k, v in test.inputs.items()},
                    "lengths": {},
                    "present": test.present.numpy(),
                    "target": test.target.numpy(),
                }
            cache[kind] = (result.run_dir, data)
        return cache[kind]

    return get


def _slice(data: dict, keep: np.ndarray) -> tuple[dict, dict]:
    return {k: v[keep] for k, v in data["inputs"].items()}, {k: v[keep] for k, v in data["lengths"].items()}


def _check_metrics(predictor: Predictor, data: dict, present: np.ndarray, expected: dict, count: int) -> None:
    keep = present.any(axis=1)
    assert int(keep.sum()) == count
    inputs, lengths = _slice(data, keep)
    out = predictor.predict(inputs, present[keep], lengths=lengths)
    got = compute_metrics(torch.from_numpy(out.scores), torch.from_numpy(data["target"][keep]), predictor.task)
    assert got.keys() == expected.keys()
    for metric, value in expected.items():
        assert got[metric] == pytest.approx(value, abs=1e-6, nan_ok=True), metric


@pytest.mark.parametrize("kind", list(CASES))
def test_predictions_reproduce_robult_evaluate(runs, kind: str) -> None:
    """Raw test inputs + the saved masks through ``robult.load(run).predict`` give ``robult evaluate``'s metrics
    for every subset and every missing rate (the loader's normalisation is applied by the predictor)."""
    from robult.training.run import evaluate_run

    run_dir, data = runs(kind)
    ev = evaluate_run(run_dir)
    predictor = robult.load(run_dir)
    assert predictor.task.kind.value == ("multiclass" if kind == "user_multiclass" else kind)
    if CASES[kind][0] == "user":
        assert set(predictor.normalization) == {"a", "s"}  # standardize: true, statistics of the training split
    names = predictor.modality_names
    for subset in all_subsets(names):
        key = "+".join(subset)
        column = np.array([n in subset for n in names])
        present = data["present"] & column[None]
        _check_metrics(predictor, data, present, ev.subsets[key], ev.counts[f"all-subsets/{key}"])
    for rate, file in ev.mask_files.items():
        mask = np.load(file, allow_pickle=False)
        _check_metrics(predictor, data, data["present"] & mask, ev.random_rate[rate], ev.counts[f"random-rate/{rate}"])


def test_scores_equal_the_evaluation_forward_pass(runs) -> None:
    """Not only the metrics: the predictor's raw scores equal the model's on the loader's (normalised) test split."""
    from robult.training.run import load_bundle

    run_dir, data = runs("regression")
    predictor = robult.load(run_dir)
    test = load_bundle(predictor.config).test
    batch = test.__getitems__(range(len(test)))
    model = predictor.model.eval()
    with torch.no_grad():
        ref = model.predict_subsets(model(batch, with_reconstruction=False), [predictor.modality_names]).predictions[0]
    out = predictor.predict(data["inputs"], data["present"], lengths=data["lengths"])
    np.testing.assert_allclose(out.scores, ref.numpy(), rtol=0, atol=1e-6)
    assert out.values is not None and out.values.shape == (len(test),)


def test_saved_artefact_predicts_identically_in_a_fresh_process(runs, tmp_path: Path) -> None:
    run_dir, data = runs("regression")
    predictor = robult.load(run_dir)
    copy = predictor.save(tmp_path / "copy")
    assert sorted(p.name for p in copy.iterdir()) == [
        "config.yaml",
        "manifest.json",
        "model.json",
        "normalization.safetensors",
        "weights.safetensors",
    ]
    for name in ("a", "s"):
        np.save(tmp_path / f"{name}.npy", data["inputs"][name])
    np.save(tmp_path / "s_len.npy", data["lengths"]["s"])
    np.save(tmp_path / "present.npy", data["present"])
    code = (
        "import numpy as np, robult\n"
        f"d = {str(tmp_path)!r}\n"
        "p = robult.load(d + '/copy')\n"
        "x = {k: np.load(f'{d}/{k}.npy') for k in ('a', 's')}\n"
        "out = p.predict(x, np.load(d + '/present.npy'), lengths={'s': np.load(d + '/s_len.npy')})\n"
        "np.save(d + '/scores.npy', out.scores)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    here = predictor.predict(data["inputs"], data["present"], lengths=data["lengths"]).scores
    assert np.array_equal(np.load(tmp_path / "scores.npy"), here)


# ------------------------------------------------------------------------------------------ artefact integrity


def test_loading_never_unpickles(runs, monkeypatch: pytest.MonkeyPatch) -> None:
    import pickle

    run_dir, _ = runs("multiclass")

    def refuse(*_a, **_k):
        raise AssertionError("unpickling while loading a model artefact")

    for target, name in ((pickle, "load"), (pickle, "loads"), (torch, "load")):
        monkeypatch.setattr(target, name, refuse)
    assert robult.load(run_dir).modality_names == ["m0", "m1", "m2"]


def test_altered_or_incompatible_artefacts_are_refused_in_one_line(runs, tmp_path: Path) -> None:
    run_dir, _ = runs("multiclass")
    model = tmp_path / "model"
    shutil.copytree(run_dir / "model", model)
    weights = model / "weights.safetensors"
    blob = bytearray(weights.read_bytes())
    blob[-1] ^= 0xFF
    weights.write_bytes(bytes(blob))
    with pytest.raises(ChecksumError, match=r"weights\.safetensors: SHA-256") as err:
        robult.load(model)
    assert "\n" not in str(err.value)

    shutil.rmtree(model)
    shutil.copytree(run_dir / "model", model)
    manifest = json.loads((model / "manifest.json").read_text())
    manifest["format_version"] = 2
    (model / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ArtefactError, match=r"format version 2 .* reads version 1") as err:
        robult.load(model)
    assert "\n" not in str(err.value)

    bare = tmp_path / "old_run"
    shutil.copytree(run_dir, bare, ignore=shutil.ignore_patterns("model"))
    with pytest.raises(ArtefactError, match="--format artefact"):
        robult.load(bare)
    with pytest.raises(FileExistsError, match="not a robult model directory"):
        robult.load(run_dir).save(bare)


def test_export_artefact_for_a_run_without_one(runs, tmp_path: Path) -> None:
    """`robult export RUN --format artefact` rebuilds <run>/model/ from the checkpoint: same predictions."""
    run_dir, data = runs("user_multiclass")
    old = tmp_path / "old"
    shutil.copytree(run_dir, old, ignore=shutil.ignore_patterns("model"))
    result = runner.invoke(app, ["export", str(old), "--format", "artefact"])
    assert result.exit_code == 0, result.output
    a = robult.load(old).predict(data["inputs"], data["present"], lengths=data["lengths"])
    b = robult.load(run_dir).predict(data["inputs"], data["present"], lengths=data["lengths"])
    assert np.array_equal(a.scores, b.scores)


# ----------------------------------------------------------------------------------------------- inputs


def test_missing_patterns_nan_and_per_modality(runs) -> None:
    run_dir, data = runs("multiclass")
    p = robult.load(run_dir)
    x = {k: v[:20].copy() for k, v in data["inputs"].items()}
    g = np.random.default_rng(0)
    present = g.random((20, 3)) > 0.5
    present[~present.any(1), 1] = True
    ref = p.predict(x, present, per_modality=True)
    # NaN in absent entries is ignored; the same entries zeroed give the same prediction
    nan_x = {k: v.copy() for k, v in x.items()}
    for m, name in enumerate(p.modality_names):
        nan_x[name][~present[:, m]] = np.nan
    assert np.array_equal(p.predict(nan_x, present).scores, ref.scores)
    # torch tensors, a mapping of columns and a modality left out of the dict mean the same
    as_map = {name: present[:, m] for m, name in enumerate(p.modality_names)}
    assert np.array_equal(p.predict({k: torch.from_numpy(v) for k, v in x.items()}, as_map).scores, ref.scores)
    only = p.predict({"m0": x["m0"], "m2": x["m2"]})
    both = np.stack([np.ones(20, bool), np.zeros(20, bool), np.ones(20, bool)], axis=1)
    assert np.array_equal(only.scores, p.predict(x, both).scores)
    # probabilities, labels and per-modality outputs
    assert ref.probabilities is not None and np.allclose(ref.probabilities.sum(1), 1.0, atol=1e-6)
    assert np.array_equal(ref.labels, ref.scores.argmax(1))
    per = ref.per_modality()
    for m, name in enumerate(p.modality_names):
        assert np.isnan(per[name][~present[:, m]]).all() and not np.isnan(per[name][present[:, m]]).any()
    single = present.sum(1) == 1  # one modality present: the aggregate is that modality's own prediction
    for i in np.flatnonzero(single):
        name = p.modality_names[int(np.flatnonzero(present[i])[0])]
        np.testing.assert_allclose(ref.probabilities[i], per[name][i], atol=1e-6)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("nan_present", r"modality 'm1': row 3 holds NaN or Inf but is marked present"),
        ("empty_row", r"row 2 has no modality present"),
        ("unknown", r"unknown modality 'video' in inputs"),
        ("rows", r"modality 'm1' has 9 rows, modality 'm0' has 10"),
        ("shape", r"modality 'm2' has per-sample shape \(5,\), expected \(4\)"),
        ("present_shape", r"present has shape \(10, 2\), expected \(10, 3\)"),
        ("present_without_input", r"modality 'm2' is marked present in row 0 but has no input"),
    ],
)
def test_input_errors_are_one_line_naming_the_culprit(runs, change: str, message: str) -> None:
    run_dir, data = runs("multiclass")
    p = robult.load(run_dir)
    x = {k: v[:10].copy() for k, v in data["inputs"].items()}
    present: np.ndarray | None = np.ones((10, 3), dtype=bool)
    if change == "nan_present":
        x["m1"][3, 2] = np.nan
    elif change == "empty_row":
        present[2] = False
    elif change == "unknown":
        x["video"] = x["m0"]
    elif change == "rows":
        x["m1"] = x["m1"][:9]
    elif change == "shape":
        x["m2"] = np.zeros((10, 5), np.float32)
    elif change == "present_shape":
        present = present[:, :2]
    elif change == "present_without_input":
        del x["m2"]
    with pytest.raises(ValueError, match=message) as err:
        p.predict(x, present)
    assert "\n" not in str(err.value)


# ------------------------------------------------------------------------------------------------------ CLI


def _input_dir(root: Path, data: dict, *, labeled: bool = False, task: str | None = None) -> Path:
    """The raw test arrays of a run (inputs, lengths, presence) as a user-format directory; with ``labeled``, also
    its labels (the first 3 rows unlabeled), the name ``other``, ``task`` when given and a split file that does not
    exist (``evaluate --input`` scores every row)."""
    root.mkdir()
    for name, arr in data["inputs"].items():
        np.save(root / f"{name}.npy", arr)
    for name, arr in data["lengths"].items():
        np.save(root / f"{name}_len.npy", arr)
    np.save(root / "present.npy", data["present"])
    head, tail = "", "present: present.npy\n"
    if labeled:
        mask = np.ones(len(data["target"]), dtype=bool)
        mask[:3] = False
        target = data["target"].copy()
        if target.dtype.kind == "i":
            target[:3] = -1  # unlabeled rows may hold anything
        np.save(root / "labels.npy", target)
        np.save(root / "labeled.npy", mask)
        head = "name: other\n" + (f"task: {task}\n" if task else "")
        tail = "labels: labels.npy\nlabeled: labeled.npy\npresent: present.npy\nsplit: nosuch.npy\n"
    (root / "dataset.yaml").write_text(
        head + "modalities:\n"
        "  - {name: a, kind: vector, file: a.npy}\n"
        "  - {name: s, kind: sequence, file: s.npy, lengths: s_len.npy}\n" + tail
    )
    return root


def test_cli_predict_writes_one_row_per_sample(runs, tmp_path: Path) -> None:
    """`robult predict RUN --input DIR --out FILE.csv` on a user-format directory without labels."""
    run_dir, data = runs("user_multiclass")
    inp = _input_dir(tmp_path / "new", data)
    out = tmp_path / "pred.csv"
    result = runner.invoke(app, ["predict", str(run_dir), "--input", str(inp), "--out", str(out)])
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(out.open()))
    n = len(data["target"])
    assert len(rows) == n and f"wrote {n} predictions" in result.output
    assert list(rows[0]) == ["index", "label", "prob_low", "prob_mid", "prob_high", "prob_top", "present"]
    ref = robult.load(run_dir).predict(data["inputs"], data["present"], lengths=data["lengths"])
    probs = np.array([[float(r[f"prob_{c}"]) for c in ("low", "mid", "high", "top")] for r in rows], np.float32)
    assert np.array_equal(probs, ref.probabilities)  # 9 significant digits round-trip float32
    assert [r["label"] for r in rows] == [["low", "mid", "high", "top"][i] for i in ref.labels]
    assert [int(r["index"]) for r in rows] == list(range(n))
    assert {r["present"] for r in rows} <= {"a", "s", "a+s"}

    (inp / "dataset.yaml").write_text("modalities:\n  - {name: b, kind: vector, file: a.npy}\n")
    bad = runner.invoke(app, ["predict", str(run_dir), "--input", str(inp), "--out", str(out)])
    assert bad.exit_code == 2 and "modality 'b' is not one of the model's ['a', 's']" in bad.output


def test_cli_evaluate_writes_json(runs, tmp_path: Path) -> None:
    run_dir, _ = runs("multiclass")
    out = tmp_path / "result.json"
    result = runner.invoke(app, ["evaluate", str(run_dir), "--out", str(out)])
    assert result.exit_code == 0, result.output
    written = json.loads(out.read_text())
    saved = json.loads((run_dir / "result.json").read_text())
    assert written["metric"] == saved["metric"] == "accuracy"
    assert written["subsets"] == saved["test"]["subsets"]
    assert written["random_rate"] == saved["test"]["random_rate"]


def test_cli_version_and_config_show() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.strip() == f"robult {robult.__version__}"
    rows = describe_config()
    assert all(meaning for _, _, meaning in rows), [k for k, _, m in rows if not m]  # every key documented
    shown = runner.invoke(app, ["config", "show"])
    assert shown.exit_code == 0
    for key, _default, _ in rows:
        assert f"{key}  " in shown.output or f"{key} " in shown.output, key
    assert len(rows) == len({k for k, _, _ in rows}) > 50
    by_method = dict((k, v) for k, v, _ in describe_config("robult_no_rec"))
    assert by_method["loss.lambda_rec"] == 0.0 and by_method["train.method"] == "robult_no_rec"
    shown = runner.invoke(app, ["config", "show", "--method", "moddrop"])
    assert "[method 'moddrop' uses 0.5 when unset]" in shown.output
    bad = runner.invoke(app, ["config", "show", "--method", "nosuch"])
    assert bad.exit_code == 2 and "unknown method 'nosuch'" in bad.output


def test_cli_train_flags(tmp_path: Path) -> None:
    out = tmp_path / "runs"
    args = ["train", "--dataset", "synthetic", "--method", "supervised", "--label-ratio", "0.1"]
    args += ["--data-dir", str(tmp_path), "--set", f"out_dir={out}", "--set", "train.max_epochs=1"]
    for opt in [*TINY_TWO_EPOCHS[1:], *SYNTH]:
        args += ["--set", opt]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    run_dir = out / "synthetic-supervised-r0.1-s0"
    cfg = load_config(run_dir / "config.yaml")
    assert (cfg.dataset.name, cfg.train.method, cfg.train.label_ratio) == ("synthetic", "supervised", 0.1)
    assert cfg.dataset.data_dir == str(tmp_path)
    assert robult.load(run_dir).info["method"] == "supervised"


# --------------------------------------------------------------------------------------------------- export


def _random_missing(predictor: Predictor, data: dict, g: np.random.Generator) -> tuple[np.ndarray, dict, np.ndarray]:
    """A random missing pattern inside the data's own (each entry kept with probability 0.6; a sample left with none
    keeps its own), the raw inputs with NaN in the absent entries, and the predictor's outputs on them (values or
    probabilities)."""
    n, m = len(data["target"]), len(predictor.modality_names)
    present = (g.random((n, m)) > 0.4) & data["present"]
    present[~present.any(1)] = data["present"][~present.any(1)]
    x = {k: v.copy() for k, v in data["inputs"].items()}
    for j, name in enumerate(predictor.modality_names):
        x[name][~present[:, j]] = np.nan
    ref = predictor.predict(x, present, lengths=data["lengths"])
    return present, x, ref.values if ref.values is not None else ref.probabilities


@pytest.mark.parametrize("kind", ["multiclass", "regression", "binary"])
def test_torchscript_export_matches_the_predictor(runs, tmp_path: Path, kind: str) -> None:
    """The exported module, fed raw inputs and random missing patterns (NaN in absent entries), predicts what the
    predictor predicts."""
    run_dir, data = runs(kind)
    out = tmp_path / "model.pt"
    result = runner.invoke(app, ["export", str(run_dir), "--format", "torchscript", "--out", str(out)])
    assert result.exit_code == 0, result.output
    extra = {"robult.json": ""}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # TorchScript is deprecated in torch 2.13 (still works)
        module = torch.jit.load(str(out), _extra_files=extra)
    layout = json.loads(extra["robult.json"])["inputs"]
    predictor = robult.load(run_dir)
    present, x, expected = _random_missing(predictor, data, np.random.default_rng(1))
    args = [torch.from_numpy(present)]
    for spec in predictor.modalities:
        args.append(torch.from_numpy(x[spec.name]))
        if spec.is_sequential:
            args.append(torch.from_numpy(data["lengths"][spec.name]))
    assert [e["name"] for e in layout] == ["present", *(a for s in predictor.modalities for a in _names(s))]
    got = module(*args).numpy()  # as a user calls it: no torch.no_grad() needed
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)


def _names(spec) -> list[str]:
    return [spec.name, f"{spec.name}_lengths"] if spec.is_sequential else [spec.name]


def test_binary_and_multilabel_outputs(runs) -> None:
    for kind in ("binary", "multilabel"):
        run_dir, data = runs(kind)
        p = robult.load(run_dir)
        out = p.predict(data["inputs"], data["present"])
        probs = out.probabilities
        assert probs is not None and np.all((probs >= 0) & (probs <= 1))
        if kind == "binary":
            assert probs.shape == (len(out),) and np.array_equal(out.labels, (probs > 0.5).astype(int))
        else:
            assert probs.shape == (len(out), p.task.num_classes) and out.labels.shape == probs.shape
        assert not math.isnan(float(probs.sum()))


# --------------------------------------------------------------------------------------------------- README


def _readme_blocks() -> tuple[str, str]:
    text = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = text.split("## Predict with a trained model", 1)[1].split("\n## ", 1)[0]
    bash = re.search(r"```bash\n(.*?)```", section, re.S)
    python = re.search(r"```python\n(.*?)```", section, re.S)
    assert bash and python, "README: the prediction section needs a bash and a python block"
    return bash.group(1), python.group(1)


def test_readme_prediction_section_runs_as_printed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    """The README's commands (training made tiny with extra --set options) and its Python block, as printed."""
    bash, python = _readme_blocks()
    lines = [line.split("#", 1)[0].strip() for line in bash.strip().splitlines()]
    assert len(python.strip().splitlines()) <= 15
    monkeypatch.chdir(tmp_path)
    tiny = [a for opt in [*TINY_TWO_EPOCHS, "dataset.options.n_samples=240"] for a in ("--set", opt)]
    train, predict = (shlex.split(line) for line in lines)
    assert train[:2] == ["robult", "train"] and predict[:2] == ["robult", "predict"]
    result = runner.invoke(app, [*train[1:], *tiny])
    assert result.exit_code == 0, result.output
    new = tmp_path / "new_data"
    new.mkdir()
    g = np.random.default_rng(0)
    for name, d in (("m0", 32), ("m1", 24), ("m2", 16)):
        np.save(new / f"{name}.npy", g.standard_normal((5, d)).astype(np.float32))
    (new / "dataset.yaml").write_text(
        "modalities:\n" + "".join(f"  - {{name: m{i}, kind: vector, file: m{i}.npy}}\n" for i in range(3))
    )
    result = runner.invoke(app, predict[1:])
    assert result.exit_code == 0, result.output
    assert len((tmp_path / "predictions.csv").read_text().splitlines()) == 6
    capsys.readouterr()
    scope: dict = {}
    exec(compile(python, "README.md", "exec"), scope)  # the README's Python block, as printed
    out = scope["out"]
    assert out.labels.shape == (6,) and out.probabilities.shape == (6, 4)
    assert np.isnan(out.per_modality()["m0"][3:]).all()
    assert "[" in capsys.readouterr().out


# ------------------------------------------------------------------------------------- evaluate --input


@pytest.mark.parametrize("kind", ["user_multiclass", "regression"])
def test_cli_evaluate_on_another_dataset(runs, tmp_path: Path, kind: str) -> None:
    """`robult evaluate RUN --input DIR --out FILE`: every subset and every seeded random-rate mask scores what the
    predictor's predictions on the same raw arrays and masks score with robult.evaluation.metrics."""
    from robult.evaluation.protocols import random_rate_mask

    run_dir, data = runs(kind)
    task = "{kind: multiclass, num_classes: 4}" if kind == "user_multiclass" else None
    inp = _input_dir(tmp_path / "other", data, labeled=True, task=task)
    out = tmp_path / "result.json"
    result = runner.invoke(app, ["evaluate", str(run_dir), "--input", str(inp), "--out", str(out)])
    assert result.exit_code == 0, result.output
    written = json.loads(out.read_text())
    predictor = robult.load(run_dir)
    n = len(data["target"])
    assert written["counts"]["n"] == n and written["counts"]["labeled"] == n - 3
    metric = written["metric"]
    assert f"{metric} on {inp} per modality subset:" in result.output  # the input is named, not "test"
    assert f"{inp}: {n - 3} of {n} samples labeled" in result.output
    assert "test " not in result.output.replace(str(tmp_path), "")
    assert written["metric"] == ("accuracy" if kind == "user_multiclass" else "mae")
    names = predictor.modality_names
    scored = dict(data, target=data["target"][3:], inputs={k: v[3:] for k, v in data["inputs"].items()})
    scored["lengths"] = {k: v[3:] for k, v in data["lengths"].items()}
    for subset in all_subsets(names):
        key = "+".join(subset)
        present = data["present"][3:] & np.array([m in subset for m in names])[None]
        _check_metrics(predictor, scored, present, written["subsets"][key], written["counts"][f"all-subsets/{key}"])
    assert list(written["random_rate"]) == ["0.0", "0.5"] and written["mask_seed"] == 0
    for rate in (0.0, 0.5):
        mask = random_rate_mask(n, len(names), rate, 0).numpy()[3:]
        key = str(rate)
        count = written["counts"][f"random-rate/{key}"]
        _check_metrics(predictor, scored, data["present"][3:] & mask, written["random_rate"][key], count)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("shape", r"s\.npy: modality 's' has per-sample shape \(4, 2\), expected \(4, 3\)"),
        ("name", r"dataset\.yaml: modality 'b' is not one of the model's \['a', 's'\]"),
        ("task", r"dataset\.yaml: task is binary, the model was trained on multiclass with 4 classes"),
        ("classes", r"dataset\.yaml: task is multiclass with 3 classes, the model was trained on multiclass with 4"),
        ("labels", r"dataset\.yaml: labels: required to score"),
        ("rows", r"labels\.npy: 5 labels, but modality 'a' has \d+ rows"),
    ],
)
def test_cli_evaluate_input_errors_are_one_line(runs, tmp_path: Path, change: str, message: str) -> None:
    run_dir, data = runs("user_multiclass")
    inp = _input_dir(tmp_path / "other", data, labeled=True, task="{kind: multiclass, num_classes: 4}")
    yaml_file = inp / "dataset.yaml"
    text = yaml_file.read_text()
    if change == "shape":
        np.save(inp / "s.npy", data["inputs"]["s"][:, :, :2])
    elif change == "name":
        yaml_file.write_text(text.replace("name: a,", "name: b,"))
    elif change == "task":
        yaml_file.write_text(text.replace("{kind: multiclass, num_classes: 4}", "{kind: binary}"))
    elif change == "classes":
        yaml_file.write_text(text.replace("num_classes: 4", "num_classes: 3"))
    elif change == "labels":
        yaml_file.write_text(text.replace("labels: labels.npy\nlabeled: labeled.npy\n", ""))
    elif change == "rows":
        yaml_file.write_text(text.replace("labeled: labeled.npy\n", ""))
        np.save(inp / "labels.npy", data["target"][:5])
    result = runner.invoke(app, ["evaluate", str(run_dir), "--input", str(inp)])
    assert result.exit_code == 2, result.output
    assert re.search(message, result.output), result.output
    assert len(result.output.strip().splitlines()) == 1


# ---------------------------------------------------------------------------------------------- Parquet


@pytest.mark.parametrize("kind", ["user_multiclass", "regression"])
def test_cli_predict_writes_parquet(runs, tmp_path: Path, kind: str) -> None:
    """`--out FILE.parquet`: the CSV's columns, typed (index int64, probabilities / values float32, text labels)."""
    pq = pytest.importorskip("pyarrow.parquet", reason="pyarrow (robult[parquet]) is not installed")
    run_dir, data = runs(kind)
    inp = _input_dir(tmp_path / "new", data)
    out_pq, out_csv = tmp_path / "pred.parquet", tmp_path / "pred.csv"
    for out in (out_pq, out_csv):
        result = runner.invoke(app, ["predict", str(run_dir), "--input", str(inp), "--out", str(out)])
        assert result.exit_code == 0, result.output
    table = pq.read_table(out_pq).to_pydict()
    rows = list(csv.DictReader(out_csv.open()))
    assert list(table) == list(rows[0])
    assert table["index"] == list(range(len(rows)))
    ref = robult.load(run_dir).predict(data["inputs"], data["present"], lengths=data["lengths"])
    if kind == "regression":
        assert np.array_equal(np.array(table["value"], np.float32), ref.values)
    else:
        assert table["label"] == [r["label"] for r in rows]
        probs = np.array([table[f"prob_{c}"] for c in ref.class_names], np.float32).T
        assert np.array_equal(probs, ref.probabilities)
    assert table["present"] == [r["present"] for r in rows]
    assert pq.read_schema(out_pq).field("index").type == "int64"


def test_parquet_without_pyarrow_is_one_line_naming_the_extra(runs, tmp_path: Path, monkeypatch) -> None:
    run_dir, data = runs("user_multiclass")
    inp = _input_dir(tmp_path / "new", data)
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # import fails as if not installed
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    out = tmp_path / "pred.parquet"
    result = runner.invoke(app, ["predict", str(run_dir), "--input", str(inp), "--out", str(out)])
    assert result.exit_code == 2 and not out.exists()
    assert "writing Parquet needs pyarrow: pip install 'robult[parquet]'" in result.output
    assert len(result.output.strip().splitlines()) == 1
    bad = runner.invoke(app, ["predict", str(run_dir), "--input", str(inp), "--out", str(tmp_path / "p.txt")])
    assert bad.exit_code == 2 and "ending in .csv or .parquet" in bad.output


# ------------------------------------------------------------------------------------------------ ONNX


@pytest.mark.parametrize("kind", ["multiclass", "regression", "binary"])
def test_onnx_export_matches_the_predictor(runs, tmp_path: Path, kind: str) -> None:
    """`robult export RUN --format onnx`, run by onnxruntime on raw inputs with random missing patterns (NaN in
    absent entries; a GRU sequence encoder in the regression run) and another batch size than the trace's, predicts
    what the predictor predicts."""
    onnx = pytest.importorskip("onnx", reason="onnx (robult[onnx]) is not installed")
    ort = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed")
    run_dir, data = runs(kind)
    out = tmp_path / "model.onnx"
    result = runner.invoke(app, ["export", str(run_dir), "--format", "onnx", "--out", str(out)])
    assert result.exit_code == 0, result.output
    meta = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    layout = json.loads(meta["robult.json"])["inputs"]
    predictor = robult.load(run_dir)
    assert [e["name"] for e in layout] == ["present", *(a for s in predictor.modalities for a in _names(s))]
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == [e["name"] for e in layout]
    g = np.random.default_rng(2)
    for _ in range(3):
        present, x, expected = _random_missing(predictor, data, g)
        feed = {"present": present, **{k: v.astype(np.float32) for k, v in x.items()}}
        feed.update({f"{k}_lengths": v.astype(np.int64) for k, v in data["lengths"].items()})
        got = session.run(None, feed)[0]
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)


def test_onnx_export_without_onnx_is_one_line_naming_the_extra(runs, tmp_path: Path, monkeypatch) -> None:
    run_dir, _ = runs("binary")
    monkeypatch.setitem(sys.modules, "onnx", None)
    result = runner.invoke(app, ["export", str(run_dir), "--format", "onnx", "--out", str(tmp_path / "m.onnx")])
    assert result.exit_code == 2 and "ONNX export needs the onnx package: pip install 'robult[onnx]'" in result.output
