"""``robult tune``: hyper-parameters chosen on the validation split, with the same search budget for every method.

For each method, trial 0 runs the committed defaults and trials ``1..N-1`` draw distinct settings from the
method's search space (its registry entry's ``search`` plus :data:`robult.methods.COMMON_SEARCH`), with a
generator seeded by the method's name and ``--seed``. Every trial trains on the same split and labeled subset
(the training seeds ``0..seeds-1``), and the trial with the best validation score (mean over seeds of the run's
selection score: the validation mean over all modality subsets of the primary metric) wins.
The test split is never read. A trial is a run reduced to that score (``train_run(trial=True)``): it fits no subset
weights (``model.subset_weights``, which the score does not depend on) and writes no model artefact; the runs that use
the tuned settings (``benchmark --tuned``, ``train --tuned``) do both.

Outputs: ``OUT/tune.json`` (the trial record, a result: every trial's settings, validation scores, best epochs)
and, with ``--write DIR``, each method's winner merged into ``DIR/<dataset>.yaml`` under (method, label ratio)
(:mod:`robult.experiments.grid`); ``robult benchmark --tuned DIR`` applies them. A finished trial is reused and an
interrupted one resumed, so re-running the command finishes the search.
"""

from __future__ import annotations

import json
import math
import statistics
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from robult.config import load_config
from robult.experiments.grid import grid_config, tuned_path, write_tuned
from robult.utils.distributed import launched_rank
from robult.utils.io import atomic_write_json

# two validation means closer than this are a tie (float noise of the same number of correct samples)
SCORE_TIE = 1e-6


def select_best(rows: list[dict[str, Any]], maximize: bool) -> dict[str, Any]:
    """The first of ``rows`` (trial order: trial 0 is the defaults) whose ``val_mean`` is within :data:`SCORE_TIE` of
    the best one: a tie keeps the earlier trial, so a float-noise difference never replaces the defaults."""
    best = (max if maximize else min)(r["val_mean"] for r in rows)
    return next(r for r in rows if abs(r["val_mean"] - best) <= SCORE_TIE)


def search_space(method: str) -> dict[str, list[Any]]:
    """The full space of ``method``: the common keys plus its own (from its registry entry)."""
    from robult.methods import get_method

    return get_method(method).search_space()  # unknown names fail here, naming the known ones


def sample_trials(method: str, trials: int, seed: int = 0) -> list[dict[str, Any]]:
    """``trials`` distinct settings: ``{}`` (the defaults) first, then seeded draws from the method's space."""
    if trials < 1:
        raise ValueError(f"--trials must be at least 1, got {trials}")
    space = search_space(method)
    keys = sorted(space)
    size = math.prod(len(space[k]) for k in keys)
    if trials > size + 1:
        raise ValueError(f"{method}: --trials {trials} exceeds the {size + 1} settings of its search space")
    rng = np.random.default_rng([seed, zlib.crc32(method.encode())])
    out: list[dict[str, Any]] = [{}]
    seen: set[tuple] = set()
    while len(out) < trials:
        pick = tuple(int(rng.integers(len(space[k]))) for k in keys)
        if pick in seen:
            continue
        seen.add(pick)
        out.append({k: space[k][i] for k, i in zip(keys, pick, strict=True)})
    return out


def run_tuning(
    dataset: str | None = None,
    data_dir: Path | None = None,
    methods: Sequence[str] = ("robult", "supervised"),
    label_ratio: float = 0.05,
    trials: int = 8,
    seeds: Sequence[int] = (0,),
    search_seed: int = 0,
    out: Path = Path("robult_runs/tune"),
    write: Path | None = None,
    config: Path | None = None,
    overrides: Sequence[str] | None = None,
) -> str:
    """Run the search; write ``OUT/tune.json`` and the winners to ``write`` (if given). Returns a text table."""
    from tqdm.auto import tqdm

    from robult.evaluation.metrics import higher_is_better
    from robult.training.run import check_reusable, load_bundle, train_run

    if not 0 < label_ratio <= 1:
        raise ValueError(f"--label-ratio: {label_ratio} is not in (0, 1]")
    base = load_config(config, list(overrides or []))
    plan = {m: sample_trials(m, trials, search_seed) for m in methods}
    jobs = [
        (
            m,
            i,
            s,
            grid_config(
                base,
                dataset,
                data_dir,
                m,
                label_ratio,
                s,
                name=f"{m}-r{label_ratio:g}-t{i}-s{s}",
                out_dir=out / "trials",
                overrides=settings,
                where=f"{m} trial {i}",
            ),
        )
        for m, settings_list in plan.items()
        for i, settings in enumerate(settings_list)
        for s in seeds
    ]  # every trial config is validated before anything trains
    out.mkdir(parents=True, exist_ok=True)
    bundles: dict[int, Any] = {}
    scores: dict[tuple[str, int], list[float]] = {}
    epochs: dict[tuple[str, int], list[int]] = {}
    maximize = True
    name = base.dataset.name if dataset is None else dataset
    rank = launched_rank()  # > 0: a worker of a multi-device run; it trains its share, rank 0 does the rest
    bar = tqdm(jobs, desc="tune", unit="run", disable=rank > 0)
    for method, index, seed, cfg in bar:
        bar.set_postfix_str(cfg.run_name())
        run_dir = Path(cfg.out_dir) / cfg.run_name()
        done = run_dir / "trial.json"
        if seed not in bundles:
            bundles[seed] = load_bundle(cfg)
        if done.is_file():  # reused: same config and the labeled subset this code produces
            check_reusable(run_dir, bundles[seed].train, cfg, kind="trial")
        else:
            resume = (run_dir / "checkpoints" / "last.ckpt").is_file()
            res = train_run(cfg, resume=resume, bundle=bundles[seed], evaluate_test=False, trial=True)
            bundle = bundles[seed]
            if rank == 0:
                atomic_write_json(
                    done,
                    {
                        "dataset": bundle.name,
                        "metric": bundle.primary_metric,
                        "higher_is_better": higher_is_better(bundle.primary_metric),
                        "best_val_score": res.best_score,
                        "best_epoch": res.best_epoch,
                    },
                )
        if rank > 0:  # rank 0 records the trial
            continue
        record = json.loads(done.read_text())
        name, maximize = record["dataset"], record["higher_is_better"]
        score = record["best_val_score"]  # null: undefined (NaN) validation score
        scores.setdefault((method, index), []).append(math.nan if score is None else score)
        epochs.setdefault((method, index), []).append(record["best_epoch"])

    if rank > 0:
        return ""
    doc: dict[str, Any] = {
        "dataset": name,
        "label_ratio": label_ratio,
        "trials": trials,
        "seeds": list(seeds),
        "search_seed": search_seed,
        "base_config": None if config is None else str(config),
        "base_set": list(overrides or []),
        "selection": "validation mean over modality subsets of the primary metric, mean over seeds",
        "higher_is_better": maximize,
        "methods": {},
    }
    lines = [f"validation score (mean over subsets), {name}, {label_ratio:g} labels, {trials} trials per method"]
    for method, settings_list in plan.items():
        rows = []
        for i, settings in enumerate(settings_list):
            vals = scores[(method, i)]
            mean = statistics.mean(vals) if all(math.isfinite(v) for v in vals) else math.nan
            rows.append({"trial": i, "overrides": settings, "val_scores": vals, "val_mean": mean,
                         "best_epochs": epochs[(method, i)]})  # fmt: skip
        finite = [r for r in rows if math.isfinite(r["val_mean"])]
        if not finite:
            raise RuntimeError(f"{method}: no trial produced a finite validation score")
        best = select_best(finite, maximize)
        doc["methods"][method] = {"best_trial": best["trial"], "trials": rows}
        lines.append(
            f"  {method:<20} default {rows[0]['val_mean']:.4f}  best {best['val_mean']:.4f} (trial {best['trial']}: "
            + (", ".join(f"{k}={v}" for k, v in best["overrides"].items()) or "the defaults")
            + ")"
        )
        if write is not None:
            entry = {
                "overrides": best["overrides"],
                "val_score": best["val_mean"],
                "default_val_score": rows[0]["val_mean"],
                "trials": trials,
                "seeds": len(seeds),
            }
            write_tuned(write, name, method, label_ratio, entry)
    atomic_write_json(out / "tune.json", doc)
    if write is not None:
        lines.append(f"wrote the winners of {len(plan)} method(s) to {tuned_path(write, name)}")
    lines.append(f"wrote {out / 'tune.json'}")
    return "\n".join(lines) + "\n"


__all__ = [
    "SCORE_TIE",
    "run_tuning",
    "sample_trials",
    "search_space",
    "select_best",
]
