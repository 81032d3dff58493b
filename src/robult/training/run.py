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
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import shutil
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from robult.batch import check_dataset, collate
from robult.config import ConfigError, RunConfig, check_use_unlabeled, config_to_yaml, load_config
from robult.data.dataset import MultimodalDataset
from robult.data.registry import DatasetBundle, load_dataset
from robult.data.splits import labeled_subset
from robult.evaluation.metrics import higher_is_better
from robult.methods import build_method, get_method
from robult.models.base import MultimodalModel
from robult.utils.io import atomic_write_json, atomic_write_text
from robult.utils.paths import path_component_problem

CHECKPOINT_DIR = "checkpoints"
USER_DATASETS = ("user", "table")  # read from the user's own path: a run is named after the data (run_name)
IN_MEMORY = "arrays"  # DatasetBundle.source of data made in Python (robult.data.arrays.bundle_from_arrays)
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


def load_bundle(cfg: RunConfig, seed: int | None = None) -> DatasetBundle:
    """The dataset of a config (split seed = the config's training seed unless given)."""
    d = cfg.dataset
    return load_dataset(
        d.name,
        data_dir=d.data_dir,
        seed=cfg.train.seed if seed is None else seed,
        val_fraction=d.val_fraction,
        **d.options,
    )


def label_source(train: MultimodalDataset, cfg: RunConfig) -> str:
    """Where a run's training labels come from: ``"given"`` (the dataset marks some training rows unlabeled, e.g.
    the user format's ``labeled:`` file, and ``train.given_labels`` is ``use``: exactly its labeled rows) or
    ``"label_ratio"`` (a seeded stratified ``train.label_ratio`` share of the training split, among the rows the
    dataset marks labeled)."""
    if cfg.train.given_labels == "use" and not bool(train.labeled.all()):
        return "given"
    return "label_ratio"


def _subset_indices(train: MultimodalDataset, cfg: RunConfig) -> tuple[torch.Tensor, list[int], str]:
    """The labeled mask this code produces for ``cfg``, its indices and their SHA-256."""
    if label_source(train, cfg) == "given":
        mask = train.labeled.clone()
    elif bool(train.labeled.all()):
        mask = labeled_subset(train.target, train.task, cfg.train.label_ratio, cfg.train.seed)
    else:  # given_labels: subsample: stratified among the rows the dataset labels (the others' targets mean nothing)
        rows = train.labeled.nonzero().flatten()
        mask = torch.zeros_like(train.labeled)
        mask[rows[labeled_subset(train.target[rows], train.task, cfg.train.label_ratio, cfg.train.seed)]] = True
    indices = mask.nonzero().flatten().tolist()
    return mask, indices, hashlib.sha256(json.dumps(indices).encode()).hexdigest()


def labels_used(train: MultimodalDataset, cfg: RunConfig, mask: torch.Tensor) -> dict[str, Any]:
    """What a run says about its training labels (log line, ``result.json``): how many it used and why."""
    return {
        "n_labeled": int(mask.sum()),
        "n_train": len(train),
        "source": label_source(train, cfg),
        "dataset_labeled": int(train.labeled.sum()),
    }


def describe_labels(labels: Mapping[str, Any], cfg: RunConfig) -> str:
    """One line: how many training labels a run used and where they come from."""
    head = f"labels used: {labels['n_labeled']} of {labels['n_train']} training samples"
    if labels["source"] == "given":
        return (
            f"{head} (the dataset's labeled rows as given; train.label_ratio={cfg.train.label_ratio:g} not applied, "
            "set train.given_labels=subsample to apply it)"
        )
    return f"{head} (train.label_ratio={cfg.train.label_ratio:g}, seed {cfg.train.seed})"


def run_name(cfg: RunConfig, bundle: DatasetBundle | None = None) -> str:
    """The run directory's name inside ``out_dir``: ``cfg.name`` when set; for the user's own data
    (:data:`USER_DATASETS`: a ``dataset.yaml`` directory or a table) ``<the data's own name>-<method>-<labels>-
    s<seed>``, where ``<labels>`` says which labels training uses: ``labels<N>`` for the dataset's N labeled training
    rows taken as given, ``r<label_ratio>`` for a seeded share (so two datasets, or one with and without its
    ``labeled`` file, get runs of their own); else :meth:`RunConfig.run_name`. ``bundle``: the loaded data (default:
    loaded here)."""
    if cfg.name or cfg.dataset.name not in USER_DATASETS:
        return cfg.run_name()
    bundle = bundle or load_bundle(cfg)
    _, indices, _ = _subset_indices(bundle.train, cfg)
    given = label_source(bundle.train, cfg) == "given"
    labels = f"labels{len(indices)}" if given else f"r{cfg.train.label_ratio:g}"
    name = f"{bundle.name}-{cfg.train.method}-{labels}-s{cfg.train.seed}"
    problem = path_component_problem(name)  # the one rule for names that become a directory
    if problem is not None:
        raise ConfigError(f"run name {name!r} (from the dataset's name) cannot name a directory: {problem}; set name=")
    return name


def check_reusable(run_dir: Path, train: MultimodalDataset, cfg: RunConfig, kind: str = "run") -> None:
    """Raise unless the finished run in ``run_dir`` may be reused for ``cfg``: it must have been trained with the
    same config and on the labeled subset this code produces for it (e.g. not a run from before a change of the
    subset rule), so a reused result is never mixed with fresh ones. ``kind`` names the run in errors."""
    if not _same_config(load_config(Path(run_dir) / "config.yaml"), cfg):
        raise ConfigError(f"{run_dir}: holds a {kind} with another config; use another --out")
    path = Path(run_dir) / "labeled.json"
    if not path.is_file():
        raise ConfigError(f"{path}: missing; the run's labeled subset cannot be checked (delete {run_dir} to rerun)")
    saved = _read_json(path)
    _, indices, digest = _subset_indices(train, cfg)
    if saved.get("sha256") != digest:
        raise ConfigError(
            f"{path}: the run was trained on another labeled subset ({saved.get('n_labeled')} labels) than this "
            f"code produces for its config ({len(indices)} labels); delete {run_dir} to rerun it"
        )


def _read_json(path: Path) -> dict[str, Any]:
    """A JSON object a run wrote (``labeled.json``, ``result.json``); unreadable or malformed, a ``ValueError``
    naming the file."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(
            f"{path}: not valid JSON ({err}); the file is corrupted: restore it, or delete the run directory to rerun"
        ) from None
    if not isinstance(doc, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(doc).__name__}; the file is corrupted")
    return doc


def _labeled_mask(train: MultimodalDataset, cfg: RunConfig, run_dir: Path) -> torch.Tensor:
    """The seeded stratified labeled subset, saved to (or, on resume, read back from) ``labeled.json``."""
    path = run_dir / "labeled.json"
    mask, indices, digest = _subset_indices(train, cfg)
    if path.exists():
        saved = _read_json(path)
        if saved.get("sha256") != digest:
            raise ValueError(f"{path}: the saved labeled subset differs from the one this config produces")
    else:
        atomic_write_json(
            path,
            {
                "label_ratio": cfg.train.label_ratio,
                "source": label_source(train, cfg),
                "seed": cfg.train.seed,
                "n_train": len(train),
                "n_labeled": len(indices),
                "sha256": digest,
                "indices": indices,
            },
        )
    return mask


def _data_module(
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


def _train_option(cfg: RunConfig, method: Any, key: str, fallback: Any) -> Any:
    """A ``train`` option: the config's value when set, else the method's default, else ``fallback``."""
    value = getattr(cfg.train, key)
    if value is not None:
        return value
    return dict(method.train_fallbacks or {}).get(key, fallback)


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


def _quiet_lightning() -> None:
    """Keep Lightning's start-up banners ("GPU available", tips) out of the user's terminal."""
    import logging

    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        logging.getLogger(name).setLevel(logging.WARNING)


def _log_version(run_dir: Path, resume: bool) -> str:
    """``logs/metrics.csv`` for a fresh run; ``logs/resume-<k>/metrics.csv`` for the k-th resume (Lightning's CSV
    logger would otherwise delete the earlier epochs' log)."""
    if not resume:
        return ""
    k = 1
    while (run_dir / "logs" / f"resume-{k}").exists():
        k += 1
    return f"resume-{k}"


def load_weights(module: nn.Module, checkpoint: Path) -> int:
    """Load a Lightning checkpoint's ``state_dict`` with ``torch.load(weights_only=True)`` (no arbitrary
    unpickling of untrusted files) after verifying the checksum beside it. Returns the checkpoint's epoch (-1 when
    it has none)."""
    from robult.training.checkpoint import load_checkpoint_file

    state = load_checkpoint_file(checkpoint)
    if "state_dict" not in state:
        raise ValueError(f"{checkpoint}: no 'state_dict' key; is it a robult checkpoint?")
    try:
        module.load_state_dict(state["state_dict"])
    except RuntimeError as err:
        raise ValueError(_misfit(checkpoint, err)) from None
    return int(state.get("epoch", -1))


def _misfit(checkpoint: Path, err: RuntimeError) -> str:
    """One line for a checkpoint whose tensors do not fit the model (``load_state_dict``'s multi-line error)."""
    first = str(err).strip().splitlines()
    return (
        f"{checkpoint}: does not fit this run's model (another dataset, modality set or model config?): "
        f"{' '.join(line.strip() for line in first[:3])}"
    )


# where and how a run executes, not what it computes: not part of a run's identity (a run saved with
# ``accelerator: cpu``, the default before ``auto``, stays resumable and reusable)
EXECUTION_KEYS = ("accelerator", "num_threads", "logger", "progress", "num_workers")


def _same_config(a: RunConfig, b: RunConfig) -> bool:
    """Whether two configs describe the same run; ``out_dir`` and the execution options (:data:`EXECUTION_KEYS`)
    are not part of a run's identity, so a copied or moved run directory stays resumable and reusable."""
    x, y = a.model_dump(), b.model_dump()
    for d in (x, y):
        d.pop("out_dir", None)
        for key in EXECUTION_KEYS:
            d["train"].pop(key, None)
    return x == y


def _check_labels(bundle: DatasetBundle, cfg: RunConfig) -> None:
    """Refuse a training split with no labeled sample; warn about labels of a single class (classification) and
    about a modality that no training sample has but the test split scores."""
    train = bundle.train
    mask, indices, _ = _subset_indices(train, cfg)
    where = f"{bundle.name} training split"
    if not indices:
        raise ValueError(
            f"{where}: no labeled sample ({int(train.labeled.sum())} of {len(train)} rows carry a label, "
            f"train.label_ratio={cfg.train.label_ratio}); training needs labels"
        )
    if not bool(bundle.val.labeled.any()):
        raise ValueError(
            f"{bundle.name} validation split: no labeled sample among its {len(bundle.val)} rows; model selection "
            "scores labeled validation rows (label some, or change the split)"
        )
    if bundle.task.kind.value in ("multiclass", "binary"):
        classes = torch.unique(train.target[mask]).tolist()
        if len(classes) < 2:
            warnings.warn(
                f"{where}: every labeled sample ({len(indices)}) has class {classes[0]}; the classifier learns a "
                "single class and its scores are meaningless",
                UserWarning,
                stacklevel=3,
            )
    present = torch.as_tensor(train.present)
    for m, name in enumerate(bundle.modality_names):
        if not bool(present[:, m].any()):
            warnings.warn(
                f"{where}: modality {name!r} is absent from every training sample; its encoder stays untrained "
                "and its test scores are meaningless",
                UserWarning,
                stacklevel=3,
            )


def _check_run_state(run_dir: Path, cfg: RunConfig, resume: bool, overwrite: bool) -> None:
    """Raise unless ``run_dir`` may be trained as asked: a fresh run needs an empty place, ``resume`` an unfinished
    run with the same config; a finished run is only retrained with ``overwrite``."""
    if overwrite:
        return
    last = run_dir / CHECKPOINT_DIR / "last.ckpt"
    finished = (run_dir / "result.json").exists()
    if resume:
        if finished:
            raise FileExistsError(
                f"{run_dir}: the run is finished (result.json exists); --resume does not retrain it; pass "
                "--overwrite to retrain it from scratch and replace its results"
            )
        if not last.is_file():
            raise FileNotFoundError(f"cannot resume: {last} does not exist")
        saved = run_dir / "config.yaml"
        if saved.is_file() and not _same_config(load_config(saved), cfg):
            raise ConfigError(f"{saved}: the run was started with another config; resume with the same one")
    elif finished or last.exists():
        raise FileExistsError(f"{run_dir} already holds a run; pass --resume to continue it or choose another name")


def _run_paths(run_dir: Path, resume: bool) -> list[str]:
    """What a run is about to write in ``run_dir`` (relative; ``dir/`` for a directory it creates), listed in
    ``written.json`` before it is written (:mod:`robult.training.written`)."""
    from robult.inference.predictor import CONFIG, INFO, MANIFEST, MODEL_DIR, NORMALIZATION, WEIGHTS

    checkpoints = [f"{CHECKPOINT_DIR}/{n}{s}" for n in ("best.ckpt", "last.ckpt") for s in ("", ".sha256")]
    version = _log_version(run_dir, resume)
    logs = "logs/" + (f"{version}/" if version else "")
    model = [f"{MODEL_DIR}/{n}" for n in (MANIFEST, INFO, CONFIG, WEIGHTS, NORMALIZATION)]
    return [
        "config.yaml",
        "labeled.json",
        f"{CHECKPOINT_DIR}/",
        *checkpoints,
        "logs/",
        logs,
        f"{logs}metrics.csv",
        f"{logs}hparams.yaml",
        f"{MODEL_DIR}/",
        *model,
        "result.json",
    ]


def _record_event_files(run_dir: Path, before: set[Path]) -> None:
    """List the TensorBoard event files a run wrote (their names hold a time and a pid, known only afterwards)."""
    from robult.training.written import record

    new = sorted(p for p in (run_dir / "logs").rglob("events.out.tfevents.*") if p not in before)
    if new:
        record(run_dir, [p.relative_to(run_dir).as_posix() for p in new])


def _remove_created(run_dir: Path, top: Path | None) -> None:
    """Undo the creation of ``run_dir`` (and of its empty parents up to ``top``, the first that did not exist):
    a run refused before it started leaves nothing behind."""
    if top is None:
        return
    shutil.rmtree(run_dir, ignore_errors=True)
    parent = run_dir.parent
    while top != run_dir and parent.is_relative_to(top):
        try:
            parent.rmdir()  # only when empty: another run may have started in the same out_dir meanwhile
        except OSError:
            break
        if parent == top:
            break
        parent = parent.parent


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
    _check_logger(cfg)

    import lightning as L

    from robult.evaluation.protocols import check_store_name
    from robult.training.checkpoint import _launcher_rank_zero, check_not_in_use
    from robult.training.written import clear_temp_files, clear_written, record

    method = get_method(cfg.train.method)
    check_use_unlabeled(cfg)  # again: a config built in code skips validate_config
    # the lock first: a second process on a busy run is told at once, before it spends time loading data
    try:  # a finished run (or nothing to resume) is refused before anything is touched, the lock file included
        _check_run_state(run_dir, cfg, resume, overwrite)
    except (FileExistsError, FileNotFoundError, ConfigError):
        if _launcher_rank_zero():  # unless another process is writing it: then that is what the user must hear
            check_not_in_use(run_dir)
        raise
    top = next((p for p in [*reversed(run_dir.parents), run_dir] if not p.exists()), None)
    run_dir.mkdir(parents=True, exist_ok=True)
    writer = _launcher_rank_zero()  # under DDP the global rank 0 process writes the run's bookkeeping
    with run_lock(run_dir):
        try:
            _check_run_state(run_dir, cfg, resume, overwrite)
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
            _check_labels(bundle, cfg)
            if writer:  # a kill inside an atomic write leaves its temporary file: resume or rerun clears it
                clear_temp_files(run_dir)
            if overwrite:
                if writer and any(p.name != ".lock" for p in run_dir.iterdir()):
                    clear_written(run_dir, cfg.out_dir)  # only what robult listed as written, inside out_dir
                resume = False
            if writer:
                record(run_dir, _run_paths(run_dir, resume))
            atomic_write_text(run_dir / "config.yaml", config_to_yaml(cfg))
            labeled = _labeled_mask(bundle.train, cfg, run_dir)
        except BaseException:
            _remove_created(run_dir, top)
            raise
        events = set((run_dir / "logs").rglob("events.out.tfevents.*")) if writer else set()
        try:
            with _num_threads(_run_threads(cfg, model)):
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
                        _record_event_files(run_dir, events)
        except RuntimeError as err:  # resuming a last.ckpt of another dataset / modality set: one line, no dump
            if not (resume and "Error(s) in loading state_dict" in str(err)):
                raise
            raise ValueError(_misfit(run_dir / CHECKPOINT_DIR / "last.ckpt", err)) from None
        except OSError as err:  # e.g. a full disk while a log is written: name at least the run directory
            if err.filename is not None or err.errno is None:
                raise
            why = f"{err.strerror or type(err).__name__} (while writing the run)"
            raise OSError(err.errno, why, str(run_dir)) from err


def _check_logger(cfg: RunConfig) -> None:
    """``train.logger: tensorboard`` needs the ``tensorboard`` package (an optional extra): one line if missing."""
    import importlib.util

    if cfg.train.logger == "tensorboard" and importlib.util.find_spec("tensorboard") is None:
        raise ConfigError(
            "train.logger: 'tensorboard' needs the tensorboard package: pip install 'robult[tensorboard]' "
            "(or set train.logger=csv)"
        )


def _loggers(cfg: RunConfig, run_dir: Path, resume: bool) -> list[Any]:
    """The CSV log (always: diagnostics and resume read it) and, with ``train.logger: tensorboard``, TensorBoard
    event files beside it (``tensorboard --logdir <run>/logs``)."""
    from lightning.pytorch.loggers import CSVLogger

    version = _log_version(run_dir, resume)
    loggers: list[Any] = [CSVLogger(run_dir, name="logs", version=version)]
    if cfg.train.logger == "tensorboard":
        from lightning.pytorch.loggers import TensorBoardLogger

        loggers.append(TensorBoardLogger(run_dir, name="logs", version=version, default_hp_metric=False))
    return loggers


@contextlib.contextmanager
def _interrupt_as_keyboard_interrupt(trainer: Any) -> Iterator[None]:
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


def _run_threads(cfg: RunConfig, model: nn.Module) -> int | None:
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
def _num_threads(n: int | None) -> Iterator[None]:
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


def ddp_strategy(cfg: RunConfig, train_present: Any, modality_dropout: float, distributed: bool | None = None) -> Any:
    """Lightning's strategy: ``auto`` in one process, else DDP (``distributed``; default: ``train.devices`` is not
    1) with ``train.ddp_timeout`` as the collectives' timeout (:mod:`robult.training.liveness`), looking for
    parameters without a gradient (``find_unused_parameters``) only where a step can leave one:
    ``train.find_unused_parameters`` when set, else when a training batch can lack a modality entirely (an absent
    entry in ``train_present`` or modality dropout), which leaves that modality's encoder out of the step. Every
    built-in method's trainable parameters all get a gradient from a batch with every modality
    (``tests/test_methods.py``)."""
    if distributed is None:
        distributed = str(cfg.train.devices) != "1"
    if not distributed:
        return "auto"
    from datetime import timedelta

    from lightning.pytorch.strategies import DDPStrategy

    find = cfg.train.find_unused_parameters
    if find is None:
        find = modality_dropout > 0 or not bool(torch.as_tensor(train_present).all())
    return DDPStrategy(find_unused_parameters=find, timeout=timedelta(seconds=cfg.train.ddp_timeout))


def _unused_parameter_hint(err: RuntimeError) -> RuntimeError:
    """DDP's error for a parameter left without a gradient, with the setting that allows it."""
    return RuntimeError(
        "a training step left a parameter without a gradient, which DDP without find_unused_parameters does not "
        "allow (a user encoder with parameters its forward pass does not use?): set "
        f"train.find_unused_parameters=true. DDP said: {str(err).splitlines()[0]}"
    )


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
    data = _data_module(train, bundle.val, cfg, uses_unlabeled, given=labels["source"] == "given")
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
    _quiet_lightning()
    devices, num_nodes = trainer_layout(cfg)
    trainer = L.Trainer(
        accelerator=cfg.train.accelerator,
        devices=devices,
        num_nodes=num_nodes,
        strategy=ddp_strategy(
            cfg, train.present, module.modality_dropout, distributed=str(devices) != "1" or num_nodes > 1
        ),
        precision=cfg.train.precision,
        max_epochs=cfg.train.max_epochs,
        callbacks=cbs,
        logger=_loggers(cfg, run_dir, resume),
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
        # resume goes through SafeCheckpointIO: checksum verified, loaded weights-only whatever the environment
        with _interrupt_as_keyboard_interrupt(trainer), guard.watching(trainer.global_rank, trainer.world_size):
            try:
                trainer.fit(module, datamodule=data, ckpt_path=str(last) if resume else None)
            except RuntimeError as err:
                if "find_unused_parameters" in str(err) and not cfg.train.find_unused_parameters:
                    raise _unused_parameter_hint(err) from err
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
                "checkpoint": _relative(best_path, run_dir),
                "test": _masks_relative(evaluation.to_dict(), run_dir),
                # what produced the result (differs between an interrupted-and-resumed run and an uninterrupted one)
                "provenance": provenance(trainer.strategy.root_device, trainer.world_size),
            },
        )
    return RunResult(run_dir, best_score, best_epoch, evaluation, cfg, labels, trainer.global_rank)


def fit_weights(model: MultimodalModel, bundle: DatasetBundle) -> None:
    """The model's own choices on the validation split (:meth:`MultimodalModel.after_fit`: Robult's subset weights
    when ``model.subset_weights = validation``); deterministic, so a reload repeats them."""
    model.after_fit(bundle.val, bundle.task, bundle.modality_names, bundle.primary_metric)


def _relative(path: Path, root: Path) -> str:
    return str(path.relative_to(root)) if path.is_relative_to(root) else str(path)


def _masks_relative(test: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    """``test`` (an evaluation's dict) with its mask files relative to the run directory (``../masks/...``), so
    ``result.json`` names no absolute path and stays true when ``out_dir`` is moved or copied whole."""
    files = test.get("mask_files") or {}
    rel = {k: Path(os.path.relpath(os.path.abspath(v), os.path.abspath(run_dir))).as_posix() for k, v in files.items()}
    return {**test, "mask_files": rel}


def _recorded_masks(run_dir: Path) -> tuple[Path | None, dict[str, str]]:
    """From a finished run's ``result.json``: the mask store its test masks were read from (resolved relative to
    the run directory where it has moved) and their SHA-256 by rate key; ``(None, {})`` for an unfinished run."""
    path = run_dir / "result.json"
    if not path.is_file():
        return None, {}
    test = _read_json(path).get("test") or {}
    files, digests = test.get("mask_files") or {}, test.get("mask_sha256") or {}
    root = None
    for recorded in files.values():
        file = Path(recorded) if Path(recorded).is_absolute() else run_dir / recorded
        if not Path(recorded).is_absolute() or file.is_file():  # an older run's absolute path, still there
            root = file.parent.parent.parent  # <root>/<dataset>/<split>/<file>
        break
    return root, dict(digests)


def _check_recorded_masks(evaluation: Any, recorded: Mapping[str, str], run_dir: Path) -> None:
    """Raise when a test mask differs from the one the run was scored with (its SHA-256 in ``result.json``)."""
    for key, digest in recorded.items():
        got = evaluation.mask_sha256.get(key)
        if got is not None and got != digest:
            where = evaluation.mask_files.get(key) or f"the {key} mask"
            raise ValueError(
                f"{where}: SHA-256 {got} differs from the one {run_dir / 'result.json'} records for this run "
                f"({digest}); the mask was altered or is another run's (restore it, or pass --masks-dir)"
            )


def evaluate_checkpointed(
    model: nn.Module,
    bundle: DatasetBundle,
    cfg: RunConfig,
    masks_dir: Path | None = None,
    protocols: Sequence[str] | None = None,
    progress: bool = False,
    saved_masks: bool = True,
) -> Any:
    """Score ``model`` on the test split with the configured protocols and the shared saved masks (``saved_masks``
    false: the seeded masks made in memory, nothing written)."""
    from robult.evaluation.evaluate import evaluate
    from robult.evaluation.protocols import MaskStore

    root = masks_dir or Path(cfg.eval.masks_dir or Path(cfg.out_dir) / "masks")
    return evaluate(
        model,
        bundle.test,
        bundle.task,
        bundle.modality_names,
        store=MaskStore(root) if saved_masks else None,
        dataset_name=bundle.name,
        split="test",
        rates=tuple(cfg.eval.rates),
        mask_seed=cfg.eval.mask_seed,
        batch_size=cfg.eval.batch_size,
        protocols=tuple(protocols or cfg.eval.protocols),
        progress=progress,
    )


def find_checkpoint(path: Path) -> tuple[Path, Path]:
    """``(run_dir, checkpoint)`` from a run directory or a checkpoint file inside one."""
    path = Path(path)
    if path.is_dir():
        ckpt = path / CHECKPOINT_DIR / "best.ckpt"
        if not ckpt.is_file():
            ckpt = path / CHECKPOINT_DIR / "last.ckpt"
        if not ckpt.is_file():
            raise FileNotFoundError(
                f"{path}: no checkpoints/best.ckpt or checkpoints/last.ckpt; is it a run directory?"
            )
        return path, ckpt
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such run directory or checkpoint")
    run_dir = path.parent.parent if path.parent.name == CHECKPOINT_DIR else path.parent
    return run_dir, path


def _check_reloadable(cfg: RunConfig, cfg_path: Path) -> None:
    """A run trained on data made in Python cannot be reloaded by name: one line saying what works instead."""
    from robult.data.registry import registered_datasets

    name = cfg.dataset.name
    if name not in registered_datasets():
        raise ValueError(
            f"{cfg_path}: dataset.name {name!r} is not a registered dataset (data passed to train_run from Python?), "
            "so it cannot be reloaded by name; predict with `robult predict RUN --input DIR` or `robult.load(RUN)`, "
            "or write the data with robult.data.user.write_bundle and train with dataset.name=user"
        )


def evaluate_run(path: Path, protocols: Sequence[str] | None = None, masks_dir: Path | None = None) -> Any:
    """Rebuild a run's model from its ``config.yaml``, load its checkpoint, evaluate on the test split.

    The run is self-contained wherever it was moved or copied: without ``masks_dir`` the test masks are read from
    the store its ``result.json`` names relative to the run directory (``../masks`` for ``robult train``), or,
    when that store did not travel with the run, made in memory from their seed (nothing is written outside the
    run directory); either way each mask's SHA-256 must be the one ``result.json`` recorded, so an altered mask is
    an error naming it."""
    from robult.training.module import MethodModule

    run_dir, ckpt = find_checkpoint(path)
    cfg_path = run_dir / "config.yaml"
    if not cfg_path.is_file():
        raise FileNotFoundError(f"{cfg_path}: missing; `robult evaluate` needs the run's resolved config")
    cfg = load_config(cfg_path)
    _check_reloadable(cfg, cfg_path)
    bundle = load_bundle(cfg)
    model, criterion = build_method(
        cfg.train.method, bundle.modalities, bundle.task, cfg.model.model_dump(), cfg.loss.model_dump()
    )
    module = MethodModule(model, criterion, bundle.task, bundle.modality_names, bundle.primary_metric)
    load_weights(module, ckpt)
    fit_weights(module.model, bundle)  # deterministic: the same weights as when the run was scored
    root, recorded = _recorded_masks(run_dir)
    if masks_dir is not None:
        recorded = {}  # the user's own store: its manifest's checksums are the reference
    elif root is None:  # not scored yet (or scored without saved masks): the store beside the run
        root = run_dir.parent / "masks" if cfg.eval.masks_dir is None else Path(cfg.eval.masks_dir)
    store_here = masks_dir is not None or (root is not None and root.is_dir())
    evaluation = evaluate_checkpointed(
        module.model, bundle, cfg, masks_dir or root, protocols, progress=True, saved_masks=store_here
    )
    if not store_here:
        evaluation.mask_sha256.update(_seeded_mask_digests(bundle, cfg))
    _check_recorded_masks(evaluation, recorded, run_dir)
    return evaluation


def _seeded_mask_digests(bundle: DatasetBundle, cfg: RunConfig) -> dict[str, str]:
    """Rate key -> SHA-256 of the saved form of each seeded test mask (what a mask store would hold)."""
    from robult.evaluation.protocols import rate_key, seeded_mask_sha256

    n, m = len(bundle.test), len(bundle.modality_names)
    return {rate_key(r): seeded_mask_sha256(n, m, r, cfg.eval.mask_seed) for r in cfg.eval.rates}
