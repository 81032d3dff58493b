"""The run directory: its name, the data its config names, whether it may be trained or reused, and what robult
writes there (``labeled.json``, the ``written.json`` entries; the layout is in :mod:`robult.training.run`).

A run's identity is its config without ``out_dir`` and the execution options (:data:`EXECUTION_KEYS`), so a copied
or moved run directory stays resumable and reusable.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch

from robult.config import ConfigError, RunConfig, load_config
from robult.data.dataset import MultimodalDataset
from robult.data.registry import DatasetBundle, load_dataset
from robult.training.labels import label_source, subset_indices
from robult.training.written import record
from robult.utils.io import atomic_write_json
from robult.utils.paths import path_component_problem

CHECKPOINT_DIR = "checkpoints"
USER_DATASETS = ("user", "table")  # read from the user's own path: a run is named after the data (run_name)
IN_MEMORY = "arrays"  # DatasetBundle.source of data made in Python (robult.data.arrays.bundle_from_arrays)
# where and how a run executes, not what it computes: not part of a run's identity (a run saved with
# ``accelerator: cpu``, the default before ``auto``, stays resumable and reusable)
EXECUTION_KEYS = ("accelerator", "num_threads", "logger", "progress", "num_workers")


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
    _, indices, _ = subset_indices(bundle.train, cfg)
    given = label_source(bundle.train, cfg) == "given"
    labels = f"labels{len(indices)}" if given else f"r{cfg.train.label_ratio:g}"
    name = f"{bundle.name}-{cfg.train.method}-{labels}-s{cfg.train.seed}"
    problem = path_component_problem(name)  # the one rule for names that become a directory
    if problem is not None:
        raise ConfigError(f"run name {name!r} (from the dataset's name) cannot name a directory: {problem}; set name=")
    return name


def same_config(a: RunConfig, b: RunConfig) -> bool:
    """Whether two configs describe the same run; ``out_dir`` and the execution options (:data:`EXECUTION_KEYS`)
    are not part of a run's identity, so a copied or moved run directory stays resumable and reusable."""
    x, y = a.model_dump(), b.model_dump()
    for d in (x, y):
        d.pop("out_dir", None)
        for key in EXECUTION_KEYS:
            d["train"].pop(key, None)
    return x == y


def read_run_json(path: Path) -> dict[str, Any]:
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


def check_reusable(run_dir: Path, train: MultimodalDataset, cfg: RunConfig, kind: str = "run") -> None:
    """Raise unless the finished run in ``run_dir`` may be reused for ``cfg``: it must have been trained with the
    same config and on the labeled subset this code produces for it (e.g. not a run from before a change of the
    subset rule), so a reused result is never mixed with fresh ones. ``kind`` names the run in errors."""
    if not same_config(load_config(Path(run_dir) / "config.yaml"), cfg):
        raise ConfigError(f"{run_dir}: holds a {kind} with another config; use another --out")
    path = Path(run_dir) / "labeled.json"
    if not path.is_file():
        raise ConfigError(f"{path}: missing; the run's labeled subset cannot be checked (delete {run_dir} to rerun)")
    saved = read_run_json(path)
    _, indices, digest = subset_indices(train, cfg)
    if saved.get("sha256") != digest:
        raise ConfigError(
            f"{path}: the run was trained on another labeled subset ({saved.get('n_labeled')} labels) than this "
            f"code produces for its config ({len(indices)} labels); delete {run_dir} to rerun it"
        )


def labeled_mask(train: MultimodalDataset, cfg: RunConfig, run_dir: Path) -> torch.Tensor:
    """The seeded stratified labeled subset, saved to (or, on resume, read back from) ``labeled.json``."""
    path = run_dir / "labeled.json"
    mask, indices, digest = subset_indices(train, cfg)
    if path.exists():
        saved = read_run_json(path)
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


def check_run_state(run_dir: Path, cfg: RunConfig, resume: bool, overwrite: bool) -> None:
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
        if saved.is_file() and not same_config(load_config(saved), cfg):
            raise ConfigError(f"{saved}: the run was started with another config; resume with the same one")
    elif finished or last.exists():
        raise FileExistsError(f"{run_dir} already holds a run; pass --resume to continue it or choose another name")


def log_version(run_dir: Path, resume: bool) -> str:
    """``logs/metrics.csv`` for a fresh run; ``logs/resume-<k>/metrics.csv`` for the k-th resume (Lightning's CSV
    logger would otherwise delete the earlier epochs' log)."""
    if not resume:
        return ""
    k = 1
    while (run_dir / "logs" / f"resume-{k}").exists():
        k += 1
    return f"resume-{k}"


def run_paths(run_dir: Path, resume: bool) -> list[str]:
    """What a run is about to write in ``run_dir`` (relative; ``dir/`` for a directory it creates), listed in
    ``written.json`` before it is written (:mod:`robult.training.written`)."""
    from robult.inference.artefact import CONFIG, INFO, MANIFEST, MODEL_DIR, NORMALIZATION, WEIGHTS

    checkpoints = [f"{CHECKPOINT_DIR}/{n}{s}" for n in ("best.ckpt", "last.ckpt") for s in ("", ".sha256")]
    version = log_version(run_dir, resume)
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


def record_event_files(run_dir: Path, before: set[Path]) -> None:
    """List the TensorBoard event files a run wrote (their names hold a time and a pid, known only afterwards)."""
    new = sorted(p for p in (run_dir / "logs").rglob("events.out.tfevents.*") if p not in before)
    if new:
        record(run_dir, [p.relative_to(run_dir).as_posix() for p in new])


def remove_created(run_dir: Path, top: Path | None) -> None:
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
