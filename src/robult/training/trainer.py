"""How a run executes under Lightning, not what it computes: the data module, loggers and progress bar, CPU threads,
the process layout and DDP strategy, and Ctrl-C.

Lightning is imported inside the functions that need it, so importing this module stays cheap.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from robult.batch import collate
from robult.config import ConfigError, RunConfig
from robult.data.dataset import MultimodalDataset
from robult.training.rundir import log_version

log = logging.getLogger(__name__)


def _train_option(cfg: RunConfig, method: Any, key: str, fallback: Any) -> Any:
    """A ``train`` option: the config's value when set, else the method's default, else ``fallback``."""
    value = getattr(cfg.train, key)
    if value is not None:
        return value
    return dict(method.train_fallbacks or {}).get(key, fallback)


def data_module(
    train: MultimodalDataset, val: MultimodalDataset, cfg: RunConfig, uses_unlabeled: bool, given: bool = False
) -> Any:
    """A LightningDataModule whose train loader shards batches by the trainer's rank (built after DDP starts).
    ``given``: the labels are the dataset's own (the default labeled share follows their share, not label_ratio)."""
    import lightning as L

    from robult.training.sampler import SemiSupervisedBatchSampler

    t = cfg.train
    labeled = train.labeled.nonzero().flatten().numpy()
    unlabeled = (~train.labeled).nonzero().flatten().numpy() if uses_unlabeled else np.array([], dtype=np.int64)
    ratio = len(labeled) / max(1, len(train)) if given else t.label_ratio
    share = t.labeled_share if t.labeled_share is not None else max(ratio, 0.25)

    class RunData(L.LightningDataModule):
        def train_dataloader(self) -> torch.utils.data.DataLoader:
            rank, world = (self.trainer.global_rank, self.trainer.world_size) if self.trainer else (0, 1)
            sampler = SemiSupervisedBatchSampler(
                labeled, unlabeled, t.batch_size, share, seed=t.seed, rank=rank, world=world
            )
            return torch.utils.data.DataLoader(
                train, batch_sampler=sampler, collate_fn=collate, num_workers=t.num_workers
            )

        def val_dataloader(self) -> torch.utils.data.DataLoader:
            # every rank scores the whole validation split, so the selection score is identical on all ranks
            batches = torch.utils.data.BatchSampler(
                torch.utils.data.SequentialSampler(range(len(val))), cfg.eval.batch_size, drop_last=False
            )
            return torch.utils.data.DataLoader(val, batch_sampler=batches, collate_fn=collate, num_workers=0)

    return RunData()


# ------------------------------------------------------------------------------------- what the user sees


def stderr_progress_bar() -> Any:
    """Lightning's progress bar drawn on stderr (Lightning draws on stdout), so ``robult train > log`` keeps the
    bar on the terminal and the log free of progress frames, as ``benchmark`` and ``tune`` already do."""
    import sys

    from lightning.pytorch.callbacks import TQDMProgressBar

    class StderrProgressBar(TQDMProgressBar):
        def _on_stderr(self, make: Any) -> Any:
            with contextlib.redirect_stdout(sys.stderr):  # Lightning passes file=sys.stdout, read at call time
                return make()

        def init_sanity_tqdm(self) -> Any:
            return self._on_stderr(super().init_sanity_tqdm)

        def init_train_tqdm(self) -> Any:
            return self._on_stderr(super().init_train_tqdm)

        def init_validation_tqdm(self) -> Any:
            return self._on_stderr(super().init_validation_tqdm)

        def init_predict_tqdm(self) -> Any:
            return self._on_stderr(super().init_predict_tqdm)

        def init_test_tqdm(self) -> Any:
            return self._on_stderr(super().init_test_tqdm)

    return StderrProgressBar(leave=False)


def quiet_lightning() -> None:
    """Keep Lightning's start-up banners ("GPU available", tips) out of the user's terminal."""
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        logging.getLogger(name).setLevel(logging.WARNING)


def check_logger(cfg: RunConfig) -> None:
    """``train.logger: tensorboard`` needs the ``tensorboard`` package (an optional extra): one line if missing."""
    import importlib.util

    if cfg.train.logger == "tensorboard" and importlib.util.find_spec("tensorboard") is None:
        raise ConfigError(
            "train.logger: 'tensorboard' needs the tensorboard package: pip install 'robult[tensorboard]' "
            "(or set train.logger=csv)"
        )


def loggers(cfg: RunConfig, run_dir: Path, resume: bool) -> list[Any]:
    """The CSV log (always: diagnostics and resume read it) and, with ``train.logger: tensorboard``, TensorBoard
    event files beside it (``tensorboard --logdir <run>/logs``)."""
    from lightning.pytorch.loggers import CSVLogger

    version = log_version(run_dir, resume)
    out: list[Any] = [CSVLogger(run_dir, name="logs", version=version)]
    if cfg.train.logger == "tensorboard":
        from lightning.pytorch.loggers import TensorBoardLogger

        out.append(TensorBoardLogger(run_dir, name="logs", version=version, default_hp_metric=False))
    return out


@contextlib.contextmanager
def interrupt_as_keyboard_interrupt(trainer: Any) -> Iterator[None]:
    """Lightning answers Ctrl-C inside ``fit`` with ``sys.exit(1)`` and leaves SIGINT ignored; raise
    ``KeyboardInterrupt`` instead (callers, e.g. ``robult train``, say how to resume) and restore the handler."""
    import signal
    import threading

    main = threading.current_thread() is threading.main_thread()
    handler = signal.getsignal(signal.SIGINT) if main else None
    try:
        yield
    except SystemExit as err:
        if not trainer.interrupted:
            raise
        raise KeyboardInterrupt from err
    finally:
        if main and handler is not None and signal.getsignal(signal.SIGINT) != handler:
            signal.signal(signal.SIGINT, handler)


# --------------------------------------------------------------------------------------------- CPU threads


def run_threads(cfg: RunConfig, model: nn.Module) -> int | None:
    """The run's CPU threads: ``train.num_threads``, else (unless ``OMP_NUM_THREADS`` sets them) the measured
    default of :func:`robult.utils.threads.choose_threads` for this model and batch on this machine now. Warns when
    the count is likely oversubscribed (more threads than idle cores)."""
    import os

    from robult.utils.threads import choose_threads, oversubscription

    n = cfg.train.num_threads
    if n is None and "OMP_NUM_THREADS" not in os.environ:
        params = sum(p.numel() for p in model.parameters() if p.requires_grad)
        choice = choose_threads(params, cfg.train.batch_size)
        log.info("CPU threads: %d (%s; train.num_threads sets them)", choice.threads, choice.reason)
        n = choice.threads
    warning = oversubscription(torch.get_num_threads() if n is None else n)
    if warning is not None:
        warnings.warn(warning, UserWarning, stacklevel=3)
    return n


@contextlib.contextmanager
def num_threads(n: int | None) -> Iterator[None]:
    """``torch.set_num_threads(n)`` for the duration of a run (``None``: unchanged); the previous value returns."""
    if n is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


# -------------------------------------------------------------------------------------- processes and DDP


def trainer_layout(cfg: RunConfig) -> tuple[int | str, int]:
    """``(devices, num_nodes)`` for Lightning's Trainer. Started by a launcher (``srun``, ``torchrun``:
    :func:`robult.utils.distributed.launcher_layout`), the launcher's environment says how many processes run on
    each node and on how many nodes; ``train.devices`` is then left at 1 or names the processes per node.
    Otherwise ``train.devices`` processes on this machine (Lightning starts the others)."""
    from robult.utils.distributed import launcher_layout

    layout = launcher_layout()
    if layout is None:
        return cfg.train.devices, 1
    nodes, per_node = layout
    if str(cfg.train.devices) not in ("1", str(per_node)):
        raise ConfigError(
            f"train.devices={cfg.train.devices}, but the launcher started {per_node} process(es) per node on {nodes} "
            f"node(s): leave train.devices at 1 or set it to {per_node}"
        )
    return per_node, nodes


def finds_unused_parameters(cfg: RunConfig, train_present: Any, modality_dropout: float) -> bool:
    """Whether DDP looks for parameters without a gradient (``find_unused_parameters``): ``train.
    find_unused_parameters`` when set, else when a training batch can lack a modality entirely (an absent entry in
    ``train_present`` or modality dropout), which leaves that modality's encoder out of the step. Every built-in
    method's trainable parameters all get a gradient from a batch with every modality (``tests/test_methods.py``)."""
    find = cfg.train.find_unused_parameters
    if find is None:
        find = modality_dropout > 0 or not bool(torch.as_tensor(train_present).all())
    return bool(find)


def ddp_strategy(cfg: RunConfig, train_present: Any, modality_dropout: float, distributed: bool | None = None) -> Any:
    """Lightning's strategy: ``auto`` in one process, else DDP (``distributed``; default: ``train.devices`` is not
    1) with ``train.ddp_timeout`` as the collectives' timeout (:mod:`robult.training.liveness`), looking for
    parameters without a gradient only where a step can leave one (:func:`finds_unused_parameters`; where it does
    not, :func:`unused_parameter_check` names a parameter a step leaves out)."""
    if distributed is None:
        distributed = str(cfg.train.devices) != "1"
    if not distributed:
        return "auto"
    from datetime import timedelta

    from lightning.pytorch.strategies import DDPStrategy

    find = finds_unused_parameters(cfg, train_present, modality_dropout)
    return DDPStrategy(find_unused_parameters=find, timeout=timedelta(seconds=cfg.train.ddp_timeout))


def parameter_without_gradient(module: nn.Module) -> str | None:
    """The name of the first trainable parameter of ``module`` that the last backward pass gave no gradient
    (``.grad`` is ``None``: the optimizer sets every gradient to ``None`` before a step), or ``None``."""
    return next((name for name, p in module.named_parameters() if p.requires_grad and p.grad is None), None)


def unused_parameter_error(name: str) -> RuntimeError:
    """The error for a parameter a training step left without a gradient under DDP without find_unused_parameters."""
    return RuntimeError(
        f"a training step left the parameter {name!r} without a gradient, which DDP without find_unused_parameters "
        "does not allow (a user encoder with parameters its forward pass does not use?): set "
        "train.find_unused_parameters=true"
    )


def unused_parameter_check() -> Any:
    """A Lightning callback for DDP without ``find_unused_parameters``: after every backward pass, a trainable
    parameter left without a gradient stops the run with :func:`unused_parameter_error`.

    DDP averages gradients bucket by bucket and, without ``find_unused_parameters``, waits for every parameter's
    gradient; a parameter the step left out keeps its bucket from ever being averaged, which DDP reports only at
    the next step, in its own words. This check knows which parameter it is, at the step that left it out. It
    reads each parameter's ``.grad`` once per step: nothing is computed or synchronised."""
    import lightning as L

    class UnusedParameterCheck(L.Callback):
        def on_after_backward(self, trainer: Any, pl_module: Any) -> None:
            name = parameter_without_gradient(pl_module)
            if name is not None:
                raise unused_parameter_error(name)

    return UnusedParameterCheck()
