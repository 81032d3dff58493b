"""``robult train --input`` on the user's own data (a ``dataset.yaml`` directory, a CSV table), run with its defaults
(progress bar, logger, thread count) as a user would; runs named after the data; ``evaluate --input`` on a directory
lacking a modality; ``predict`` printing CSV to stdout."""

from __future__ import annotations

import csv
import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from robult.cli import app
from robult.data.table import load_table_dataset
from robult.data.user import write_user_dataset
from robult.specs import TaskSpec

runner = CliRunner()
# a small, fast model; progress bar, logger and threads stay at their defaults
SMALL = [
    "train.max_epochs=2",
    "train.batch_size=32",
    "model.hidden_dim=16",
    "model.encoder_hidden=[16]",
    "eval.rates=[0.0,0.5]",
]


def _arrays(n: int = 120, seed: int = 0) -> tuple[dict[str, np.ndarray], np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    a = (rng.standard_normal((n, 5)) + y[:, None]).astype(np.float32)
    b = (rng.standard_normal((n, 3)) + y[:, None]).astype(np.float32)
    return {"a": a, "b": b}, y


def _user_dir(root: Path, name: str, seed: int = 0, labeled: bool = True) -> Path:
    inputs, y = _arrays(seed=seed)
    present = np.ones((len(y), 2), dtype=bool)
    present[::7, 0] = False
    lab = None
    if labeled:
        lab = np.zeros(len(y), dtype=bool)
        lab[::3] = True
    directory = root / name
    write_user_dataset(directory, inputs, y, TaskSpec("multiclass", num_classes=3), name=name, present=present)
    if lab is not None:
        np.save(directory / "labeled.npy", lab)
        text = (directory / "dataset.yaml").read_text()
        (directory / "dataset.yaml").write_text(text + "labeled: labeled.npy\n")
    return directory


def _robult(*args: str, cwd: Path, stdout: Path) -> subprocess.CompletedProcess[str]:
    """The ``robult`` command in a subprocess, its stdout redirected to a file (``robult ... > log``)."""
    code = "import sys; from robult.cli import main; sys.argv = ['robult', *sys.argv[1:]]; main()"
    with stdout.open("w") as fh:
        return subprocess.run(
            [sys.executable, "-c", code, *args], cwd=cwd, stdout=fh, stderr=subprocess.PIPE, text=True
        )


def test_train_input_dir_with_defaults_keeps_progress_out_of_the_log(tmp_path: Path) -> None:
    first = _user_dir(tmp_path, "clinic_a")
    second = _user_dir(tmp_path, "clinic_b", seed=1)
    sets = [x for item in [*SMALL, f"out_dir={tmp_path / 'runs'}"] for x in ("--set", item)]
    log = tmp_path / "log"
    done = _robult("train", "--input", str(first), *sets, cwd=tmp_path, stdout=log)
    assert done.returncode == 0, done.stderr
    text = log.read_text()
    assert "\r" not in text and "it/s" not in text and "Epoch" not in text  # no progress frames in the log
    assert "Epoch" in done.stderr  # the bar is drawn on stderr
    # 40 labeled rows (every third), minus the validation share: the run says so in its name
    run = tmp_path / "runs" / "clinic_a-robult-labels30-s0"
    assert f"run: {run}" in text and (run / "model" / "model.json").is_file()
    assert "labels used: 30 of" in text
    for plot in ("subsets.png", "random_rate.png", "diagnostics.png"):  # robult logs diagnostics
        assert (run / "plots" / plot).read_bytes()[:4] == b"\x89PNG"
    assert f"plots: {run / 'plots' / 'subsets.png'}" in text
    # a second dataset gets its own run, no --resume / --overwrite hops
    again = _robult("train", "--input", str(second), *sets, cwd=tmp_path, stdout=tmp_path / "log2")
    assert again.returncode == 0, again.stderr
    second_runs = list((tmp_path / "runs").glob("clinic_b-robult-labels*-s0/result.json"))
    assert len(second_runs) == 1


def _write_csv(path: Path, n: int = 90) -> None:
    inputs, y = _arrays(n=n, seed=2)
    names = np.array(["cat", "dog", "eel"])
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["label", *(f"a__{j}" for j in range(5)), *(f"b__{j}" for j in range(3))])
        for i in range(n):
            label = names[y[i]] if i % 2 == 0 else ""  # every other row unlabeled
            a = ["" if i % 5 == 0 else f"{v:.4f}" for v in inputs["a"][i]]  # every fifth row lacks a
            w.writerow([label, *a, *(f"{v:.4f}" for v in inputs["b"][i])])


def test_train_input_csv_table(tmp_path: Path) -> None:
    table = tmp_path / "pets.csv"
    _write_csv(table)
    bundle = load_table_dataset(table)
    assert bundle.name == "pets" and [s.name for s in bundle.modalities] == ["a", "b"]
    assert bundle.task.label_names == ("cat", "dog", "eel")
    total_present = sum(int(d.present[:, 0].sum()) for d in (bundle.train, bundle.val, bundle.test))
    assert total_present == 90 - 18  # rows 0, 5, ..., 85 lack a
    sets = [x for item in [*SMALL, f"out_dir={tmp_path / 'runs'}"] for x in ("--set", item)]
    result = runner.invoke(app, ["train", "--input", str(table), *sets])
    assert result.exit_code == 0, result.output
    runs = sorted(p.name for p in (tmp_path / "runs").iterdir() if p.name != "masks")
    assert len(runs) == 1 and runs[0].startswith("pets-robult-labels") and runs[0].endswith("-s0")


def test_table_errors_name_the_row_and_column(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("label,a__0,a__1,extra\n0,1,2,3\n1,1,2,3\n")
    with pytest.raises(ValueError, match="column 'extra' is neither 'label'"):
        load_table_dataset(bad)
    bad.write_text("label,a__0,a__1\n0,1,\n1,1,2\n")
    with pytest.raises(ValueError, match="row 0 has modality 'a' in part"):
        load_table_dataset(bad)
    bad.write_text("label,a__0\n0,x\n1,1\n")
    with pytest.raises(ValueError, match=r"\(a__0\): row 0 holds 'x', not a number"):
        load_table_dataset(bad)


def test_evaluate_input_lacking_a_modality_and_predict_to_stdout(tmp_path: Path) -> None:
    data = _user_dir(tmp_path, "full", labeled=False)
    sets = [x for item in [*SMALL, "train.progress=false", f"out_dir={tmp_path / 'runs'}"] for x in ("--set", item)]
    assert runner.invoke(app, ["train", "--input", str(data), *sets]).exit_code == 0
    run = tmp_path / "runs" / "full-robult-r0.05-s0"
    # a directory with modality b only (no a.npy listed): scored on what it has
    only_b = tmp_path / "only_b"
    inputs, y = _arrays()
    write_user_dataset(only_b, {"b": inputs["b"]}, y, TaskSpec("multiclass", num_classes=3), name="only_b")
    result = runner.invoke(app, ["evaluate", str(run), "--input", str(only_b)])
    assert result.exit_code == 0, result.output
    assert "b" in result.output and "lacks" in result.output
    # predict without --out: CSV on stdout, one row per sample
    result = runner.invoke(app, ["predict", str(run), "--input", str(only_b)])
    assert result.exit_code == 0, result.output
    rows = list(csv.reader(io.StringIO(result.stdout)))
    assert rows[0][:2] == ["index", "label"] and len(rows) == 1 + len(y)


def test_parquet_table_reads_as_the_csv(tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    table = tmp_path / "pets.csv"
    _write_csv(table)
    with table.open() as fh:
        rows = list(csv.reader(fh))
    header, body = rows[0], rows[1:]
    columns = {
        h: [None if r[j] == "" else (r[j] if h == "label" else float(r[j])) for r in body] for j, h in enumerate(header)
    }
    pq.write_table(pa.table(columns), tmp_path / "pets.parquet")
    a, b = load_table_dataset(table), load_table_dataset(tmp_path / "pets.parquet")
    assert b.name == "pets" and b.task.label_names == a.task.label_names
    for split in ("train", "val", "test"):
        x, y = getattr(a, split), getattr(b, split)
        assert torch.equal(x.present, y.present) and torch.equal(x.labeled, y.labeled)
        assert torch.equal(x.target, y.target)
        assert np.allclose(np.asarray(x.inputs["a"]), np.asarray(y.inputs["a"]), atol=1e-6)


def test_predict_and_evaluate_read_a_table_as_the_same_rows_in_a_directory(tmp_path: Path) -> None:
    """``predict`` and ``evaluate --input FILE.csv`` (the format ``train --input`` reads) give the numbers of the same
    rows written as a directory; every command with its defaults."""
    import json

    table = tmp_path / "pets.csv"
    _write_csv(table)
    sets = [x for item in [*SMALL, f"out_dir={tmp_path / 'runs'}"] for x in ("--set", item)]
    assert runner.invoke(app, ["train", "--input", str(table), *sets]).exit_code == 0
    (run,) = [p for p in (tmp_path / "runs").iterdir() if p.name != "masks"]
    # the same rows as the user format: the CSV's values, class ids in the model's (sorted) order, the masks
    inputs, y = _arrays(n=90, seed=2)
    as_written = np.vectorize(lambda v: float(f"{v:.4f}"))  # the CSV holds 4 decimals
    rounded = {k: as_written(x).astype(np.float32) for k, x in inputs.items()}
    present = np.ones((90, 2), dtype=bool)
    present[::5, 0] = False
    rounded["a"][~present[:, 0]] = 0.0
    task = TaskSpec("multiclass", num_classes=3, label_names=("cat", "dog", "eel"))
    directory = tmp_path / "pets_dir"
    labeled = np.arange(90) % 2 == 0
    write_user_dataset(directory, rounded, y, task, name="pets", present=present, labeled=labeled)

    from_table = runner.invoke(app, ["predict", str(run), "--input", str(table)])
    from_dir = runner.invoke(app, ["predict", str(run), "--input", str(directory)])
    assert from_table.exit_code == 0, from_table.output
    assert from_dir.exit_code == 0, from_dir.output
    rows = list(csv.reader(io.StringIO(from_table.stdout)))
    assert len(rows) == 91 and rows[0][:2] == ["index", "label"] and rows[1][-1] == "b" and rows[2][-1] == "a+b"
    assert from_table.stdout == from_dir.stdout

    scores = {}
    for name, source in (("table", table), ("dir", directory)):
        out = tmp_path / f"{name}.json"
        result = runner.invoke(app, ["evaluate", str(run), "--input", str(source), "--out", str(out)])
        assert result.exit_code == 0, result.output
        assert "lacks" not in result.output
        scores[name] = json.loads(out.read_text())
        assert scores[name].pop("input") == str(source)
    assert scores["table"]["counts"]["n"] == 90 and scores["table"]["subsets"]
    assert scores["table"] == scores["dir"]
    # a table without the a__* columns: scored with a absent from every row, and the command says so
    lines = table.read_text().splitlines()
    keep = [j for j, h in enumerate(lines[0].split(",")) if not h.startswith("a__")]
    only_b = tmp_path / "only_b.csv"
    only_b.write_text("".join(",".join(line.split(",")[j] for j in keep) + "\n" for line in lines))
    result = runner.invoke(app, ["evaluate", str(run), "--input", str(only_b)])
    assert result.exit_code == 0, result.output
    assert "lacks modality 'a'" in result.output and "b" in result.output
