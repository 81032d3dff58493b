"""Train and evaluate one run: the function behind ``robult train`` and ``robult benchmark``.

Run directory layout (``<out_dir>/<name>/``)::

    config.yaml        the resolved config
    labeled.json       the labeled subset of the training split (indices, ratio, seed, SHA-256)
    checkpoints/       best.ckpt (selected on validation, see robult.training.module), last.ckpt (the last
                       finished epoch, for --resume), each with a .sha256 beside it
    logs/metrics.csv   per-epoch losses and validation scores
    result.json        test scores under every protocol, labels used, provenance (package, git commit, torch,
                       device, date); written atomically when the run ends
    model/             the trained model artefact (robult.load, robult predict)
    written.json       every path robult wrote here, listed before it is written: --overwrite deletes only these
                       (robult.training.written)
    .lock              held while a process trains the run (see robult.training.checkpoint.run_lock)

A killed run resumed with ``--resume`` ends with the ``result.json`` of an uninterrupted one, every field identical
but ``provenance`` (see docs/reliability.md).

This module holds the training entry (:func:`train_run`) and re-exports what callers use from its parts:
:mod:`robult.training.labels` (which rows are labeled), :mod:`robult.training.rundir` (the run directory's name,
state and bookkeeping), :mod:`robult.training.trainer` (Lightning, loggers, threads, DDP),
:mod:`robult.training.checkpoint` (checkpoints, loading weights, the lock) and :mod:`robult.training.saved_run`
(a saved run scored again: :func:`evaluate_run`).
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from robult.batch import check_dataset
from robult.config import ConfigError, RunConfig, check_use_unlabeled, config_to_yaml
from robult.data.registry import DatasetBundle
from robult.evaluation.metrics import higher_is_better
from robult.methods import build_method, get_method
from robult.training.checkpoint import load_weights
from robult.training.labels import check_labels, describe_labels, labels_used
from robult.training.rundir import (
    CHECKPOINT_DIR,
    IN_MEMORY,
    USER_DATASETS,
    check_reusable,
    check_run_state,
    labeled_mask,
    load_bundle,
    record_event_files,
    remove_created,
    run_name,
    run_paths,
)
from robult.training.saved_run import (
    evaluate_checkpointed,
    evaluate_run,
    find_checkpoint,
    fit_weights,
    masks_relative,
    relative_to_run,
)
from robult.training.trainer import (
    _train_option,
    check_logger,
    data_module,
    ddp_strategy,
    finds_unused_parameters,
    interrupt_as_keyboard_interrupt,
    loggers,
    num_threads,
    quiet_lightning,
    run_threads,
    stderr_progress_bar,
    trainer_layout,
    unused_parameter_check,
)
from robult.utils.io import atomic_write_json, atomic_write_text

# the entry points of training and evaluation, wherever they live in robult.training
__all__ = [
    "CHECKPOINT_DIR",
    "IN_MEMORY",
    "USER_DATASETS",
    "RunResult",
    "check_reusable",
    "ddp_strategy",
    "describe_labels",
    "evaluate_checkpointed",
    "evaluate_run",
    "find_checkpoint",
    "fit_weights",
    "load_bundle",
    "load_weights",
    "run_name",
    "stderr_progress_bar",
    "train_run",
    "trainer_layout",
]
log = logging.getLogger(__name__)


@dataclass
class RunResult:
    """What a finished run returns (also in ``result.json``)."""

    run_dir: Path
    best_score: float
    best_epoch: int
    evaluation: Any  # robult.evaluation.evaluate.EvaluationResult
    config: RunConfig
    labels: dict[str, Any] = field(default_factory=dict)  # training labels used (see labels_used)
    rank: int = 0  # this process's rank under DDP (rank 0 evaluates and writes the artefacts)


def train_run(
    cfg: RunConfig,
    *,
    resume: bool = False,
    overwrite: bool = False,
    bundle: DatasetBundle | None = None,
    encoders: Mapping[str, nn.Module] | None = None,
    callbacks: Sequence[Any] = (),
    masks_dir: Path | None = None,
    evaluate_test: bool = True,
    trial: bool = False,
) -> RunResult:
    """Train one method on one dataset, select the best validation checkpoint, evaluate it on the test split.

    Args:
        cfg: the validated run config.
        resume: continue from ``checkpoints/last.ckpt`` of an interrupted run with the same config; the result is
            the one an uninterrupted run gives. A finished run is not retrained (``FileExistsError``).
        overwrite: retrain from scratch whatever the run directory holds, replacing its results.
        bundle: an already loaded dataset (default: load ``cfg.dataset``); data made in Python
            (``bundle_from_arrays``) names the run and becomes its ``dataset.name``.
        encoders: user encoders by modality name (Python API).
        callbacks: extra Lightning callbacks.
        masks_dir: where test masks are stored (default ``cfg.eval.masks_dir`` or ``<out_dir>/masks``).
        evaluate_test: score the test split with the configured protocols.
        trial: a tuning trial, read for its best validation score alone (needs ``evaluate_test=False``): the
            subset weights (``model.subset_weights = validation``) are not fitted, and no model artefact
            (``<run>/model/``) is written, as its model would not be the one its config describes.

    Raises:
        RunInUseError: another process is training the same run directory.
    """
    from robult.training.checkpoint import run_lock

    if bundle is not None and bundle.source == IN_MEMORY and bundle.name != cfg.dataset.name:
        # data made in Python (bundle_from_arrays): the run is named after it and its config says which data it was
        cfg = cfg.model_copy(update={"dataset": cfg.dataset.model_copy(update={"name": bundle.name})})
    if trial and evaluate_test:
        raise ValueError("a tuning trial (trial=True) is not scored on the test split: pass evaluate_test=False")
    if bundle is None and not cfg.name and cfg.dataset.name in USER_DATASETS:
        bundle = load_bundle(cfg)  # the user's own data names the run (run_name): read its name and labels first
    run_dir = Path(cfg.out_dir) / run_name(cfg, bundle)  # the name is one path component: run_dir is inside out_dir
    check_logger(cfg)

    import lightning as L

    from robult.evaluation.protocols import check_store_name
    from robult.training.checkpoint import _launcher_rank_zero, check_not_in_use
    from robult.training.written import clear_temp_files, clear_written, record

    method = get_method(cfg.train.method)
    check_use_unlabeled(cfg)  # again: a config built in code skips validate_config
    # the lock first: a second process on a busy run is told at once, before it spends time loading data
    try:  # a finished run (or nothing to resume) is refused before anything is touched, the lock file included
        check_run_state(run_dir, cfg, resume, overwrite)
    except (FileExistsError, FileNotFoundError, ConfigError):
        if _launcher_rank_zero():  # unless another process is writing it: then that is what the user must hear
            check_not_in_use(run_dir)
        raise
    top = next((p for p in [*reversed(run_dir.parents), run_dir] if not p.exists()), None)
    run_dir.mkdir(parents=True, exist_ok=True)
    writer = _launcher_rank_zero()  # under DDP the global rank 0 process writes the run's bookkeeping
    with run_lock(run_dir):
        try:
            check_run_state(run_dir, cfg, resume, overwrite)
            bundle = bundle or load_bundle(cfg)
            check_store_name(bundle.name)  # the test masks' directory: a dataset's own name is refused now
            # seed before building so the initial weights depend only on the seed (on resume they come from
            # last.ckpt); every check that can fail on bad input (dataset, method options) runs before anything
            # is written
            L.seed_everything(cfg.train.seed, workers=True, verbose=False)
            model, criterion = build_method(
                cfg.train.method,
                bundle.modalities,
                bundle.task,
                cfg.model.model_dump(),
                cfg.loss.model_dump(),
                encoders,
            )
            # every row checked once here, before anything is written, so the steps need not check each batch
            check_dataset(bundle.train, bundle.modalities, f"{bundle.name} training split")
            check_dataset(bundle.val, bundle.modalities, f"{bundle.name} validation split")
            if evaluate_test:  # a bad test row is found now, not after hours of training
                check_dataset(bundle.test, bundle.modalities, f"{bundle.name} test split")
            check_labels(bundle, cfg)
            if writer:  # a kill inside an atomic write leaves its temporary file: resume or rerun clears it
                clear_temp_files(run_dir)
            if overwrite:
                if writer and any(p.name != ".lock" for p in run_dir.iterdir()):
                    clear_written(run_dir, cfg.out_dir)  # only what robult listed as written, inside out_dir
                resume = False
            if writer:
                record(run_dir, run_paths(run_dir, resume))
            atomic_write_text(run_dir / "config.yaml", config_to_yaml(cfg))
            labeled = labeled_mask(bundle.train, cfg, run_dir)
        except BaseException:
            remove_created(run_dir, top)
            raise
        events = set((run_dir / "logs").rglob("events.out.tfevents.*")) if writer else set()
        try:
            with num_threads(run_threads(cfg, model)):
                try:
                    return _train_locked(
                        cfg,
                        method,
                        model,
                        criterion,
                        bundle,
                        run_dir,
                        labeled,
                        resume,
                        callbacks,
                        masks_dir,
                        evaluate_test,
                        trial,
                    )
                finally:
                    if writer and cfg.train.logger == "tensorboard":
                        record_event_files(run_dir, events)
        except OSError as err:  # e.g. a full disk while a log is written: name at least the run directory
            if err.filename is not None or err.errno is None:
                raise
            why = f"{err.strerror or type(err).__name__} (while writing the run)"
            raise OSError(err.errno, why, str(run_dir)) from err


def _train_locked(
    cfg: RunConfig,
    method: Any,
    model: nn.Module,
    criterion: nn.Module,
    bundle: DatasetBundle,
    run_dir: Path,
    labeled: torch.Tensor,
    resume: bool,
    callbacks: Sequence[Any],
    masks_dir: Path | None,
    evaluate_test: bool,
    trial: bool,
) -> RunResult:
    """The body of :func:`train_run`, run while holding the run directory's lock."""
    import lightning as L
    from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint

    from robult.training.checkpoint import resume_state_callback, safe_checkpoint_io
    from robult.training.liveness import ProcessLostError, SignalGuard, collective_failure, is_collective_failure
    from robult.training.module import MethodModule

    last = run_dir / CHECKPOINT_DIR / "last.ckpt"
    maximize = higher_is_better(bundle.primary_metric)
    train = bundle.train.with_labeled(labeled)
    uses_unlabeled = cfg.train.use_unlabeled if cfg.train.use_unlabeled is not None else method.uses_unlabeled
    labels = labels_used(bundle.train, cfg, labeled)
    data = data_module(train, bundle.val, cfg, uses_unlabeled, given=labels["source"] == "given")
    log.info(describe_labels(labels, cfg))

    module = MethodModule(
        model,
        criterion,
        bundle.task,
        bundle.modality_names,
        bundle.primary_metric,
        lr=cfg.train.lr,
        weight_decay=cfg.train.weight_decay,
        seed=cfg.train.seed,
        modality_dropout=_train_option(cfg, method, "modality_dropout", 0.0),
        check_batches=False,
    )
    mode = "max" if maximize else "min"
    ckpt_dir = run_dir / CHECKPOINT_DIR
    # best.ckpt: the best validation score; last.ckpt: every finished epoch (after validation, early stopping
    # and best.ckpt have updated their state, so it holds theirs too: Lightning runs checkpoint callbacks last,
    # in list order). No "-v1" copies: a run directory has one writer (run_lock).
    best_ckpt = ModelCheckpoint(
        dirpath=ckpt_dir, filename="best", monitor="val/score", mode=mode, save_top_k=1, enable_version_counter=False
    )
    last_ckpt = ModelCheckpoint(dirpath=ckpt_dir, filename="last", save_top_k=1, enable_version_counter=False)
    guard = SignalGuard()  # a stopped or signalled rank ends every rank (robult.training.liveness)
    cbs: list[Any] = [resume_state_callback(), best_ckpt, last_ckpt, guard, *callbacks]
    if cfg.train.patience > 0:
        cbs.append(EarlyStopping(monitor="val/score", mode=mode, patience=cfg.train.patience))
    if cfg.train.progress:
        cbs.append(stderr_progress_bar())
    quiet_lightning()
    devices, num_nodes = trainer_layout(cfg)
    distributed = str(devices) != "1" or num_nodes > 1
    if distributed and not finds_unused_parameters(cfg, train.present, module.modality_dropout):
        cbs.append(unused_parameter_check())  # a parameter a step leaves without a gradient: one line naming it
    trainer = L.Trainer(
        accelerator=cfg.train.accelerator,
        devices=devices,
        num_nodes=num_nodes,
        strategy=ddp_strategy(cfg, train.present, module.modality_dropout, distributed=distributed),
        precision=cfg.train.precision,
        max_epochs=cfg.train.max_epochs,
        callbacks=cbs,
        logger=loggers(cfg, run_dir, resume),
        plugins=[safe_checkpoint_io()],
        default_root_dir=run_dir,
        enable_progress_bar=cfg.train.progress,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        use_distributed_sampler=False,
        log_every_n_steps=1,
    )
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        warnings.filterwarnings("ignore", message=".*LeafSpec.*")
        warnings.filterwarnings("ignore", message=".*Checkpoint directory .* exists and is not empty.*")
        # a log directory holding other files (yours, kept by --overwrite): Lightning replaces only its metrics.csv
        warnings.filterwarnings("ignore", message=".*Experiment logs directory .* exists and is not empty.*")
        warnings.filterwarnings("ignore", message=".*overridden `transfer_batch_to_device`.*")
        # every rank scores the whole validation split, so val/score is already the same on every rank
        warnings.filterwarnings("ignore", message=".*sync_dist=True.*when logging on epoch level.*")
        # resume goes through SafeCheckpointIO: checksum verified, loaded weights-only whatever the environment,
        # and MethodModule.on_load_checkpoint: a checkpoint of another model is one line naming the file and key
        with interrupt_as_keyboard_interrupt(trainer), guard.watching(trainer.global_rank, trainer.world_size):
            try:
                trainer.fit(module, datamodule=data, ckpt_path=str(last) if resume else None)
            except RuntimeError as err:
                if trainer.world_size > 1 and is_collective_failure(err):
                    line = collective_failure(
                        err, trainer.global_rank, trainer.world_size, guard.state, cfg.train.ddp_timeout
                    )
                    raise ProcessLostError(line) from err  # the guard's on_exception ended the launched ranks
                raise

    best_path = Path(best_ckpt.best_model_path) if best_ckpt.best_model_path else last
    best_epoch = load_weights(module, best_path)
    best_score = float(best_ckpt.best_model_score) if best_ckpt.best_model_score is not None else math.nan
    if trial:  # scored by best_score alone: no subset weights, hence no artefact of a model its config misdescribes
        return RunResult(run_dir, best_score, best_epoch, None, cfg, labels, trainer.global_rank)
    fit_weights(module.model, bundle)  # the subset weights (model.subset_weights), before anything is saved/scored

    if trainer.is_global_zero:  # the self-contained model artefact <run>/model/ (robult.load, robult predict)
        from robult.inference import write_run_model

        write_run_model(run_dir, module.model, bundle, cfg, best_epoch=best_epoch, best_val_score=best_score)

    evaluation = None
    if evaluate_test and trainer.is_global_zero:
        from robult.utils.provenance import provenance

        evaluation = evaluate_checkpointed(module.model, bundle, cfg, masks_dir)
        atomic_write_json(
            run_dir / "result.json",
            {
                "dataset": bundle.name,
                "method": cfg.train.method,
                "label_ratio": cfg.train.label_ratio,
                "labels": labels,
                "seed": cfg.train.seed,
                "metric": bundle.primary_metric,
                "higher_is_better": maximize,
                "modalities": bundle.modality_names,
                "best_val_score": best_score,
                "best_epoch": best_epoch,
                # relative to the run directory, which stays valid when the directory is copied or moved
                "checkpoint": relative_to_run(best_path, run_dir),
                "test": masks_relative(evaluation.to_dict(), run_dir),
                # what produced the result (differs between an interrupted-and-resumed run and an uninterrupted one)
                "provenance": provenance(trainer.strategy.root_device, trainer.world_size),
            },
        )
    return RunResult(run_dir, best_score, best_epoch, evaluation, cfg, labels, trainer.global_rank)
