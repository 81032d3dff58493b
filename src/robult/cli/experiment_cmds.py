"""``robult benchmark`` and ``robult tune``: methods compared over seeds (:mod:`robult.experiments`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from robult.cli.errors import one_line_errors
from robult.cli.options import method_names

METHODS_HELP = f"Comma-separated methods, any of: {method_names()}."

# `robult benchmark` with no --dataset and no --config: the embedded set where the gain from unlabeled data shows
DEFAULT_BENCHMARK_DATASET = "synthetic_clusters"


def seed_range(seeds: int) -> list[int]:
    """``--seeds N`` → ``[0, ..., N-1]``."""
    if seeds < 1:
        raise ValueError("--seeds must be at least 1")
    return list(range(seeds))


# Options that `robult benchmark` and `robult tune` share.
DataDirOption = Annotated[
    Path | None, typer.Option(help="Root data directory (default: $ROBULT_DATA_DIR or ../shared/data).")
]

MethodsOption = Annotated[str, typer.Option(help=METHODS_HELP)]

BaseConfigOption = Annotated[Path | None, typer.Option("--config", "-c", help="Base YAML config for every run.")]

SetEveryRunOption = Annotated[list[str] | None, typer.Option("--set", help="Override a config key for every run.")]


def benchmark(
    dataset: Annotated[
        str | None,
        typer.Option(
            help="Dataset name (see `robult datasets`); default: the config's, else the embedded synthetic_clusters "
            "(generated, no files: classes are clusters every modality sees, so unlabeled data can help)."
        ),
    ] = None,
    data_dir: DataDirOption = None,
    methods: MethodsOption = "robult,supervised",
    label_ratios: Annotated[str, typer.Option(help="Comma-separated label ratios.")] = "0.05",
    seeds: Annotated[int, typer.Option(help="Seeds per (method, ratio): 0..N-1.")] = 3,
    out: Annotated[Path, typer.Option(help="Output directory.")] = Path("robult_runs/benchmark"),
    config: BaseConfigOption = None,
    set_: SetEveryRunOption = None,
    diagnostics: Annotated[
        bool, typer.Option(help="Also plot per-epoch diagnostics (U norms, PU weights, pseudo-labels, alignment).")
    ] = False,
    tuned: Annotated[
        Path | None,
        typer.Option(help="Directory of `robult tune --write` files: each method runs with its tuned settings."),
    ] = None,
) -> None:
    """Train every method x label ratio x seed, evaluate both protocols, write results.json, summary.md, plots."""
    with one_line_errors():
        from robult.experiments.benchmark import run_benchmark
        from robult.experiments.grid import parse_list

        method_list = parse_list(methods, str, "--methods")
        ratios = parse_list(label_ratios, float, "--label-ratios")
        seed_list = seed_range(seeds)
        summary = run_benchmark(
            dataset=DEFAULT_BENCHMARK_DATASET if dataset is None and config is None else dataset,
            data_dir=data_dir,
            methods=method_list,
            label_ratios=ratios,
            seeds=seed_list,
            out=out,
            config=config,
            overrides=set_,
            diagnostics=diagnostics,
            tuned=tuned,
        )
    if summary:  # empty in the worker processes of a multi-device run: rank 0 reports
        typer.echo(summary)


def tune(
    dataset: Annotated[str | None, typer.Option(help="Dataset name; default: the config's, else synthetic.")] = None,
    data_dir: DataDirOption = None,
    methods: MethodsOption = "robult,supervised",
    label_ratio: Annotated[float, typer.Option(help="Label ratio to tune at.")] = 0.05,
    trials: Annotated[int, typer.Option(help="Trials per method (the same budget for all; trial 0 = defaults).")] = 8,
    seeds: Annotated[int, typer.Option(help="Training seeds per trial: 0..N-1 (validation scores averaged).")] = 1,
    search_seed: Annotated[int, typer.Option(help="Seed of the trial sampler.")] = 0,
    out: Annotated[Path, typer.Option(help="Output directory (trial runs, tune.json).")] = Path("robult_runs/tune"),
    write: Annotated[
        Path | None, typer.Option(help="Write each method's winning settings here, for `benchmark --tuned`.")
    ] = None,
    config: BaseConfigOption = None,
    set_: SetEveryRunOption = None,
) -> None:
    """Choose each method's hyper-parameters on the validation split with an equal trial budget (no test data)."""
    with one_line_errors():
        from robult.experiments.grid import parse_list
        from robult.experiments.tuning import run_tuning

        seed_list = seed_range(seeds)
        text = run_tuning(
            dataset=dataset,
            data_dir=data_dir,
            methods=parse_list(methods, str, "--methods"),
            label_ratio=label_ratio,
            trials=trials,
            seeds=seed_list,
            search_seed=search_seed,
            out=out,
            write=write,
            config=config,
            overrides=set_,
        )
    if text:  # empty in the worker processes of a multi-device run
        typer.echo(text)
