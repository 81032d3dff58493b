"""The run directory is the only place a run writes: a symlinked lock, a run name that leaves ``out_dir``,
``--overwrite`` of files robult never wrote, temporary files left by a kill, non-finite weights, a moved run's masks,
a corrupt ``labeled.json`` and two concurrent benchmarks (docs/reliability.md)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import pytest
from typer.testing import CliRunner

from robult.cli import app
from robult.config import ConfigError, load_config
from robult.evaluation.protocols import MANIFEST
from robult.training.checkpoint import RunInUseError, run_lock
from robult.training.run import evaluate_run, train_run

WRITTEN = "written.json"  # robult.training.written.WRITTEN (spelt out: these tests also run against older code)


def recorded(run_dir: Path) -> list[str] | None:
    path = run_dir / WRITTEN
    return json.loads(path.read_text())["paths"] if path.is_file() else None


SMALL = [
    "dataset.options.n_samples=300",
    "train.max_epochs=3",
    "train.patience=0",
    "train.batch_size=64",
    "model.hidden_dim=16",
    "model.encoder_hidden=[16]",
    "model.shared_dim=8",
    "model.specific_dim=8",
    "train.progress=false",
    "train.num_threads=1",
    "eval.rates=[0.0, 0.5]",
]


class Killed(BaseException):
    """A simulated kill (a BaseException: nothing on the way swallows it)."""


class _KillAtEpoch(L.Callback):
    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int) -> None:
        if trainer.current_epoch == self.epoch:
            raise Killed


def _cfg(out: Path, name: str, *extra: str) -> Any:
    return load_config(None, [*SMALL, f"out_dir={out}", f"name={name}", *extra])


def _sets(out: Path, name: str, *extra: str) -> list[str]:
    """``--set`` arguments of the CLI, with the command's defaults (progress bar, logger, threads)."""
    keep = [s for s in SMALL if not s.startswith(("train.progress", "train.num_threads"))]
    return [a for s in [*keep, f"out_dir={out}", f"name={name}", *extra] for a in ("--set", s)]


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished run ``<out>/done`` (with the test masks in ``<out>/masks``)."""
    out = tmp_path_factory.mktemp("safety") / "runs"
    train_run(_cfg(out, "done"))
    return out


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run killed in its second epoch (``last.ckpt`` of epoch 0): ``<out>/cut``."""
    out = tmp_path_factory.mktemp("safety-cut") / "runs"
    with pytest.raises(Killed):
        train_run(_cfg(out, "cut"), callbacks=[_KillAtEpoch(1)])
    return out


def _copy_run(src_out: Path, name: str, dst_out: Path) -> Path:
    shutil.copytree(src_out / name, dst_out / name)
    if (src_out / "masks").is_dir() and not (dst_out / "masks").exists():
        shutil.copytree(src_out / "masks", dst_out / "masks")
    return dst_out / name


# ------------------------------------------------------------------------------------------------- the lock


def test_a_symlinked_lock_is_refused_and_its_target_untouched(tmp_path: Path) -> None:
    out = tmp_path / "runs"
    (out / "x").mkdir(parents=True)
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    (out / "x" / ".lock").symlink_to(victim)
    with pytest.raises(ValueError, match=r"x/\.lock: the run's lock file is a symbolic link"):  # RunLockError
        train_run(_cfg(out, "x"))
    assert victim.read_text() == "precious\n"
    assert sorted(p.name for p in (out / "x").iterdir()) == [".lock"]  # nothing else written


def test_a_symlinked_mask_store_lock_is_refused(tmp_path: Path) -> None:
    from robult.evaluation.protocols import MaskStore

    store = MaskStore(tmp_path / "masks")
    directory = store.directory("synth", "test")
    directory.mkdir(parents=True)
    victim = tmp_path / "victim.txt"
    (directory / ".lock").symlink_to(victim)
    with pytest.raises(ValueError, match=r"\.lock: the mask store's lock file is a symbolic link"):
        store.get_or_create("synth", "test", 20, ["a", "b"], 0.5, 0)
    assert not victim.exists()


def test_a_busy_run_is_refused_before_the_data_is_loaded(tmp_path: Path, monkeypatch) -> None:
    """The second `robult train` on a run in use is told at once (it used to load the data first); through the
    CLI with its defaults."""
    import robult.training.run as run_mod

    def no_loading(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the data was loaded before the lock was taken")

    monkeypatch.setattr(run_mod, "load_bundle", no_loading)
    out = tmp_path / "runs"
    (out / "busy").mkdir(parents=True)
    with run_lock(out / "busy"):
        with pytest.raises(RunInUseError, match="in use by another process"):
            train_run(_cfg(out, "busy"))
        res = CliRunner().invoke(app, ["train", *_sets(out, "busy")])
    assert res.exit_code == 2, res.output
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and "the run is in use by another process" in lines[0], res.output
    assert sorted(p.name for p in (out / "busy").iterdir()) == [".lock"]


def test_the_losing_benchmark_is_told_another_one_is_running(interrupted: Path, tmp_path: Path) -> None:
    """Two `robult benchmark` with one --out: the second finds a run the first is training (it has written a
    checkpoint already) and is told so, not to pass --resume."""
    out = tmp_path / "bench"
    keep = [s for s in SMALL if not s.startswith(("train.progress", "train.num_threads"))]
    args = ["benchmark", "--out", str(out), "--methods", "robult", "--seeds", "1", "--dataset", "synthetic"]
    args += [a for s in keep for a in ("--set", s)]
    run_dir = out / "runs" / "robult-r0.05-s0"
    run_dir.mkdir(parents=True)
    with run_lock(run_dir):
        (run_dir / "checkpoints").mkdir()
        (run_dir / "checkpoints" / "last.ckpt").write_bytes(b"being written by the other benchmark")
        res = CliRunner().invoke(app, args)
    assert res.exit_code == 2, res.output
    line = res.output.strip().splitlines()[-1]
    assert "in use by another process" in line and "another `robult benchmark`" in line, line
    assert f"--out {out}" in line and "--resume" not in line


def test_a_refused_command_on_a_busy_run_says_it_is_busy(finished: Path, tmp_path: Path) -> None:
    """`--resume` of a run another process is writing (it just finished, or has no checkpoint yet) is told the run
    is in use, not to pass --overwrite or --resume; on an idle finished run nothing is touched, the lock included."""
    run = _copy_run(finished, "done", tmp_path / "runs")
    (run / ".lock").write_text("")
    before = {p: p.stat().st_mtime_ns for p in run.rglob("*")}
    with pytest.raises(FileExistsError, match="the run is finished"):
        train_run(_cfg(tmp_path / "runs", "done"), resume=True)
    assert {p: p.stat().st_mtime_ns for p in run.rglob("*")} == before
    with run_lock(run), pytest.raises(RunInUseError, match="in use by another process"):
        train_run(_cfg(tmp_path / "runs", "done"), resume=True)


# -------------------------------------------------------------------------------------------------- names


@pytest.mark.parametrize("name", ["../../x", "/tmp/abs", ".", "..", "a\nb", "a/b", "a\\b", ".hidden", "tab\there"])
def test_a_run_name_is_one_path_component(tmp_path: Path, name: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(None, [f"out_dir={tmp_path}", f"name={json.dumps(name)}"])
    text = str(info.value)
    assert "key 'name'" in text and repr(name) in text and "\n" not in text


def test_cli_refuses_a_name_outside_out_dir_and_writes_nothing(tmp_path: Path) -> None:
    out = tmp_path / "project" / "runs"
    res = CliRunner().invoke(app, ["train", *_sets(out, "../../escape")])
    assert res.exit_code == 2
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and "key 'name'" in lines[0] and "'../../escape'" in lines[0], res.output
    assert not list(tmp_path.rglob("*"))


def test_data_made_in_python_with_a_path_for_a_name_is_refused_before_training(tmp_path: Path) -> None:
    from robult.data.arrays import bundle_from_arrays
    from robult.specs import TaskSpec

    rng = np.random.default_rng(0)
    x = {"a": rng.normal(size=(60, 3)).astype(np.float32), "b": rng.normal(size=(60, 2)).astype(np.float32)}
    bundle = bundle_from_arrays(x, rng.integers(0, 2, 60), TaskSpec("binary"), name="../escape", seed=0)
    with pytest.raises(ConfigError, match=r"key 'dataset.name': run name '\.\./escape-robult"):
        train_run(load_config(None, [*SMALL, f"out_dir={tmp_path / 'runs'}"]), bundle=bundle)
    assert not list(tmp_path.rglob("*"))


def test_a_user_dataset_named_like_a_path_is_refused_before_training(tmp_path: Path) -> None:
    """Its name is the mask store's directory: it was refused only when the test split was scored."""
    import yaml

    from robult.data.registry import load_dataset
    from robult.data.user import write_bundle

    data = tmp_path / "mydata"
    write_bundle(load_dataset("synthetic", n_samples=200), data)
    spec = yaml.safe_load((data / "dataset.yaml").read_text())
    spec["name"] = "../../escape"
    (data / "dataset.yaml").write_text(yaml.safe_dump(spec))
    out = tmp_path / "runs"
    res = CliRunner().invoke(
        app, ["train", "--dataset", "user", *_sets(out, "mine", f"dataset.options.path={json.dumps(str(data))}")]
    )
    assert res.exit_code == 2, res.output
    line = res.output.strip().splitlines()[-1]
    assert "dataset.yaml" in line and "name" in line and "'../../escape'" in line, res.output
    assert not out.exists() and not (tmp_path.parent / "escape").exists()


# ---------------------------------------------------------------------------------------------- overwrite


def test_overwrite_deletes_only_what_robult_wrote(finished: Path, tmp_path: Path) -> None:
    run = _copy_run(finished, "done", tmp_path / "runs")
    mine = {"logs/notes.txt": b"my notes", "checkpoints/mine.ckpt": b"my model", "notes.md": b"mine", "extra/a": b"a"}
    for rel, data in mine.items():
        (run / rel).parent.mkdir(parents=True, exist_ok=True)
        (run / rel).write_bytes(data)
    res = CliRunner().invoke(app, ["train", *_sets(tmp_path / "runs", "done"), "--overwrite"])
    assert res.exit_code == 0, res.output
    assert "will be deleted" not in res.output  # Lightning's warning about a log directory holding other files
    for rel, data in mine.items():
        assert (run / rel).read_bytes() == data, rel
    listed = recorded(run)
    assert listed is not None and "config.yaml" in listed and "checkpoints/last.ckpt" in listed
    assert not set(mine) & set(listed) and (run / "result.json").is_file()


def test_overwrite_of_a_run_without_its_manifest_deletes_nothing(finished: Path, tmp_path: Path) -> None:
    run = _copy_run(finished, "done", tmp_path / "runs")
    (run / WRITTEN).unlink(missing_ok=True)  # a run of an older robult
    before = _tree(run)
    with pytest.raises(ValueError, match=rf"no {WRITTEN} .*--overwrite deletes nothing"):
        train_run(_cfg(tmp_path / "runs", "done"), overwrite=True)
    assert _tree(run) == before


def test_overwrite_never_deletes_outside_out_dir(finished: Path, tmp_path: Path) -> None:
    """A run directory that is a link to another project (which holds logs/ and checkpoints/ of its own, and even
    a manifest listing them) is refused; nothing there is deleted."""
    project = _copy_run(finished, "done", tmp_path / "project")
    (project / "logs" / "keep.txt").write_text("keep")
    before = _tree(project)
    out = tmp_path / "runs"
    out.mkdir()
    (out / "done").symlink_to(project, target_is_directory=True)
    with pytest.raises(ValueError, match="deletes only inside out_dir"):
        train_run(_cfg(out, "done"), overwrite=True)
    assert _tree(project) == before


def test_an_altered_manifest_pointing_outside_the_run_deletes_nothing(tmp_path: Path) -> None:
    from robult.training.written import clear_written

    out = tmp_path / "runs"
    run = out / "x"
    run.mkdir(parents=True)
    victim = tmp_path / "victim.txt"
    victim.write_text("keep")
    (run / "config.yaml").write_text("x")
    for entry in ("../../victim.txt", str(victim)):
        (run / WRITTEN).write_text(json.dumps({"format": "robult-written", "paths": ["config.yaml", entry]}))
        with pytest.raises(ValueError, match=r"leaves the run directory; the manifest was altered"):
            clear_written(run, out)
        assert victim.read_text() == "keep" and (run / "config.yaml").exists()


# --------------------------------------------------------------------------------------------- temp files


@pytest.mark.parametrize("how", ["resume", "rerun"])
def test_resume_clears_the_temporary_files_of_its_own_writes(interrupted: Path, tmp_path: Path, how: str) -> None:
    """A SIGKILL inside an atomic write leaves its temporary file; resuming (or rerunning a run killed before its
    first checkpoint) removes robult's own, and nothing else."""
    run = _copy_run(interrupted, "cut", tmp_path / "runs")
    if how == "rerun":  # killed before the first checkpoint
        for name in ("last.ckpt", "last.ckpt.sha256", "best.ckpt", "best.ckpt.sha256"):
            (run / "checkpoints" / name).unlink(missing_ok=True)
    ours = [
        "checkpoints/.last.ckpt.k3j2x9a1.tmp",
        "checkpoints/.last.ckpt.sha256.a1b2c3d4.tmp",
        ".config.yaml.zz9_ab12.tmp",
    ]
    theirs = ["checkpoints/.mine.tmp", ".notes.txt.k3j2x9a1.tmp", "logs/.last.ckpt.k3j2x9a1.tmp"]
    for rel in [*ours, *theirs]:
        (run / rel).parent.mkdir(parents=True, exist_ok=True)
        (run / rel).write_bytes(b"partial")
    (run / ".model.abcd1234.tmp").mkdir()
    (run / ".model.abcd1234.tmp" / "weights.safetensors").write_bytes(b"partial")
    train_run(_cfg(tmp_path / "runs", "cut"), resume=how == "resume")
    for rel in [*ours, ".model.abcd1234.tmp"]:
        assert not (run / rel).exists(), rel
    for rel in theirs:
        assert (run / rel).read_bytes() == b"partial", rel
    assert (run / "result.json").is_file()


# ------------------------------------------------------------------------------------------ corrupt files


def test_a_corrupt_labeled_json_is_an_error_naming_it(interrupted: Path, tmp_path: Path) -> None:
    run = _copy_run(interrupted, "cut", tmp_path / "runs")
    (run / "labeled.json").write_text("")
    with pytest.raises(ValueError, match=r"cut/labeled\.json: not valid JSON") as info:
        train_run(_cfg(tmp_path / "runs", "cut"), resume=True)
    assert "\n" not in str(info.value)


def test_a_failed_atomic_write_names_the_requested_path(tmp_path: Path) -> None:
    from robult.utils.io import atomic_write_json

    target = tmp_path / "result.json"
    target.mkdir()  # the rename onto it fails
    with pytest.raises(IsADirectoryError) as info:
        atomic_write_json(target, {"a": 1})
    assert info.value.filename == str(target) and info.value.filename2 is None
    assert ".tmp" not in str(info.value)
    assert list(tmp_path.iterdir()) == [target]


def test_a_model_with_non_finite_weights_is_refused_at_load(finished: Path, tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file

    import robult
    from robult.inference import ArtefactError
    from robult.utils.io import sha256_file

    run = _copy_run(finished, "done", tmp_path / "runs")
    weights = run / "model" / "weights.safetensors"
    state = load_file(str(weights))
    name = sorted(k for k, v in state.items() if v.is_floating_point())[0]
    state[name].view(-1)[0] = float("nan")
    save_file(state, str(weights), metadata={"format": "robult-model"})
    manifest = json.loads((run / "model" / "manifest.json").read_text())
    manifest["files"]["weights.safetensors"] = sha256_file(weights)
    (run / "model" / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ArtefactError, match=rf"tensor '{name}' holds 1 NaN or Inf"):
        robult.load(run)


# ------------------------------------------------------------------------------------ moved runs, masks


def _flip_a_mask_bit(out: Path) -> Path:
    mask = sorted((out / "masks").rglob("random-rate_eta0.5*.npy"))[0]
    arr = np.load(mask)
    arr[0, 0] = ~arr[0, 0]
    np.save(mask, arr, allow_pickle=False)
    return mask


def test_evaluate_of_a_moved_run_reads_its_own_masks_and_finds_a_flipped_bit(finished: Path, tmp_path: Path) -> None:
    first = tmp_path / "first"
    _copy_run(finished, "done", first)
    moved = tmp_path / "moved"
    shutil.move(first, moved)
    mask = _flip_a_mask_bit(moved)
    with pytest.raises(ValueError, match=rf"{mask.name}"):
        evaluate_run(moved / "done")
    assert not first.exists()  # nothing written under the out_dir in config.yaml


def test_cli_evaluate_of_a_moved_out_dir_scores_it_and_names_a_flipped_mask(finished: Path, tmp_path: Path) -> None:
    """`robult evaluate RUN` with its defaults (progress bar) after `mv out_dir elsewhere`: the run's own scores;
    then one line naming the altered mask file; the old out_dir is never recreated."""
    first = tmp_path / "first"
    _copy_run(finished, "done", first)
    config = first / "done" / "config.yaml"  # as if trained in <first>
    config.write_text(config.read_text().replace(f"out_dir: {finished}", f"out_dir: {first}"))
    moved = tmp_path / "moved"
    shutil.move(first, moved)
    res = CliRunner().invoke(app, ["evaluate", str(moved / "done"), "--out", str(tmp_path / "ev.json")])
    assert res.exit_code == 0, res.output
    saved = json.loads((moved / "done" / "result.json").read_text())["test"]
    got = json.loads((tmp_path / "ev.json").read_text())
    assert got["random_rate"] == saved["random_rate"] and got["mask_sha256"] == saved["mask_sha256"]
    mask = _flip_a_mask_bit(moved)
    res = CliRunner().invoke(app, ["evaluate", str(moved / "done")])
    assert res.exit_code == 2
    line = res.output.strip().splitlines()[-1]
    assert line.startswith("error: ") and mask.name in line, res.output
    assert not first.exists()


def test_a_mask_altered_with_its_store_manifest_is_found_by_the_result_checksum(finished: Path, tmp_path: Path) -> None:
    from robult.utils.io import sha256_file

    _copy_run(finished, "done", tmp_path / "runs")
    mask = _flip_a_mask_bit(tmp_path / "runs")
    manifest = mask.parent / MANIFEST
    doc = json.loads(manifest.read_text())
    doc["files"][mask.name]["sha256"] = sha256_file(mask)
    manifest.write_text(json.dumps(doc))
    with pytest.raises(ValueError, match=rf"{mask.name}: SHA-256 .* differs from the one .*result\.json records"):
        evaluate_run(tmp_path / "runs" / "done")


def test_a_run_copied_alone_evaluates_in_memory_and_writes_nothing_outside(finished: Path, tmp_path: Path) -> None:
    first = tmp_path / "first"
    _copy_run(finished, "done", first)
    config = first / "done" / "config.yaml"  # as if trained in <first>: config.yaml records it as out_dir
    config.write_text(config.read_text().replace(f"out_dir: {finished}", f"out_dir: {first}"))
    assert f"out_dir: {first}" in config.read_text()
    elsewhere = tmp_path / "elsewhere"
    shutil.copytree(first / "done", elsewhere / "done")
    shutil.rmtree(first)
    before = _tree(elsewhere)
    ev = evaluate_run(elsewhere / "done")
    assert _tree(elsewhere) == before and sorted(p.name for p in elsewhere.iterdir()) == ["done"]
    assert not first.exists()  # no mask store made under the recorded out_dir
    saved = json.loads((elsewhere / "done" / "result.json").read_text())["test"]
    assert ev.to_dict()["random_rate"] == saved["random_rate"]
    assert ev.mask_sha256 == saved["mask_sha256"]


# ----------------------------------------------------------------------------------- what a rerun repeats


def _differing_fields(doc: str) -> set[str]:
    """The `result.json` fields docs/reliability.md says differ between runs (the line `Fields that differ: ...`)."""
    line = next(li for li in doc.splitlines() if li.startswith("Fields of `result.json` that differ"))
    return {f.strip("` .") for f in line.split(":", 1)[1].split(",")}


def test_reliability_doc_says_exactly_which_result_fields_a_moved_and_resumed_run_repeats(
    finished: Path, interrupted: Path, tmp_path: Path
) -> None:
    """A run copied to another out_dir (with its masks) and resumed ends with a result.json identical to the
    uninterrupted run's in every field but those the page names; none of its paths is absolute."""
    doc = (Path(__file__).parents[2] / "docs" / "reliability.md").read_text()
    differ = _differing_fields(doc)
    assert differ == {"provenance"}
    other = tmp_path / "other"
    _copy_run(interrupted, "cut", other)
    shutil.copytree(finished / "masks", other / "masks", dirs_exist_ok=True)
    train_run(_cfg(other, "cut"), resume=True)
    a = json.loads((finished / "done" / "result.json").read_text())
    b = json.loads((other / "cut" / "result.json").read_text())
    assert {k for k in a if a[k] != b[k]} <= differ
    assert a["test"]["mask_files"] and all(not os.path.isabs(p) for p in b["test"]["mask_files"].values())
    assert not os.path.isabs(b["checkpoint"])
    assert str(tmp_path) not in json.dumps({k: v for k, v in b.items() if k not in differ})
