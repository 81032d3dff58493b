"""Fault injection: a run killed at any point and resumed ends with the uninterrupted run's ``result.json``, bit for
bit; checkpoints are loaded weights-only after a checksum check; a finished or busy run is never changed.

Every kill is simulated in-process (an exception from a callback or a patched write, which Lightning does not
catch), except one real ``SIGKILL`` of a child process. See docs/reliability.md."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import pytest
import torch

from robult.config import load_config
from robult.evaluation.protocols import MANIFEST, MaskStore, mask_filename, random_rate_mask
from robult.training import checkpoint as ckpt_mod
from robult.training.checkpoint import (
    CheckpointError,
    RunInUseError,
    checksum_path,
    run_lock,
    verify_checkpoint,
    write_checksummed,
)
from robult.training.run import evaluate_run, train_run

FAST = [
    "dataset.options.n_samples=600",
    "train.max_epochs=4",
    "train.patience=0",
    "train.batch_size=64",
    "model.hidden_dim=32",
    "model.encoder_hidden=[32]",
    "model.projector_hidden=[32]",
    "train.progress=false",
    "eval.rates=[0.0, 0.5]",
]


class Killed(BaseException):
    """A simulated kill: a BaseException, so no ``except Exception`` on the way swallows it."""


def _cfg(out: Path, name: str, *extra: str) -> Any:
    return load_config(None, [*FAST, f"out_dir={out}", f"name={name}", *extra])


def _result(out: Path, name: str) -> bytes:
    """The run's result.json without its provenance (date and device of the process that finished it)."""
    doc = json.loads((out / name / "result.json").read_text())
    doc.pop("provenance")
    return json.dumps(doc).encode()


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, bytes]:
    """The uninterrupted run (its masks are then in ``out/masks`` for every run of the module)."""
    out = tmp_path_factory.mktemp("faults") / "runs"
    train_run(_cfg(out, "full"))
    return out, _result(out, "full")


class _KillAt(L.Callback):
    def __init__(self, hook: str, epoch: int, batch: int = 0) -> None:
        self.hook, self.epoch, self.batch = hook, epoch, batch

    def _maybe(self, trainer: Any, hook: str, batch_idx: int) -> None:
        if hook == self.hook and trainer.current_epoch == self.epoch and batch_idx == self.batch:
            raise Killed(hook)

    def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int) -> None:
        self._maybe(trainer, "train", batch_idx)

    def on_validation_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int, *args: Any) -> None:
        self._maybe(trainer, "validation", batch_idx)


@pytest.mark.parametrize(("hook", "epoch", "batch"), [("train", 2, 1), ("validation", 1, 0), ("train", 0, 3)])
def test_kill_in_training_or_validation_then_resume_is_exact(reference, hook: str, epoch: int, batch: int) -> None:
    out, expected = reference
    name = f"kill-{hook}-{epoch}"
    cfg = _cfg(out, name)
    with pytest.raises(Killed):
        train_run(cfg, callbacks=[_KillAt(hook, epoch, batch)])
    assert not (out / name / "result.json").exists()
    if epoch == 0:  # killed before the first checkpoint: nothing to resume, the run is started again
        with pytest.raises(FileNotFoundError, match="cannot resume"):
            train_run(cfg, resume=True)
        train_run(cfg)
    else:
        train_run(cfg, resume=True)
    assert _result(out, name) == expected


@pytest.mark.parametrize("stage", ["before-rename", "after-rename"])
def test_kill_inside_a_checkpoint_write_then_resume_is_exact(reference, monkeypatch, stage: str) -> None:
    """last.ckpt of epoch 2 is being written: killed after the checksum file lists the new and old digests and
    before the rename, or after the rename and before the checksum file is rewritten."""
    out, expected = reference
    name = f"kill-write-{stage}"
    real = ckpt_mod.atomic_open
    seen = {"n": 0}

    def atomic_open(path: Any, mode: str = "w", encoding: str | None = "utf-8") -> Any:
        p = Path(path)
        if p.name.startswith("last.ckpt"):
            seen["n"] += 1
            # 3 writes per save (sidecar, file, sidecar); the 3rd save is epoch 2
            if stage == "before-rename" and seen["n"] == 8:
                raise Killed("writing last.ckpt")
            if stage == "after-rename" and seen["n"] == 9:
                raise Killed("rewriting last.ckpt.sha256")
        return real(path, mode, encoding)

    monkeypatch.setattr(ckpt_mod, "atomic_open", atomic_open)
    cfg = _cfg(out, name)
    with pytest.raises(Killed):
        train_run(cfg)
    monkeypatch.setattr(ckpt_mod, "atomic_open", real)
    last = out / name / "checkpoints" / "last.ckpt"
    verify_checkpoint(last)  # whichever file is there matches a listed digest
    epoch = torch.load(last, weights_only=True)["epoch"]
    assert epoch == (1 if stage == "before-rename" else 2)
    assert not list(last.parent.glob(".*.tmp"))  # no temporary file left behind
    train_run(cfg, resume=True)
    assert _result(out, name) == expected


def test_kill_between_mask_file_and_manifest(tmp_path: Path, monkeypatch) -> None:
    """The first run writes a mask file and is killed before its manifest entry; the next evaluation in the same
    output directory adopts the file (its bytes are what the seed regenerates) and the resumed run is exact."""
    from robult.evaluation import protocols

    out = tmp_path / "runs"
    real = protocols.atomic_write_json

    def write_json(path: Any, obj: Any) -> None:
        if Path(path).name == MANIFEST:
            raise Killed("between mask file and manifest")
        real(path, obj)

    monkeypatch.setattr(protocols, "atomic_write_json", write_json)
    with pytest.raises(Killed):
        train_run(_cfg(out, "killed"))
    monkeypatch.setattr(protocols, "atomic_write_json", real)
    assert list((out / "masks").rglob("*.npy")) and not list((out / "masks").rglob(MANIFEST))
    train_run(_cfg(out, "full"))  # not blocked by the unlisted file
    train_run(_cfg(out, "killed"), resume=True)  # training had finished: only the evaluation runs again
    assert _result(out, "killed") == _result(out, "full")


def test_real_sigkill_mid_epoch_then_resume_is_exact(reference) -> None:
    """A child process SIGKILLs itself mid-epoch (no Python cleanup at all); its lock dies with it."""
    out, expected = reference
    code = textwrap.dedent(
        f"""
        import os, signal, sys
        import lightning as L
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from test_faults import _cfg
        from robult.training.run import train_run

        class Kill(L.Callback):
            def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
                if trainer.current_epoch == 2 and batch_idx == 2:
                    os.kill(os.getpid(), signal.SIGKILL)

        train_run(_cfg({str(out)!r}, "sigkill"), callbacks=[Kill()])
        """
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
    train_run(_cfg(out, "sigkill"), resume=True)
    assert _result(out, "sigkill") == expected


# ------------------------------------------------------------------------------------------- finished and busy


def test_resume_of_a_finished_run_changes_nothing_without_overwrite(reference) -> None:
    out, _ = reference
    before = {p: p.stat().st_mtime_ns for p in (out / "full").rglob("*") if p.is_file()}
    with pytest.raises(FileExistsError, match=r"finished .*--overwrite"):
        train_run(_cfg(out, "full"), resume=True)
    with pytest.raises(FileExistsError, match="--resume"):
        train_run(_cfg(out, "full"))
    assert {p: p.stat().st_mtime_ns for p in (out / "full").rglob("*") if p.is_file()} == before


def test_overwrite_retrains_a_finished_run(reference, tmp_path: Path) -> None:
    out, expected = reference
    cfg = _cfg(out, "again")
    train_run(cfg)
    (out / "again" / "result.json").write_text("{}")
    train_run(cfg, overwrite=True)
    assert _result(out, "again") == expected
    assert not (out / "again" / "logs" / "resume-1").exists()


def test_a_busy_run_directory_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "runs"
    run_dir = out / "busy"
    run_dir.mkdir(parents=True)
    with run_lock(run_dir):
        assert (run_dir / ".lock").read_text().strip() == str(os.getpid())
        with pytest.raises(RunInUseError, match=rf"in use by another process \(pid {os.getpid()}"):
            train_run(_cfg(out, "busy"))
    assert not (run_dir / "config.yaml").exists()  # nothing was written by the refused run


def test_copied_run_directory_stays_resumable(reference, tmp_path: Path) -> None:
    import shutil

    out, expected = reference
    cfg = _cfg(out, "moved")
    with pytest.raises(Killed):
        train_run(cfg, callbacks=[_KillAt("train", 2, 1)])
    other = tmp_path / "elsewhere"
    shutil.copytree(out / "moved", other / "moved")
    shutil.rmtree(out / "moved")
    train_run(_cfg(other, "moved"), resume=True)
    got = _result(other, "moved")
    # the test scores are the reference's; only the mask file paths (masks of another out_dir) differ
    assert got.replace(str(other).encode(), str(out).encode()) == expected


# -------------------------------------------------------------------------------------------- checkpoint files


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> Any:
        return (Path.write_text, (self.marker, "pwned"))


def test_booby_trapped_checkpoint_is_refused_whatever_the_environment(reference, tmp_path, monkeypatch) -> None:
    out, _ = reference
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    cfg = _cfg(out, "trapped")
    with pytest.raises(Killed):
        train_run(cfg, callbacks=[_KillAt("train", 2, 1)])
    marker = tmp_path / "payload-ran"
    last = out / "trapped" / "checkpoints" / "last.ckpt"
    live = tmp_path / "live.ckpt"
    live.write_bytes(_zip_checkpoint(_Payload(marker)))
    torch.load(live)  # the trap is live: a load that leaves weights_only to the environment runs it
    assert marker.read_text() == "pwned"
    marker.unlink()
    # the attacker also writes a matching checksum file
    for data in (pickle.dumps({"state_dict": _Payload(marker)}), _zip_checkpoint(_Payload(marker))):
        write_checksummed(last, data)
        with pytest.raises(CheckpointError, match=r"last\.ckpt: not a loadable weights-only checkpoint"):
            train_run(cfg, resume=True)
        assert not marker.exists()
    for name in ("best.ckpt",):
        write_checksummed(out / "trapped" / "checkpoints" / name, _zip_checkpoint(_Payload(marker)))
        with pytest.raises(CheckpointError, match=rf"{name}: not a loadable"):
            evaluate_run(out / "trapped")
        assert not marker.exists()


def _zip_checkpoint(payload: Any) -> bytes:
    """A torch.save zip archive whose pickle holds ``payload`` (torch.save itself pickles it)."""
    import io

    buf = io.BytesIO()
    torch.save({"state_dict": payload}, buf)
    return buf.getvalue()


def test_bit_flip_in_a_checkpoint_is_refused(reference, tmp_path: Path) -> None:
    import shutil

    out, _ = reference
    run = tmp_path / "copy"
    shutil.copytree(out / "full", run)
    best = run / "checkpoints" / "best.ckpt"
    data = bytearray(best.read_bytes())
    data[len(data) // 2] ^= 0x01
    best.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"best\.ckpt: SHA-256 .* differs .*corrupted"):
        evaluate_run(run)
    last = run / "checkpoints" / "last.ckpt"
    last.write_bytes(last.read_bytes()[:-100])  # truncated
    with pytest.raises(CheckpointError, match=r"last\.ckpt: SHA-256"):
        verify_checkpoint(last)


def test_checksummed_write_survives_a_kill_at_every_step(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "x.ckpt"
    write_checksummed(path, b"old")
    real = ckpt_mod.atomic_open
    for step in (1, 2, 3):
        calls = {"n": 0}

        def atomic_open(
            p: Any, mode: str = "w", encoding: str | None = "utf-8", _step: int = step, _calls: dict = calls
        ) -> Any:
            _calls["n"] += 1
            if _calls["n"] == _step:
                raise Killed
            return real(p, mode, encoding)

        monkeypatch.setattr(ckpt_mod, "atomic_open", atomic_open)
        with pytest.raises(Killed):
            write_checksummed(path, b"new")
        monkeypatch.setattr(ckpt_mod, "atomic_open", real)
        verify_checkpoint(path)
        assert path.read_bytes() == (b"old" if step <= 2 else b"new")
        write_checksummed(path, b"old")
    assert checksum_path(path).read_text().split()[0] == hashlib.sha256(b"old").hexdigest()


def test_unlisted_mask_file_is_adopted_only_when_it_is_the_seeded_mask(tmp_path: Path) -> None:
    store = MaskStore(tmp_path)
    directory = store.directory("synth", "test")
    directory.mkdir(parents=True)
    good = random_rate_mask(30, 2, 0.5, 0).numpy()
    np.save(directory / mask_filename(0.5, 0), good, allow_pickle=False)
    saved = store.get_or_create("synth", "test", 30, ["a", "b"], 0.5, 0)
    assert torch.equal(saved.mask, torch.from_numpy(good))
    assert mask_filename(0.5, 0) in store.manifest("synth", "test")
    np.save(directory / mask_filename(0.3, 0), ~random_rate_mask(30, 2, 0.3, 0).numpy(), allow_pickle=False)
    with pytest.raises(ValueError, match=r"not listed .* not that of the mask this seed generates"):
        store.get_or_create("synth", "test", 30, ["a", "b"], 0.3, 0)


def test_cli_says_in_one_line_that_a_finished_run_is_not_retrained(reference) -> None:
    from typer.testing import CliRunner

    from robult.cli import app

    out, expected = reference
    args = ["train", *[a for s in [*FAST, f"out_dir={out}", "name=full"] for a in ("--set", s)], "--resume"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 2
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and "the run is finished" in lines[0] and "--overwrite" in lines[0], res.output
    assert _result(out, "full") == expected


def test_only_the_global_rank_zero_process_locks(tmp_path: Path, monkeypatch) -> None:
    """DDP ranks other than 0 run the same run: they must not find it 'in use' by rank 0."""
    with run_lock(tmp_path):
        monkeypatch.setenv("LOCAL_RANK", "1")
        with run_lock(tmp_path):  # no RunInUseError
            pass
        monkeypatch.setenv("LOCAL_RANK", "0")
        with pytest.raises(RunInUseError), run_lock(tmp_path):
            pass
