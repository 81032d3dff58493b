"""``robult train``: method names in the help (from the registry), Ctrl-C says how to resume, ``--tuned``."""

from __future__ import annotations

import signal
from pathlib import Path

import lightning as L
import pytest
import yaml
from typer.testing import CliRunner

from robult.cli import app
from robult.methods import METHODS

runner = CliRunner()

TINY = [
    "dataset.options.n_samples=200",
    "train.max_epochs=3",
    "train.patience=0",
    "train.progress=false",
    "model.hidden_dim=16",
    "model.encoder_hidden=[16]",
    "eval.rates=[0.0]",
]


def _args(tmp_path: Path, *extra: str) -> list[str]:
    args = ["train", "--dataset", "synthetic", *extra]
    for item in [*TINY, f"out_dir={tmp_path}"]:
        args += ["--set", item]
    return args


@pytest.mark.parametrize("command", ["train", "benchmark", "tune"])
def test_method_help_lists_the_registry(command: str) -> None:
    result = runner.invoke(app, [command, "--help"], env={"COLUMNS": "400", "TERMINAL_WIDTH": "400"})
    assert result.exit_code == 0
    text = " ".join(result.output.split())
    assert ", ".join(sorted(METHODS)) in text


class _CtrlC(L.Callback):
    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
        if trainer.current_epoch == self.epoch:
            raise KeyboardInterrupt


def _interrupting(monkeypatch: pytest.MonkeyPatch, epoch: int) -> None:
    import robult.training.run as run_mod

    real = run_mod.train_run
    monkeypatch.setattr(run_mod, "train_run", lambda cfg, **kw: real(cfg, callbacks=[_CtrlC(epoch)], **kw))


def test_ctrl_c_says_how_to_resume_and_the_hint_works(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    handler = signal.getsignal(signal.SIGINT)
    _interrupting(monkeypatch, epoch=1)
    result = runner.invoke(app, _args(tmp_path, "--method", "supervised"))
    assert result.exit_code == 130
    lines = [line for line in result.output.splitlines() if "interrupted" in line]
    assert len(lines) == 1 and "Traceback" not in result.output
    assert lines[0].startswith("interrupted; continue with: robult train --dataset synthetic --method supervised")
    assert lines[0].endswith("--resume")
    assert signal.getsignal(signal.SIGINT) == handler  # Lightning leaves SIGINT ignored; the handler is restored
    monkeypatch.undo()
    import shlex

    again = runner.invoke(app, shlex.split(lines[0].split(": ", 1)[1])[1:])  # the printed command, as given
    assert again.exit_code == 0, again.output
    assert (tmp_path / "synthetic-supervised-r0.05-s0" / "result.json").is_file()


def test_ctrl_c_before_the_first_checkpoint_says_to_start_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _interrupting(monkeypatch, epoch=0)
    result = runner.invoke(app, _args(tmp_path))
    assert result.exit_code == 130
    assert (
        "interrupted before the first checkpoint; start again with: robult train --dataset synthetic" in result.output
    )


def _tuned(tmp_path: Path) -> Path:
    directory = tmp_path / "tuned"
    directory.mkdir()
    entry = {"overrides": {"loss.temperature": 0.3, "train.lr": 0.004}, "val_score": 0.5}
    doc = {"dataset": "synthetic", "settings": {"robult": {0.05: entry}}}
    (directory / "synthetic.yaml").write_text(yaml.safe_dump(doc))
    return directory


def test_tuned_settings_apply_under_the_command_line(tmp_path: Path) -> None:
    tuned = _tuned(tmp_path)
    result = runner.invoke(
        app, [*_args(tmp_path, "--method", "robult", "--tuned", str(tuned)), "--set", "train.lr=0.002"]
    )
    assert result.exit_code == 0, result.output
    saved = yaml.safe_load((tmp_path / "synthetic-robult-r0.05-s0" / "config.yaml").read_text())
    assert saved["loss"]["temperature"] == 0.3  # from the tuned file
    assert saved["train"]["lr"] == 0.002  # --set wins over the tuned file


def test_tuned_errors_are_one_line(tmp_path: Path) -> None:
    tuned = _tuned(tmp_path)
    missing = runner.invoke(app, _args(tmp_path, "--method", "supervised", "--tuned", str(tuned)))
    assert missing.exit_code == 2
    assert "no tuned settings for supervised at label ratio 0.05; run `robult tune" in missing.output
    as_config = runner.invoke(app, ["train", "-c", str(tuned / "synthetic.yaml")])
    assert as_config.exit_code == 2
    assert f"a tuned-settings file (`robult tune --write`), not a run config; pass --tuned {tuned}" in as_config.output
