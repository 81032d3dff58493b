"""Training options: ``train.logger`` (csv | tensorboard), ``train.num_threads``, ``train.accelerator = auto``."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import lightning as L
import pytest
import torch

from robult.config import ConfigError, RunConfig, load_config
from robult.training.run import train_run

from ..conftest import TINY_SYNTHETIC


def _cfg(tmp_path: Path, *extra: str) -> RunConfig:
    return load_config(None, [*TINY_SYNTHETIC, f"out_dir={tmp_path}", "name=x", *extra])


def test_defaults() -> None:
    t = RunConfig().train
    assert t.accelerator == "auto" and t.logger == "csv" and t.num_threads is None


@pytest.mark.skipif(importlib.util.find_spec("tensorboard") is None, reason="tensorboard is not installed")
def test_tensorboard_logger_writes_event_files_beside_the_csv_log(tmp_path: Path) -> None:
    result = train_run(_cfg(tmp_path, "train.logger=tensorboard"), evaluate_test=False)
    logs = result.run_dir / "logs"
    assert list(logs.glob("events.out.tfevents.*"))
    assert (logs / "metrics.csv").is_file()  # the CSV log stays: diagnostics and resume read it


def test_tensorboard_missing_is_one_error_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "tensorboard" else real(name, *a))
    with pytest.raises(ConfigError, match=r"^train\.logger: 'tensorboard' needs .*pip install 'robult\[tensorboard\]'"):
        train_run(_cfg(tmp_path, "train.logger=tensorboard"))
    assert not (tmp_path / "x").exists()
    with pytest.raises(ConfigError, match=r"key 'train\.logger'"):
        load_config(None, ["train.logger=wandb"])


class _Threads(L.Callback):
    def __init__(self) -> None:
        self.seen: list[int] = []

    def on_train_batch_start(self, *args: object) -> None:
        self.seen.append(torch.get_num_threads())


def test_num_threads_applies_during_the_run_and_is_restored(tmp_path: Path) -> None:
    before = torch.get_num_threads()
    probe = _Threads()
    train_run(_cfg(tmp_path, "train.num_threads=1"), callbacks=[probe], evaluate_test=False)
    assert probe.seen and set(probe.seen) == {1}
    assert torch.get_num_threads() == before
    with pytest.raises(ConfigError, match=r"key 'train\.num_threads'"):
        load_config(None, ["train.num_threads=0"])


def test_auto_accelerator_is_the_cpu_in_tests(tmp_path: Path) -> None:
    """conftest hides GPUs (unless ROBULT_TEST_GPU=1), so ``auto`` trains on the CPU and tests stay deterministic."""
    import json

    result = train_run(_cfg(tmp_path))
    assert json.loads((result.run_dir / "result.json").read_text())["provenance"]["device"].startswith("cpu (")


def test_a_run_saved_with_the_old_cpu_default_stays_reusable(tmp_path: Path) -> None:
    """Execution options (accelerator, threads, logger, progress, workers) are not part of a run's identity."""
    from robult.training.run import check_reusable, load_bundle

    old = _cfg(tmp_path, "train.accelerator=cpu")
    train_run(old)
    new = _cfg(tmp_path, "train.num_threads=1", "train.logger=tensorboard", "train.progress=true")
    assert new.train.accelerator == "auto"
    check_reusable(tmp_path / "x", load_bundle(new).train, new)  # no error
    other = _cfg(tmp_path, "train.lr=0.5")
    with pytest.raises(ConfigError, match="holds a run with another config"):
        check_reusable(tmp_path / "x", load_bundle(other).train, other)
