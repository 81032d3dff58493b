"""Faults the command line reports in one ``error:`` line (no traceback), leaving nothing that blocks a rerun:
OS errors (full disk, read-only output, a file where a directory is expected), a checkpoint of another dataset or a
truncated one on resume, dataset options of the wrong type, an empty ``.npy`` file, ``--set SECTION=value``."""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from robult.cli import app

runner = CliRunner()
RUN = "synthetic-robult-r0.05-s0"
TINY = [
    "dataset.options.n_samples=300",
    "train.max_epochs=2",
    "train.batch_size=64",
    "model.hidden_dim=16",
    "model.encoder_hidden=[16]",
    "model.projector_hidden=[16]",
    "train.progress=false",
    "eval.rates=[0.0]",
]


def _train(out: Path, *extra: str, flags: tuple[str, ...] = ()) -> object:
    args = ["train", *flags]
    for item in [*TINY, f"out_dir={out}", *extra]:
        args += ["--set", item]
    return runner.invoke(app, args)


def _one_error_line(result: object, *needles: str) -> str:
    """The single non-empty output line, which starts with ``error:`` and contains every needle."""
    assert result.exit_code == 2, result.output  # type: ignore[attr-defined]
    lines = [line for line in result.output.splitlines() if line.strip()]  # type: ignore[attr-defined]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output  # type: ignore[attr-defined]
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def _leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.rglob("*") if p.name.endswith(".tmp"))


def _fail_fsync(monkeypatch: pytest.MonkeyPatch, target: str, nth: int, code: int = errno.ENOSPC) -> None:
    """Make the ``nth`` (0-based) fsync of an atomic write onto a file named ``target`` fail with ``code`` (what a
    full disk does to a write); other writes go through."""
    real = os.fsync
    pattern = re.compile(rf"^\.{re.escape(target)}\.[^.]+\.tmp$")
    seen = [0]

    def fsync(fd: int) -> None:
        name = Path(os.readlink(f"/proc/self/fd/{fd}")).name
        if pattern.match(name):
            seen[0] += 1
            if seen[0] - 1 == nth:
                raise OSError(code, os.strerror(code))
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("finished") / "runs"
    result = _train(out)
    assert result.exit_code == 0, result.output
    return out


@pytest.mark.parametrize(("nth", "rerun"), [(0, []), (1, ["--resume"])], ids=["first-epoch", "second-epoch"])
def test_full_disk_during_a_checkpoint_write_is_one_line_and_a_rerun_finishes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, nth: int, rerun: list[str]
) -> None:
    out = tmp_path / "runs"
    with monkeypatch.context() as patch:
        _fail_fsync(patch, "last.ckpt", nth)
        _one_error_line(_train(out), f"{out / RUN / 'checkpoints' / 'last.ckpt'}: No space left on device")
    assert _leftovers(out) == [] and not (out / RUN / "result.json").exists()
    result = _train(out, flags=tuple(rerun))
    assert result.exit_code == 0, result.output
    assert (out / RUN / "result.json").is_file()


def test_full_disk_writing_result_json_is_one_line_and_resume_finishes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "runs"
    with monkeypatch.context() as patch:
        _fail_fsync(patch, "result.json", 0)
        _one_error_line(_train(out), f"{out / RUN / 'result.json'}: No space left on device")
    assert _leftovers(out) == [] and not (out / RUN / "result.json").exists()
    _one_error_line(_train(out), "already holds a run; pass --resume")
    result = _train(out, flags=("--resume",))
    assert result.exit_code == 0, result.output
    json.loads((out / RUN / "result.json").read_text())


def test_read_only_output_is_one_line_and_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "readonly"
    real = os.mkdir

    def mkdir(path: str | os.PathLike[str], mode: int = 0o777, *args: object) -> None:
        if str(path).startswith(str(out)):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
        real(path, mode, *args)

    monkeypatch.setattr(os, "mkdir", mkdir)
    _one_error_line(_train(out), "Read-only file system", str(out))
    assert not out.exists()


def test_a_file_where_the_output_directory_should_be_is_one_line(tmp_path: Path) -> None:
    out = tmp_path / "taken"
    out.write_text("not a directory")
    _one_error_line(_train(out), f"{out / RUN}: Not a directory")


def test_checkpoint_of_another_dataset_on_resume_is_one_line(tmp_path: Path, finished_run: Path) -> None:
    out = tmp_path / "runs"
    shutil.copytree(finished_run, out)
    (out / RUN / "result.json").unlink()  # an interrupted run ...
    other = tmp_path / "other"
    assert _train(other, "dataset.options.modality_dims=[8, 8]").exit_code == 0
    for name in ("last.ckpt", "last.ckpt.sha256"):  # ... whose last.ckpt comes from a two-modality dataset
        shutil.copy(other / RUN / "checkpoints" / name, out / RUN / "checkpoints" / name)
    result = _train(out, flags=("--resume",))
    line = _one_error_line(result, f"{out / RUN / 'checkpoints' / 'last.ckpt'}: does not fit this run's model")
    assert re.search(r": it (lacks|holds) 'model\.[^']+'", line), line  # the first key that does not fit


@pytest.mark.parametrize("checksum", [True, False], ids=["with-checksum", "without-checksum"])
def test_truncated_last_checkpoint_on_resume_is_one_line(tmp_path: Path, finished_run: Path, checksum: bool) -> None:
    out = tmp_path / "runs"
    shutil.copytree(finished_run, out)
    (out / RUN / "result.json").unlink()
    last = out / RUN / "checkpoints" / "last.ckpt"
    last.write_bytes(last.read_bytes()[:4000])
    if not checksum:
        (out / RUN / "checkpoints" / "last.ckpt.sha256").unlink()
    result = _train(out, flags=("--resume",))
    lines = [line for line in result.output.splitlines() if line.startswith("error: ")]
    assert result.exit_code == 2 and len(lines) == 1 and str(last) in lines[0], result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (["dataset.options.n_samples=abc"], "dataset option 'n_samples': expected an integer, got 'abc'"),
        (["dataset.options.modality_dims=[4, x]"], "dataset option 'modality_dims': expected a list of integers"),
        (["dataset.options.mix={redundant: x}"], "dataset 'synthetic' with options"),
        (["train=3", "train.lr=0.1"], "--set 'train=3': 'train' is a section, not a value"),
        (["dataset.options=3", "dataset.options.n_samples=5"], "--set 'dataset.options=3': sets 'dataset.options'"),
    ],
)
def test_bad_settings_are_one_line_naming_the_culprit(tmp_path: Path, settings: list[str], message: str) -> None:
    out = tmp_path / "runs"
    _one_error_line(_train(out, *settings), message)
    assert not out.exists()


@pytest.mark.parametrize("empty", ["a.npy", "labels.npy"])
def test_an_empty_npy_file_is_one_line_naming_it(tmp_path: Path, empty: str) -> None:
    from robult.data.user import write_user_dataset
    from robult.specs import TaskSpec

    rng = np.random.default_rng(0)
    n = 60
    inputs = {"a": rng.standard_normal((n, 4)).astype(np.float32), "b": rng.standard_normal((n, 3)).astype(np.float32)}
    write_user_dataset(tmp_path / "data", inputs, np.arange(n) % 3, TaskSpec("multiclass", num_classes=3))
    (tmp_path / "data" / empty).write_bytes(b"")
    out = tmp_path / "runs"
    args = ["train", "--dataset", "user", "--set", f"dataset.options.path={tmp_path / 'data'}"]
    result = runner.invoke(app, [*args, "--set", f"out_dir={out}"])
    _one_error_line(result, f"{tmp_path / 'data' / empty}", "empty or truncated")
    assert not out.exists()


def _broken_registry() -> dict:
    raise KeyError("a bug inside robult")


def _run_main(monkeypatch: pytest.MonkeyPatch, *argv: str) -> int:
    import sys

    from robult import cli

    monkeypatch.setattr(sys, "argv", ["robult", *argv])
    try:
        cli.main()
    except SystemExit as stop:
        return int(stop.code or 0)
    return 0


def test_an_unexpected_exception_is_one_line_naming_its_saved_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A bug (not a user error) exits with 1 and one line; its traceback is kept in a file the user can send."""
    import robult.data.registry as registry

    monkeypatch.setattr(registry, "registered_datasets", _broken_registry)
    monkeypatch.setenv("ROBULT_ERROR_DIR", str(tmp_path / "errors"))
    monkeypatch.setenv("ROBULT_DEBUG", "0")  # recorded, so the "1" that --debug sets is undone after the test
    assert _run_main(monkeypatch, "datasets") == 1
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: unexpected KeyError"), lines
    saved = sorted((tmp_path / "errors").glob("robult-error-*.txt"))
    assert len(saved) == 1 and str(saved[0]) in lines[0]
    text = saved[0].read_text()
    assert "Traceback (most recent call last)" in text and "_broken_registry" in text and "robult datasets" in text


def test_debug_prints_the_traceback_of_bugs_and_of_user_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import robult.data.registry as registry

    monkeypatch.setenv("ROBULT_ERROR_DIR", str(tmp_path / "errors"))
    monkeypatch.setenv("ROBULT_DEBUG", "0")  # recorded, so the "1" that --debug sets is undone after the test
    # a user error: one line without --debug, the exception itself with it
    assert _run_main(monkeypatch, "train", "--set", "train.lr=-1") == 2
    assert capsys.readouterr().err.strip().startswith("error: ")
    with pytest.raises(Exception, match="lr"):
        _run_main(monkeypatch, "--debug", "train", "--set", "train.lr=-1")
    monkeypatch.setattr(registry, "registered_datasets", _broken_registry)
    with pytest.raises(KeyError, match="a bug inside robult"):
        _run_main(monkeypatch, "--debug", "datasets")
    assert not (tmp_path / "errors").exists()  # nothing saved when the traceback is printed


def test_a_value_error_raised_outside_robult_keeps_its_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A ``ValueError`` from a library (not one of robult's own checks) stays one line, exit 2, and names a saved
    traceback: it may be a bug of ours. robult's own checks stay plain one-liners."""
    import typer

    from robult.cli.errors import fail
    from robult.cli.experiment_cmds import seed_range
    from robult.experiments.grid import parse_list

    monkeypatch.setenv("ROBULT_ERROR_DIR", str(tmp_path / "errors"))
    monkeypatch.setenv("ROBULT_DEBUG", "0")
    try:
        np.zeros(2).reshape(3)  # numpy raises it
    except ValueError as err:
        with pytest.raises(typer.Exit):
            fail(err)
    line = capsys.readouterr().err.strip()
    saved = sorted((tmp_path / "errors").glob("robult-error-*.txt"))
    assert len(saved) == 1 and line.startswith("error: cannot reshape") and str(saved[0]) in line
    assert "reshape" in saved[0].read_text()
    try:
        seed_range(0)  # robult's own check, in the command line
    except ValueError as err:
        with pytest.raises(typer.Exit):
            fail(err)
    assert capsys.readouterr().err.strip() == "error: --seeds must be at least 1"
    try:
        parse_list(" , ", str, "--methods")  # robult's own check, outside the command line's package
    except ValueError as err:
        with pytest.raises(typer.Exit):
            fail(err)
    assert capsys.readouterr().err.strip() == "error: --methods: empty list"
    assert len(list((tmp_path / "errors").iterdir())) == 1
