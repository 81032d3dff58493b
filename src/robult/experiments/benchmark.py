"""``robult benchmark``: every method x label ratio x seed on one dataset, same splits and masks, one table.

Methods trained with the same seed share the dataset split, the labeled subset and the saved test masks
(``OUT/masks``). A run whose ``result.json`` exists is reused, and an interrupted one is resumed, so re-running
the same command after an interruption finishes the grid without redoing finished work.
"""

from __future__ import annotations

import json
import os
import shlex
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from robult.config import load_config
from robult.experiments.grid import grid_config, tuned_grid, tuned_path


def _run_entry(result: dict[str, Any]) -> dict[str, Any]:
    """A ``runs`` entry of results.json from a run's ``result.json``."""
    from robult.evaluation.report import run_entry

    entry = run_entry(result["method"], result["label_ratio"], result["seed"], result["test"], result["metric"])
    entry.update(best_epoch=result.get("best_epoch"), best_val_score=result.get("best_val_score"))
    entry["provenance"] = result.get("provenance")  # None for a run finished before runs recorded it
    return entry


def _wait_for_rank_zero(path: Path, parent: int, poll: float = 0.5) -> None:
    """A worker of a multi-device run waits for rank 0 to score a run and write ``path``, outside any collective
    (a collective's timeout would bound how long rank 0 may evaluate); it stops if its parent (rank 0, which
    launched it) has ended."""
    while not path.is_file():
        if os.getppid() != parent:
            raise RuntimeError(f"rank 0 ended before writing {path}")
        time.sleep(poll)


def _train_or_reuse(cfg: Any, run_dir: Path, bundle: Any, out: Path) -> None:
    """Train (or resume) one run of the grid; a run another process finished meanwhile is reused, and one another
    process is training is one line saying so (another benchmark with the same ``--out``)."""
    from robult.training.checkpoint import RunInUseError
    from robult.training.run import check_reusable, train_run

    resume = (run_dir / "checkpoints" / "last.ckpt").is_file()
    try:
        train_run(cfg, resume=resume, bundle=bundle)
    except RunInUseError as err:
        raise RunInUseError(
            f"{err.args[0].split(';')[0]}: another `robult benchmark` (or `robult train`) is writing into --out "
            f"{out}; wait for it to end and run this command again (finished runs are reused), or use another --out"
        ) from None
    except FileExistsError:
        if not (run_dir / "result.json").is_file():  # finished by another process between our check and lock
            raise
        check_reusable(run_dir, bundle.train, cfg)


def _wall_time(elapsed: float, runs: int, reused: int, out: Path) -> str:
    """The summary's wall-time sentence; runs reused from an earlier invocation are said to be, since their
    training time is not part of this invocation's."""
    if not reused:
        return f"{elapsed:.0f} s for {runs} runs."
    if reused == runs:
        return (
            f"not measured: all {runs} runs were reused from {out / 'runs'} (trained by an earlier invocation; this "
            f"one took {elapsed:.0f} s to check and report them)."
        )
    return f"{elapsed:.0f} s for {runs - reused} runs trained now ({reused} more reused from {out / 'runs'})."


def run_benchmark(
    dataset: str | None = None,
    data_dir: Path | None = None,
    methods: Sequence[str] = ("robult", "supervised"),
    label_ratios: Sequence[float] = (0.05,),
    seeds: Sequence[int] = (0, 1, 2),
    out: Path = Path("robult_runs/benchmark"),
    config: Path | None = None,
    overrides: Sequence[str] | None = None,
    diagnostics: bool = False,
    tuned: Path | None = None,
) -> str:
    """Run the grid (with each method's ``tuned`` overrides from ``robult tune``, where given) and write
    ``OUT/results.json``, ``OUT/summary.md``, ``OUT/random_rate.png``,
    ``OUT/subsets.png`` (and ``OUT/diagnostics.png`` with ``diagnostics``). Returns the summary markdown."""
    from tqdm.auto import tqdm

    from robult.evaluation.report import plot_random_rate, results_document, write_results
    from robult.experiments.report import plot_subset_heatmap, summary_table, write_summary
    from robult.training.run import check_reusable, load_bundle
    from robult.utils.distributed import launched_rank

    rank = launched_rank()  # > 0: a worker of a multi-device run; it trains its share, rank 0 does the rest
    parent = os.getppid()
    base = load_config(config, list(overrides or []))
    for r in label_ratios:
        if not 0 < r <= 1:
            raise ValueError(f"--label-ratios: {r} is not in (0, 1]")
    grid = [(m, r, s) for m in methods for r in label_ratios for s in seeds]
    tuned_settings: dict[tuple[str, float], dict[str, Any]] = {}
    where = "benchmark"
    if tuned is not None:  # every (method, ratio) must have an entry: a missing one is an error, not the defaults
        name = dataset if dataset is not None else base.dataset.name
        tuned_settings = tuned_grid(tuned, name, methods, label_ratios)
        where = str(tuned_path(tuned, name))
    configs = [
        grid_config(
            base,
            dataset,
            data_dir,
            m,
            r,
            s,
            name=f"{m}-r{r:g}-s{s}",
            out_dir=out / "runs",
            masks_dir=out / "masks",
            overrides=tuned_settings.get((m, r), {}),
            where=where,
        )
        for m, r, s in grid
    ]  # validates every method
    out.mkdir(parents=True, exist_ok=True)
    bundles: dict[int, Any] = {}
    entries = []
    first: dict[str, Any] = {}
    start = time.perf_counter()
    reused = 0  # runs finished by an earlier invocation with the same --out: their training time is not in elapsed
    bar = tqdm(configs, desc="benchmark", unit="run", disable=rank > 0)
    for cfg in bar:
        bar.set_postfix_str(cfg.run_name())
        run_dir = Path(cfg.out_dir) / cfg.run_name()
        result_file = run_dir / "result.json"
        seed = cfg.train.seed
        if seed not in bundles:
            bundles[seed] = load_bundle(cfg)
        if result_file.is_file():  # reused: same config and the labeled subset this code produces
            check_reusable(run_dir, bundles[seed].train, cfg)
            reused += 1
        else:
            _train_or_reuse(cfg, run_dir, bundles[seed], out)
        if rank > 0:  # rank 0 evaluates and writes result.json
            _wait_for_rank_zero(result_file, parent)
            continue
        result = json.loads(result_file.read_text())
        first = first or result  # metric and direction of the grid (the same for every run of one dataset)
        entries.append(_run_entry(result))
    if rank > 0:
        return ""
    elapsed = time.perf_counter() - start
    bundle = bundles.get(seeds[0]) or load_bundle(configs[0])
    from robult.utils.provenance import provenance, provenance_line

    info = provenance()  # this process; the device is the runs' (each run's own record is in its entry)
    devices = sorted({e["provenance"]["device"] for e in entries if e.get("provenance")})
    if devices:
        info["device"] = ", ".join(devices)
    doc = results_document(
        dataset=bundle.name,
        task=bundle.task.kind.value,
        metric=first["metric"],
        higher_is_better=first["higher_is_better"],
        modalities=bundle.modality_names,
        runs=entries,
        provenance=info,
    )
    write_results(out / "results.json", doc)
    command = (
        f"robult benchmark --dataset {bundle.name} --methods {','.join(methods)} "
        f"--label-ratios {','.join(f'{r:g}' for r in label_ratios)} --seeds {len(seeds)}"
        + (f" --tuned {tuned}" if tuned is not None else "")
        + (f" --config {config}" if config is not None else "")
        + "".join(f" --set {shlex.quote(o)}" for o in overrides or [])
    )
    header = (
        f"Command: `{command}`  \nWall time: {_wall_time(elapsed, len(configs), reused, out)}  \n"
        f"Provenance: {provenance_line(info)}.\n"
    )
    write_summary(out / "summary.md", doc, extra_header=header)
    plot_random_rate(doc, out / "random_rate.png")
    plot_subset_heatmap(doc, out / "subsets.png")
    if diagnostics:
        from robult.diagnostics import plot_diagnostics

        plot_diagnostics([Path(c.out_dir) / c.run_name() for c in configs], out / "diagnostics.png")
    return summary_table(doc) + f"\nwrote {out / 'results.json'}, {out / 'summary.md'}, plots in {out}\n"
