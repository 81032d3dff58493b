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
    from robult.training.rundir import check_reusable, load_bundle

    old = _cfg(tmp_path, "train.accelerator=cpu")
    train_run(old)
    new = _cfg(tmp_path, "train.num_threads=1", "train.logger=tensorboard", "train.progress=true")
    assert new.train.accelerator == "auto"
    check_reusable(tmp_path / "x", load_bundle(new).train, new)  # no error
    other = _cfg(tmp_path, "train.lr=0.5")
    with pytest.raises(ConfigError, match="holds a run with another config"):
        check_reusable(tmp_path / "x", load_bundle(other).train, other)


def test_ddp_looks_for_unused_parameters_only_where_a_batch_can_lack_a_modality() -> None:
    from robult.training.trainer import ddp_strategy

    def find(strategy: object) -> bool:
        return strategy._ddp_kwargs["find_unused_parameters"]  # type: ignore[attr-defined]

    complete, gappy = torch.ones(6, 3, dtype=torch.bool), torch.ones(6, 3, dtype=torch.bool)
    gappy[2, 1] = False
    two = load_config(None, ["train.devices=2"])
    assert ddp_strategy(load_config(None, []), gappy, 0.5) == "auto"  # one device: no DDP
    assert not find(ddp_strategy(two, complete, 0.0))
    assert find(ddp_strategy(two, gappy, 0.0))
    assert find(ddp_strategy(two, complete, 0.3))  # modality dropout
    forced = load_config(None, ["train.devices=2", "train.find_unused_parameters=true"])
    assert find(ddp_strategy(forced, complete, 0.0))
    never = load_config(None, ["train.devices=2", "train.find_unused_parameters=false"])
    assert not find(ddp_strategy(never, gappy, 0.5))


def test_ddp_waits_train_ddp_timeout_seconds_for_the_other_processes() -> None:
    """The collectives' timeout is ``train.ddp_timeout`` (default 5 minutes, not torch's 30), in every DDP run,
    also one whose layout comes from a launcher (``distributed=True`` with ``train.devices`` left at 1)."""
    from datetime import timedelta

    from robult.training.trainer import ddp_strategy

    complete = torch.ones(6, 3, dtype=torch.bool)
    assert ddp_strategy(load_config(None, ["train.devices=2"]), complete, 0.0)._timeout == timedelta(minutes=5)
    cfg = load_config(None, ["train.ddp_timeout=42"])
    assert ddp_strategy(cfg, complete, 0.0, distributed=True)._timeout == timedelta(seconds=42)
    with pytest.raises(ConfigError, match=r"train\.ddp_timeout"):
        load_config(None, ["train.ddp_timeout=0"])


@pytest.mark.parametrize(
    ("env", "devices", "layout"),
    [
        ({}, "2", ("2", 1)),
        ({"TORCHELASTIC_RUN_ID": "x", "WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "1"}, "1", (1, 2)),
        ({"TORCHELASTIC_RUN_ID": "x", "WORLD_SIZE": "8", "LOCAL_WORLD_SIZE": "4"}, "4", (4, 2)),
        ({"TORCHELASTIC_RUN_ID": "x", "WORLD_SIZE": "1", "LOCAL_WORLD_SIZE": "1"}, "1", (1, 1)),
        ({"SLURM_NTASKS": "4", "SLURM_NNODES": "2", "SLURM_NTASKS_PER_NODE": "2", "SLURM_JOB_NAME": "r"}, "1", (2, 2)),
        ({"SLURM_NTASKS": "2", "SLURM_NNODES": "2", "SLURM_JOB_NAME": "r"}, "1", (1, 2)),
        ({"SLURM_NTASKS": "2", "SLURM_NNODES": "1", "SLURM_JOB_NAME": "interactive"}, "1", (1, 1)),
    ],
)
def test_a_launcher_sets_the_processes_per_node_and_the_nodes(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], devices: str, layout: tuple
) -> None:
    """Started by torchrun or srun, the Trainer's ``devices`` and ``num_nodes`` come from the launcher's
    environment; ``train.devices`` stays at 1 or names the processes per node, anything else is one line."""
    from robult.training.trainer import trainer_layout

    for key in ("TORCHELASTIC_RUN_ID", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "SLURM_NTASKS", "SLURM_NNODES",
                "SLURM_NTASKS_PER_NODE", "SLURM_JOB_NAME", "SLURM_JOB_NUM_NODES"):  # fmt: skip
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    got = trainer_layout(load_config(None, [f"train.devices={devices}"]))
    assert (str(got[0]), got[1]) == (str(layout[0]), layout[1])
    if env and layout != (1, 1):
        with pytest.raises(ConfigError, match=r"train.devices=3, but the launcher started \d process\(es\) per node"):
            trainer_layout(load_config(None, ["train.devices=3"]))


class _TwoBranches(torch.nn.Module):
    """A module whose forward pass uses ``used`` and never ``idle`` (a user encoder with a spare parameter)."""

    def __init__(self) -> None:
        super().__init__()
        self.used = torch.nn.Linear(3, 1)
        self.idle = torch.nn.Linear(3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.used(x)


def test_a_parameter_a_step_leaves_without_gradient_is_named_with_the_setting() -> None:
    """Under DDP without find_unused_parameters, the check after each backward pass names the first trainable
    parameter the step gave no gradient (DDP itself would fail only at the next step, in its own words); a frozen
    parameter, or one every step uses, passes."""
    from robult.training.trainer import parameter_without_gradient, unused_parameter_check

    torch.manual_seed(0)
    module = _TwoBranches()
    module(torch.randn(4, 3)).sum().backward()
    assert parameter_without_gradient(module) == "idle.weight"
    check = unused_parameter_check()
    said = r"the parameter 'idle\.weight' without a gradient.*set train\.find_unused_parameters=true$"
    with pytest.raises(RuntimeError, match=said):
        check.on_after_backward(None, module)
    module.idle.requires_grad_(False)  # frozen: no gradient expected
    assert parameter_without_gradient(module) is None
    check.on_after_backward(None, module)
    module.zero_grad(set_to_none=True)  # the optimizer's reset before every step: the next step is judged alone
    assert parameter_without_gradient(module) == "used.weight"


class _Stop(Exception):
    pass


@pytest.mark.parametrize(
    ("settings", "checked"),
    [
        (["train.devices=2"], True),  # every modality present, no dropout: DDP does not look for unused parameters
        (["train.devices=2", "train.modality_dropout=0.3"], False),  # DDP looks for them (find_unused_parameters)
        (["train.devices=2", "train.find_unused_parameters=true"], False),
        ([], False),  # one process: a parameter without a gradient harms nothing
    ],
)
def test_the_unused_parameter_check_runs_exactly_where_ddp_does_not_look_for_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, settings: list[str], checked: bool
) -> None:
    names: list[str] = []

    def fit(self: L.Trainer, *args: object, **kwargs: object) -> None:
        names.extend(type(c).__name__ for c in self.callbacks)
        raise _Stop

    monkeypatch.setattr(L.Trainer, "fit", fit)
    cfg = _cfg(tmp_path, "train.accelerator=cpu", *settings)
    with pytest.raises(_Stop):
        train_run(cfg)
    assert ("UnusedParameterCheck" in names) == checked


@pytest.mark.parametrize("method", ["robult_labeled_only", "supervised"])
def test_unlabeled_data_for_a_labeled_only_method_is_one_error_line(tmp_path: Path, method: str) -> None:
    with pytest.raises(ConfigError, match=rf"key 'train\.use_unlabeled': true contradicts method '{method}'"):
        _cfg(tmp_path, f"train.method={method}", "train.use_unlabeled=true")  # refused with the config
    cfg = _cfg(tmp_path, f"train.method={method}")
    cfg.train.use_unlabeled = True  # a config built in code, past validation: refused before anything is written
    with pytest.raises(ConfigError, match=rf"^train\.use_unlabeled: true contradicts method '{method}'"):
        train_run(cfg)
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize(
    ("method", "loss_class"),
    [
        ("robult_no_rec", "robult.losses.robult.RobultLoss"),
        ("shared_private", "robult.losses.baselines.SharedPrivateLoss"),
        ("contrastive", "robult.losses.baselines.InstanceContrastiveLoss"),
    ],
)
def test_a_loss_without_reconstruction_skips_the_branch_and_trains_the_same(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, method: str, loss_class: str
) -> None:
    """A loss that does not read the model's reconstruction (robult with lambda_rec = 0; shared_private, which
    reconstructs itself; contrastive) asks for none in its training steps, and its weights are bit for bit those of
    a run that computes the unused branch."""
    import importlib

    from safetensors.torch import load_file

    from robult.models.robult import RobultModel

    module, name = loss_class.rsplit(".", 1)
    loss_cls = getattr(importlib.import_module(module), name)

    asked: list[bool] = []
    real_forward = RobultModel.forward

    def recording(self, batch, with_reconstruction=True, validate=True):
        if self.training:
            asked.append(with_reconstruction)
        return real_forward(self, batch, with_reconstruction, validate)

    monkeypatch.setattr(RobultModel, "forward", recording)
    skipped = train_run(_cfg(tmp_path, f"train.method={method}", "name=skip"), evaluate_test=False)
    assert asked and not any(asked)
    asked.clear()
    monkeypatch.setattr(loss_cls, "needs_reconstruction", True)
    computed = train_run(_cfg(tmp_path, f"train.method={method}", "name=full"), evaluate_test=False)
    assert asked and all(asked)
    a, b = (load_file(r.run_dir / "model" / "weights.safetensors") for r in (skipped, computed))
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
