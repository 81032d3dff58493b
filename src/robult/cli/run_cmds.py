"""``robult train``, ``evaluate``, ``predict``, ``inspect`` and ``export``: one run, from training to serving.

Heavy modules (Lightning, matplotlib, the trainer) are imported inside the commands, so ``robult --help`` is fast."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from robult.cli.errors import debugging, fail, one_line_errors, user_errors
from robult.cli.options import help_text, method_names

if TYPE_CHECKING:
    from robult.config import RunConfig


def train(
    config: Annotated[Path | None, typer.Option("--config", "-c", help="YAML run config.")] = None,
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="Override a config key, e.g. --set train.lr=0.001 (repeatable).")
    ] = None,
    resume: Annotated[bool, typer.Option(help="Continue an interrupted run from its last checkpoint.")] = False,
    overwrite: Annotated[
        bool, typer.Option(help="Retrain the run from scratch, replacing a finished run's results.")
    ] = False,
    dataset: Annotated[str | None, typer.Option(help="Dataset name (`robult datasets`); sets dataset.name.")] = None,
    method: Annotated[str | None, typer.Option(help=f"Method, one of: {method_names()}; sets train.method.")] = None,
    label_ratio: Annotated[
        float | None, typer.Option(help="Share of training labels used; sets train.label_ratio.")
    ] = None,
    data_dir: Annotated[Path | None, typer.Option(help="Root data directory; sets dataset.data_dir.")] = None,
    tuned: Annotated[
        Path | None,
        typer.Option(
            help="Tuned settings (`robult tune --write DIR`: DIR or DIR/<dataset>.yaml): the entry of this method and "
            "label ratio applies over the config; --set and the flags above still win."
        ),
    ] = None,
    input: Annotated[
        Path | None,
        typer.Option(
            "--input",
            "-i",
            help="Your own data (docs/datasets.md): a directory with dataset.yaml + .npy, or a .csv / .parquet table "
            "with columns label and <modality>__<feature>; the run is named after the data.",
        ),
    ] = None,
) -> None:
    """Train one method on one dataset and score it under every missing-modality protocol; the trained model is
    saved to <run>/model/ (use it with `robult predict` or `robult.load`). Ctrl-C stops it; `--resume` continues."""
    cfg: RunConfig | None = None
    try:
        from robult.config import load_config

        if input is not None and dataset is not None:
            raise ValueError("--input and --dataset both name the data; pass one of them")
        flags = [  # JSON is YAML: paths and names stay strings
            f"{key}={json.dumps(str(value) if isinstance(value, Path) else value)}"
            for key, value in (
                *_input_flags(input),
                ("dataset.name", dataset),
                ("train.method", method),
                ("train.label_ratio", label_ratio),
                ("dataset.data_dir", data_dir),
            )
            if value is not None
        ]
        if config is not None and config.is_file():
            _refuse_tuned_file(config)
        cfg = load_config(config, [*flags, *(set_ or [])])
        if tuned is not None:
            cfg = _with_tuned(cfg, tuned, config, [*flags, *(set_ or [])])
        from robult.training.run import train_run

        result = train_run(cfg, resume=resume, overwrite=overwrite)
    except user_errors() as err:
        if debugging():
            raise
        fail(err)
        return
    except KeyboardInterrupt:
        if cfg is None:
            raise
        typer.secho(_resume_hint(cfg, config, set_, dataset, method, label_ratio, data_dir, tuned, input), err=True)
        raise typer.Exit(code=130) from None
    if result.rank != 0:  # under DDP every process runs this command; rank 0 reports
        return
    ev = result.evaluation
    typer.echo(f"run: {result.run_dir}")
    if result.labels:
        from robult.training.run import describe_labels

        typer.echo(describe_labels(result.labels, cfg))
    typer.echo(f"best validation score ({cfg.train.method}): {result.best_score:.4f} at epoch {result.best_epoch}")
    if ev is not None:
        from robult.evaluation.report import format_evaluation
        from robult.evaluation.run_plots import write_run_plots

        typer.echo(format_evaluation(ev, _primary(result.run_dir)))
        plots = write_run_plots(result.run_dir)
        if plots:
            typer.echo("plots: " + ", ".join(str(p) for p in plots))


def _input_flags(input: Path | None) -> list[tuple[str, str]]:
    """``train --input PATH`` as config keys: a table file reads as dataset ``table``, anything else as ``user``."""
    if input is None:
        return []
    from robult.data.table import is_table

    return [("dataset.name", "table" if is_table(input) else "user"), ("dataset.options.path", str(input))]


def _refuse_tuned_file(path: Path) -> None:
    """A tuned-settings file given as ``-c`` is one line saying to pass it with ``--tuned``."""
    from robult.config import ConfigError, read_yaml

    doc = read_yaml(path)
    if isinstance(doc, dict) and "settings" in doc and isinstance(doc.get("dataset"), str):
        raise ConfigError(
            f"{path}: a tuned-settings file (`robult tune --write`), not a run config; pass --tuned {path}"
        )


def _with_tuned(cfg: RunConfig, tuned: Path, config: Path | None, overrides: list[str]) -> RunConfig:
    """The run config with the tuned entry of its (dataset, method, label ratio) applied over the config file; the
    command line's flags and --set are applied again on top."""
    from robult.config import apply_overrides, apply_settings, load_config, validate_config
    from robult.experiments.grid import tuned_overrides, tuned_path

    dataset = cfg.dataset.name
    settings = tuned_overrides(tuned, dataset, cfg.train.method, cfg.train.label_ratio)
    data = load_config(config).model_dump(mode="json")
    apply_settings(data, settings, str(tuned_path(tuned, dataset)))
    return validate_config(apply_overrides(data, overrides), str(config or "command line"))


def _resume_hint(
    cfg: RunConfig,
    config: Path | None,
    set_: list[str] | None,
    dataset: str | None,
    method: str | None,
    label_ratio: float | None,
    data_dir: Path | None,
    tuned: Path | None,
    input: Path | None = None,
) -> str:
    """One line after Ctrl-C: the command that continues the run (or starts it again when nothing was saved)."""
    import shlex

    args = ["robult", "train"]
    if config is not None:
        args += ["-c", str(config)]
    for flag, value in (
        ("--dataset", dataset),
        ("--method", method),
        ("--label-ratio", label_ratio),
        ("--data-dir", data_dir),
        ("--tuned", tuned),
        ("--input", input),
    ):
        if value is not None:
            args += [flag, f"{value:g}" if isinstance(value, float) else str(value)]
    for item in set_ or []:
        args += ["--set", item]
    from robult.training.run import run_name

    run_dir = Path(cfg.out_dir) / run_name(cfg)
    if (run_dir / "checkpoints" / "last.ckpt").is_file():
        return f"interrupted; continue with: {shlex.join([*args, '--resume'])}"
    return f"interrupted before the first checkpoint; start again with: {shlex.join(args)}"


def _primary(run_dir: Path) -> str:
    import json

    return json.loads((run_dir / "result.json").read_text())["metric"]


def evaluate(
    run: Annotated[Path, typer.Argument(help="A run directory or a checkpoint file inside one.")],
    protocol: Annotated[
        list[str] | None, typer.Option("--protocol", "-p", help="all-subsets and/or random-rate (default: both).")
    ] = None,
    masks_dir: Annotated[Path | None, typer.Option(help="Where the saved masks live (default: the run's).")] = None,
    out: Annotated[Path | None, typer.Option(help="Also write the result as JSON to this file.")] = None,
    input: Annotated[
        Path | None,
        typer.Option(
            "--input",
            "-i",
            help="Score on this dataset instead of the run's test split: a directory with dataset.yaml + .npy, "
            "or a table file (.csv, .parquet) as train --input reads (docs/datasets.md), holding labels and some or "
            "all of the model's modalities (one it lacks is absent from every row); every row is scored.",
        ),
    ] = None,
) -> None:
    """Score a trained run on the test split (masks are read from, or saved to, the shared mask store), or on
    another dataset with the same modalities (--input)."""
    protocols = protocol or ["all-subsets", "random-rate"]
    bad = [p for p in protocols if p not in ("all-subsets", "random-rate")]
    if bad:
        fail(f"unknown protocol {bad[0]!r}; use all-subsets or random-rate")
    if input is not None:
        _evaluate_input(run, input, protocols, masks_dir, out)
        return
    with one_line_errors():
        from robult.training.run import evaluate_run, find_checkpoint

        ev = evaluate_run(run, protocols, masks_dir)
        run_dir, _ = find_checkpoint(run)
        from robult.config import load_config
        from robult.evaluation.report import format_evaluation
        from robult.training.run import load_bundle

        metric = load_bundle(load_config(run_dir / "config.yaml")).primary_metric
        if out is not None:
            from robult.utils.io import atomic_write_json

            atomic_write_json(out, {"run": str(run_dir), "metric": metric, **ev.to_dict()})
    typer.echo(format_evaluation(ev, metric))
    if out is not None:
        typer.echo(f"wrote {out}")


def _evaluate_input(run: Path, input: Path, protocols: list[str], masks_dir: Path | None, out: Path | None) -> None:
    """`robult evaluate RUN --input DIR|FILE`: the run's model artefact scored on a user-format directory or a table."""
    with one_line_errors():
        from robult.evaluation.report import format_evaluation
        from robult.inference import load, model_dir
        from robult.inference.scoring import evaluate_inputs

        predictor = load(run)
        ev = evaluate_inputs(predictor, input, protocols=protocols, masks_dir=masks_dir)
        metric = str(predictor.info.get("primary_metric") or "")
        if not metric:
            from robult.evaluation.metrics import default_primary_metric

            metric = default_primary_metric(predictor.task)
        if out is not None:
            from robult.utils.io import atomic_write_json

            cfg = predictor.config
            record = {
                "run": str(model_dir(run).parent),
                "input": str(input),
                "metric": metric,
                "rates": list(cfg.eval.rates),
                "mask_seed": cfg.eval.mask_seed,
            }
            atomic_write_json(out, {**record, **ev.to_dict()})
    lacking = _lacking_modalities(input, predictor.modality_names)
    if lacking:
        typer.echo(
            f"{input}: lacks modality {', '.join(repr(n) for n in lacking)} of the model: scored with it absent from "
            "every row (the subsets holding it are left out)"
        )
    typer.echo(format_evaluation(ev, metric, scored=str(input)))
    if out is not None:
        typer.echo(f"wrote {out}")


def _lacking_modalities(input: Path, names: list[str]) -> list[str]:
    """The model's modalities that an input directory's ``dataset.yaml`` (or a table's columns) does not list."""
    from robult.inference.files import input_modality_names

    listed = set(input_modality_names(input))
    return [n for n in names if n not in listed]


def predict(
    run: Annotated[Path, typer.Argument(help="A run directory or its model/ directory.")],
    input: Annotated[
        Path,
        typer.Option(
            "--input",
            "-i",
            help="Inputs: a directory with dataset.yaml + .npy, or a table file (.csv, .parquet) as train --input "
            "reads (docs/datasets.md).",
        ),
    ],
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            "-o",
            help=f"Predictions file: .csv, or .parquet (needs {help_text('robult[parquet]')}); default: CSV on "
            "standard output.",
        ),
    ] = None,
    batch_size: Annotated[int, typer.Option(help="Samples per forward pass.")] = 4096,
) -> None:
    """Predict with a trained model: one CSV row per sample (index, label and probabilities, or value), for any
    pattern of missing modalities (present.npy, or modalities the input directory lacks)."""
    with one_line_errors():
        if out is None:
            from robult.inference.files import predict_to_csv_stream

            predict_to_csv_stream(run, input, sys.stdout, batch_size=batch_size)
            return
        from robult.inference.files import predict_to_file

        path, n = predict_to_file(run, input, out, batch_size=batch_size)
    typer.echo(f"wrote {n} predictions to {path}")


def inspect(
    run: Annotated[Path, typer.Argument(help="A run directory (its model/ and logs/ are read).")],
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Output directory (default: <run>/inspect).")] = None,
    weights: Annotated[
        str,
        typer.Option(help="model: the saved model (best validation epoch); last: the last epoch's checkpoint."),
    ] = "model",
) -> None:
    """Probe and draw what a run's representations (Z^m, U^m, S) hold.

    Linear probes to the known factors and the label, alignment and uniformity over training, and a 2-D PCA of Z
    and U, written as CSV, JSON and PNG files."""
    with one_line_errors():
        from robult.inspection import inspect_run, probe_text

        result = inspect_run(run, out, weights=weights)
    typer.echo(probe_text(result))


def export(
    run: Annotated[Path, typer.Argument(help="A run directory or its model/ directory.")],
    format: Annotated[
        str,
        typer.Option(
            "--format",
            "-f",
            help="torchscript (one file: raw inputs + presence mask -> predictions), onnx (the same graph as ONNX; "
            f"needs {help_text('robult[onnx]')}) or artefact (write <run>/model/ for a run trained before runs "
            "wrote one).",
        ),
    ] = "torchscript",
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="Output file (default: <model dir>/model.torchscript.pt or model.onnx)."),
    ] = None,
) -> None:
    """Export a trained model for serving without robult."""
    with one_line_errors():
        if format == "torchscript":
            from robult.inference.export import export_torchscript

            path = export_torchscript(run, out)
        elif format == "onnx":
            from robult.inference.export import export_onnx

            path = export_onnx(run, out)
        elif format == "artefact":
            from robult.training.saved_run import artefact_from_checkpoint

            path = artefact_from_checkpoint(run)
        else:
            raise ValueError(f"unknown export format {format!r}; use torchscript, onnx or artefact")
    typer.echo(f"wrote {path}")
