"""``robult inspect RUN``: :func:`inspect_run` loads a run's saved model (or its last epoch), probes and measures
its representations on the run's own splits and writes the tables, figures and ``inspect.json``
(:mod:`robult.inspection`)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from robult.inspection.plots import plot_alignment, plot_embedding, plot_probes
from robult.inspection.probes import ProbeScore, probe_table, probes_csv
from robult.inspection.representations import MAX_POINTS, geometry, representations
from robult.utils.io import atomic_write_json, atomic_write_text

WEIGHTS = ("model", "last")  # the saved model (best validation epoch) or the last epoch's checkpoint


@dataclass
class Inspection:
    """What :func:`inspect_run` returns.

    Attributes:
        run: the run directory; ``method``, ``dataset``: from its config.
        weights: ``model`` or ``last`` (which weights were inspected); ``epoch``: their epoch (when known).
        probes: every probe score (also in ``probes.csv``).
        geometry: alignment / uniformity on the test split (also in ``geometry.csv``): name -> value.
        factors: the known factors probed (empty for a dataset without known factors).
        files: the files written, by name.
    """

    run: str
    method: str
    dataset: str
    weights: str
    epoch: int | None
    probes: list[ProbeScore]
    geometry: dict[str, float]
    factors: list[str] = field(default_factory=list)
    files: dict[str, str] = field(default_factory=dict)

    def probe(self, representation: str, factor: str) -> float:
        """The held-out score of the probe from ``representation`` (e.g. ``"Z^m0"``) to ``factor``."""
        for p in self.probes:
            if p.representation == representation and p.factor == factor:
                return p.value
        raise KeyError(f"no probe from {representation!r} to {factor!r}")


def inspect_run(
    run: str | Path,
    out: str | Path | None = None,
    *,
    bundle: Any | None = None,
    max_points: int = MAX_POINTS,
    plots: bool = True,
    weights: str = "model",
) -> Inspection:
    """Probe, measure and draw what a trained run's representations hold (``robult inspect RUN --out DIR``).

    Args:
        run: a run directory (its ``model/`` artefact and ``logs/metrics.csv`` are read).
        out: where the files go (default: ``<run>/inspect``).
        bundle: the run's data (a :class:`robult.data.registry.DatasetBundle`) when it was made in Python; by
            default the run's dataset is loaded from its config, with the run's split seed.
        max_points: test rows drawn in the embedding and used for uniformity.
        plots: also write the PNG figures (matplotlib); the numbers are written either way.
        weights: ``model``: the run's saved model (its best validation epoch); ``last``: the weights of the last
            epoch trained (``checkpoints/last.ckpt``), to see what training went on to learn after that.

    Returns:
        an :class:`Inspection` (probe scores, test-split geometry, files written).
    """
    from robult.inference.predictor import load

    if weights not in WEIGHTS:
        raise ValueError(f"unknown weights {weights!r}; use one of {WEIGHTS}")
    run_dir = Path(run)
    predictor = load(run_dir)
    epoch = _best(predictor)
    if weights == "last":
        epoch = _load_last(predictor.model, run_dir)
    cfg = predictor.config
    method, name = cfg.train.method, cfg.dataset.name
    if bundle is None:
        from robult.data.registry import registered_datasets
        from robult.training.run import load_bundle

        if name not in registered_datasets():
            raise ValueError(
                f"{run_dir}: dataset {name!r} is not registered (made in Python?); pass it: "
                "inspect_run(run, bundle=the_bundle)"
            )
        bundle = load_bundle(cfg)
    names = bundle.modality_names
    if names != predictor.modality_names:
        raise ValueError(f"{run_dir}: the model's modalities {predictor.modality_names} differ from the data's {names}")
    model = predictor.model
    train = representations(model, bundle.train, method=method)
    test = representations(model, bundle.test, method=method)
    factors_tr: dict[str, np.ndarray] = {}
    factors_te: dict[str, np.ndarray] = {}
    from robult.data.synthetic import PRESETS, split_factors

    if name in PRESETS and bundle.source == "generated":
        options = dict(cfg.dataset.options)
        factors_tr = split_factors(bundle.train, name, options)
        factors_te = split_factors(bundle.test, name, options)
    probes = probe_table(train, test, names, bundle.task, factors_tr, factors_te)
    geo = geometry(test, names, max_points)
    result = Inspection(str(run_dir), method, name, weights, epoch, probes, geo, list(factors_tr))
    out_dir = Path(out) if out is not None else run_dir / "inspect"
    out_dir.mkdir(parents=True, exist_ok=True)
    files = result.files
    files["probes.csv"] = str(out_dir / "probes.csv")
    atomic_write_text(out_dir / "probes.csv", probes_csv(probes))
    files["geometry.csv"] = str(out_dir / "geometry.csv")
    atomic_write_text(out_dir / "geometry.csv", "quantity,value\n" + "".join(f"{k},{v!r}\n" for k, v in geo.items()))
    if plots:
        from robult.diagnostics import read_metrics

        title = f"{name} · {method} · {run_dir.name} · " + ("saved model" if weights == "model" else "last epoch")
        title += "" if epoch is None else f" (epoch {epoch})"
        for file, draw in (
            ("probes.png", lambda p: plot_probes(probes, p, title)),
            ("alignment.png", lambda p: plot_alignment(read_metrics(run_dir), names, p, title, epoch)),
            ("embedding.png", lambda p: plot_embedding(test, names, bundle.task, p, title, max_points)),
        ):
            draw(out_dir / file)
            files[file] = str(out_dir / file)
    files["inspect.json"] = str(out_dir / "inspect.json")
    atomic_write_json(out_dir / "inspect.json", asdict(result))
    return result


def _best(predictor: Any) -> int | None:
    best = predictor.info.get("best_epoch")
    return int(best) if isinstance(best, int | float) else None


def _load_last(model: torch.nn.Module, run_dir: Path) -> int:
    """Load the model's weights from ``checkpoints/last.ckpt`` (checksum verified, weights only); its epoch."""
    from robult.training.checkpoint import check_state_fits, load_checkpoint_file

    path = run_dir / "checkpoints" / "last.ckpt"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing; inspect the saved model instead (weights='model')")
    state = load_checkpoint_file(path)
    prefix = "model."
    tensors = {k[len(prefix) :]: v for k, v in (state.get("state_dict") or {}).items() if k.startswith(prefix)}
    check_state_fits(model, tensors, path)  # one line naming the file and the first key that does not fit
    model.load_state_dict(tensors)
    return int(state.get("epoch", -1))


def probe_text(result: Inspection) -> str:
    """The probe table as text: one row per representation, one column per target, then the files written."""
    reps = list(dict.fromkeys(p.representation for p in result.probes))
    cols = list(dict.fromkeys((p.factor, p.metric) for p in result.probes))
    value = {(p.representation, p.factor): p.value for p in result.probes}
    heads = [f"{f} ({'acc' if m == 'accuracy' else 'R2'})" for f, m in cols]
    width = max([len(r) for r in reps] + [14])
    epoch = "" if result.epoch is None else f", epoch {result.epoch}"
    lines = [
        f"{result.dataset} · {result.method} · {result.weights} weights{epoch}: held-out linear probes (test split)",
        f"{'':<{width}}  " + "  ".join(f"{h:>{max(7, len(h))}}" for h in heads),
    ]
    for rep in reps:
        cells = [f"{value.get((rep, f), math.nan):>{max(7, len(h))}.3f}" for (f, _), h in zip(cols, heads, strict=True)]
        lines.append(f"{rep:<{width}}  " + "  ".join(cells))
    out_dir = Path(next(iter(result.files.values()))).parent if result.files else None
    if out_dir is not None:
        lines.append(f"wrote {', '.join(sorted(result.files))} to {out_dir}")
    return "\n".join(lines)
