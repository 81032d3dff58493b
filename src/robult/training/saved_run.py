"""A saved run scored again: its checkpoint found and loaded, its model scored on the test split with the masks
it was scored with (``robult evaluate``), and the mask files ``result.json`` names relative to the run directory.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from torch import nn

from robult.config import RunConfig, load_config
from robult.data.registry import DatasetBundle
from robult.methods import build_method
from robult.models.base import MultimodalModel
from robult.training.checkpoint import load_weights
from robult.training.rundir import CHECKPOINT_DIR, load_bundle, read_run_json


def fit_weights(model: MultimodalModel, bundle: DatasetBundle) -> None:
    """The model's own choices on the validation split (:meth:`MultimodalModel.after_fit`: Robult's subset weights
    when ``model.subset_weights = validation``); deterministic, so a reload repeats them."""
    model.after_fit(bundle.val, bundle.task, bundle.modality_names, bundle.primary_metric)


def relative_to_run(path: Path, run_dir: Path) -> str:
    """``path`` relative to the run directory when inside it (as ``result.json`` records its checkpoint)."""
    return str(path.relative_to(run_dir)) if path.is_relative_to(run_dir) else str(path)


def masks_relative(test: dict[str, Any], run_dir: Path) -> dict[str, Any]:
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
    test = read_run_json(path).get("test") or {}
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


def rebuild_run(path: Path, command: str) -> tuple[Path, Path, RunConfig, DatasetBundle, nn.Module, nn.Module]:
    """A run's directory, best checkpoint, config, dataset and freshly built ``(model, criterion)`` (no weights loaded
    yet), for ``command`` (named in the error when the run's ``config.yaml`` is missing)."""
    run_dir, ckpt = find_checkpoint(path)
    cfg_path = run_dir / "config.yaml"
    if not cfg_path.is_file():
        raise FileNotFoundError(f"{cfg_path}: missing; {command} needs the run's resolved config")
    cfg = load_config(cfg_path)
    _check_reloadable(cfg, cfg_path)
    bundle = load_bundle(cfg)
    model, criterion = build_method(
        cfg.train.method, bundle.modalities, bundle.task, cfg.model.model_dump(), cfg.loss.model_dump()
    )
    return run_dir, ckpt, cfg, bundle, model, criterion


def artefact_from_checkpoint(run: str | Path) -> Path:
    """Write ``<run>/model/`` for a run trained before runs wrote one: its config and best checkpoint (loaded with
    ``weights_only=True``) and the dataset, reloaded for its fitted normalisation."""
    from robult.inference import write_run_model

    run_dir, ckpt, cfg, bundle, model, criterion = rebuild_run(Path(run), "`robult export`")
    holder = nn.Module()  # the Lightning module's layout (model.*, criterion.*) without Lightning
    holder.model, holder.criterion = model, criterion
    epoch = load_weights(holder, ckpt)
    return write_run_model(run_dir, model, bundle, cfg, best_epoch=epoch)


def evaluate_run(path: Path, protocols: Sequence[str] | None = None, masks_dir: Path | None = None) -> Any:
    """Rebuild a run's model from its ``config.yaml``, load its checkpoint, evaluate on the test split.

    The run is self-contained wherever it was moved or copied: without ``masks_dir`` the test masks are read from
    the store its ``result.json`` names relative to the run directory (``../masks`` for ``robult train``), or,
    when that store did not travel with the run, made in memory from their seed (nothing is written outside the
    run directory); either way each mask's SHA-256 must be the one ``result.json`` recorded, so an altered mask is
    an error naming it."""
    from robult.training.module import MethodModule

    run_dir, ckpt, cfg, bundle, model, criterion = rebuild_run(path, "`robult evaluate`")
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
