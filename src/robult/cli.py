"""The ``robult`` command line: train, evaluate, benchmark, datasets.

Heavy modules (Lightning, matplotlib, the trainer) are imported inside the commands, so ``robult --help`` is fast.
Errors in user input print one line naming the file or key and exit with status 2.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from robult.config import RunConfig

app = typer.Typer(
    name="robult",
    help="Multimodal learning with scarce labels and missing modalities (Robult).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _help_text(text: str) -> str:
    """``text`` as it should read in ``--help``: the help renderer (rich markup) drops ``[...]``, which must be
    escaped to show an extra such as ``robult[parquet]``."""
    return text.replace("[", "\\[")


def _version(value: bool) -> None:
    if value:
        from robult import __version__

        typer.echo(f"robult {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
    debug: Annotated[
        bool,
        typer.Option(
            "--debug", help="Print the full traceback of any error (also: environment variable ROBULT_DEBUG=1)."
        ),
    ] = False,
) -> None:
    """Multimodal learning with scarce labels and missing modalities (Robult)."""
    if debug:
        os.environ[DEBUG_ENV] = "1"


# errors: user errors are one line (exit 2); anything else is a bug of ours: one line naming a saved traceback (exit 1)
DEBUG_ENV = "ROBULT_DEBUG"
ERROR_DIR_ENV = "ROBULT_ERROR_DIR"


def _debugging() -> bool:
    return os.environ.get(DEBUG_ENV, "").strip().lower() not in ("", "0", "false", "no")


def _save_traceback(err: BaseException) -> Path | None:
    """Write ``err``'s traceback to ``$ROBULT_ERROR_DIR`` (default: the system's temp directory) and return the
    file, or ``None`` where it cannot be written (the one-line message must not fail in turn)."""
    import tempfile
    import time
    import traceback

    folder = Path(os.environ.get(ERROR_DIR_ENV) or tempfile.gettempdir())
    path = folder / f"robult-error-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.txt"
    from robult import __version__

    text = f"robult {__version__}\ncommand: {' '.join(sys.argv)}\n\n" + "".join(
        traceback.format_exception(type(err), err, err.__traceback__)
    )
    try:
        folder.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    except OSError:
        return None
    return path


def _method_names() -> str:
    """The registered methods (robult.methods.METHODS), for help texts."""
    from robult.methods import METHODS

    return ", ".join(sorted(METHODS))


METHODS_HELP = f"Comma-separated methods, any of: {_method_names()}."
# `robult benchmark` with no --dataset and no --config: the embedded set where the gain from unlabeled data shows
DEFAULT_BENCHMARK_DATASET = "synthetic_clusters"


def _raised_outside_robult(err: BaseException) -> bool:
    """Whether the innermost frame of ``err``'s traceback lies outside the robult package: a ``ValueError`` that
    robult did not raise itself (numpy's, torch's) may be a bug of ours rather than a checked input."""
    tb = err.__traceback__
    if tb is None:
        return False
    while tb.tb_next is not None:
        tb = tb.tb_next
    return Path(__file__).resolve().parent not in Path(tb.tb_frame.f_code.co_filename).resolve().parents


def _fail(message: str | BaseException) -> None:
    if isinstance(message, BaseException):
        err = message
        message = _message(err)
        if not isinstance(err, OSError) and _raised_outside_robult(err):
            saved = _save_traceback(err)
            if saved is not None:
                message += f" (raised outside robult: traceback saved to {saved})"
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code=2)


def _message(err: BaseException) -> str:
    """One line: an ``OSError`` as ``FILE: reason`` (a full disk, a read-only or missing directory, a file where a
    directory is expected), anything else as its text."""
    if isinstance(err, OSError) and err.strerror and err.filename is not None:
        target = f" -> {err.filename2}" if err.filename2 is not None else ""
        return f"{err.filename}{target}: {err.strerror}"
    if isinstance(err, OSError) and err.strerror:
        return err.strerror
    return " ".join(str(err).split()) or type(err).__name__


def _user_errors() -> tuple[type[BaseException], ...]:
    """What the commands report in one line instead of a traceback (``OSError`` includes ``FileNotFoundError``,
    ``FileExistsError``, a full disk and a read-only file system)."""
    from robult.config import ConfigError

    return (ConfigError, ValueError, OSError)


@contextmanager
def _one_line_errors() -> Iterator[None]:
    """Report the user errors (:func:`_user_errors`) raised inside as one line and exit with status 2."""
    try:
        yield
    except _user_errors() as err:
        if _debugging():
            raise
        _fail(err)


def _seed_list(seeds: int) -> list[int]:
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


@app.command()
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
    method: Annotated[str | None, typer.Option(help=f"Method, one of: {_method_names()}; sets train.method.")] = None,
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
    except _user_errors() as err:
        if _debugging():
            raise
        _fail(err)
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


@app.command()
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
            help="Score on this dataset instead of the run's test split: a directory with dataset.yaml + .npy "
            "(docs/datasets.md) holding labels and some or all of the model's modalities (one it lacks is absent "
            "from every row); every row is scored.",
        ),
    ] = None,
) -> None:
    """Score a trained run on the test split (masks are read from, or saved to, the shared mask store), or on
    another dataset with the same modalities (--input)."""
    protocols = protocol or ["all-subsets", "random-rate"]
    bad = [p for p in protocols if p not in ("all-subsets", "random-rate")]
    if bad:
        _fail(f"unknown protocol {bad[0]!r}; use all-subsets or random-rate")
    if input is not None:
        _evaluate_input(run, input, protocols, masks_dir, out)
        return
    with _one_line_errors():
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
    """`robult evaluate RUN --input DIR`: the run's model artefact scored on a user-format directory."""
    with _one_line_errors():
        from robult.evaluation.report import format_evaluation
        from robult.inference.predictor import load, model_dir
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
    """The model's modalities that an input directory's ``dataset.yaml`` does not list."""
    from robult.config import read_yaml
    from robult.inference.files import YAML_NAME

    doc = read_yaml(input / YAML_NAME if input.is_dir() else input)
    listed = {m.get("name") for m in doc.get("modalities") or [] if isinstance(m, dict)}
    return [n for n in names if n not in listed]


@app.command()
def predict(
    run: Annotated[Path, typer.Argument(help="A run directory or its model/ directory.")],
    input: Annotated[
        Path, typer.Option("--input", "-i", help="Inputs: a directory with dataset.yaml + .npy (docs/datasets.md).")
    ],
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            "-o",
            help=f"Predictions file: .csv, or .parquet (needs {_help_text('robult[parquet]')}); default: CSV on "
            "standard output.",
        ),
    ] = None,
    batch_size: Annotated[int, typer.Option(help="Samples per forward pass.")] = 4096,
) -> None:
    """Predict with a trained model: one CSV row per sample (index, label and probabilities, or value), for any
    pattern of missing modalities (present.npy, or modalities the input directory lacks)."""
    with _one_line_errors():
        if out is None:
            from robult.inference.files import predict_to_csv_stream

            predict_to_csv_stream(run, input, sys.stdout, batch_size=batch_size)
            return
        from robult.inference.files import predict_to_file

        path, n = predict_to_file(run, input, out, batch_size=batch_size)
    typer.echo(f"wrote {n} predictions to {path}")


@app.command()
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
    with _one_line_errors():
        from robult.inspection import inspect_run, probe_text

        result = inspect_run(run, out, weights=weights)
    typer.echo(probe_text(result))


@app.command()
def export(
    run: Annotated[Path, typer.Argument(help="A run directory or its model/ directory.")],
    format: Annotated[
        str,
        typer.Option(
            "--format",
            "-f",
            help="torchscript (one file: raw inputs + presence mask -> predictions), onnx (the same graph as ONNX; "
            f"needs {_help_text('robult[onnx]')}) or artefact (write <run>/model/ for a run trained before runs "
            "wrote one).",
        ),
    ] = "torchscript",
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="Output file (default: <model dir>/model.torchscript.pt or model.onnx)."),
    ] = None,
) -> None:
    """Export a trained model for serving without robult."""
    with _one_line_errors():
        if format == "torchscript":
            from robult.inference.export import export_torchscript

            path = export_torchscript(run, out)
        elif format == "onnx":
            from robult.inference.export import export_onnx

            path = export_onnx(run, out)
        elif format == "artefact":
            from robult.inference.export import artefact_from_checkpoint

            path = artefact_from_checkpoint(run)
        else:
            raise ValueError(f"unknown export format {format!r}; use torchscript, onnx or artefact")
    typer.echo(f"wrote {path}")


config_app = typer.Typer(help="Inspect the run configuration.", no_args_is_help=True)
app.add_typer(config_app, name="config")


@config_app.command("show")
def config_show(
    method: Annotated[
        str | None, typer.Option(help="Show the values this method uses (its fixed loss options and fallbacks).")
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option("--config", "-c", help="Print the resolved config of this YAML file (with --set applied)."),
    ] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", help="Override a config key, e.g. --set train.lr=0.001 (repeatable); prints the result."),
    ] = None,
) -> None:
    """Print every config key with its default and meaning (set them in YAML or with --set section.key=value); with
    --config and/or --set, print the resolved config as YAML instead (every key, as a run would use it)."""
    if config is not None or set_:
        with _one_line_errors():
            from robult.config import config_to_yaml, load_config

            flags = [f"train.method={json.dumps(method)}"] if method is not None else []
            resolved = load_config(config, [*flags, *(set_ or [])])
        typer.echo(config_to_yaml(resolved), nl=False)
        return
    with _one_line_errors():
        from robult.config import describe_config
        from robult.methods import METHODS

        rows = describe_config(method)
    width = max(len(k) for k, _, _ in rows)
    for key, value, meaning in rows:
        typer.echo(f"{key:<{width}}  {json.dumps(value)}\n{'':<{width}}    {meaning}")
    typer.echo("\nmethods: " + ", ".join(sorted(METHODS)))


@app.command()
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
    with _one_line_errors():
        from robult.experiments.benchmark import run_benchmark
        from robult.experiments.grid import parse_list

        method_list = parse_list(methods, str, "--methods")
        ratios = parse_list(label_ratios, float, "--label-ratios")
        seed_list = _seed_list(seeds)
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


@app.command()
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
    with _one_line_errors():
        from robult.experiments.grid import parse_list
        from robult.experiments.tuning import run_tuning

        seed_list = _seed_list(seeds)
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


@app.command()
def datasets(
    data_dir: Annotated[Path | None, typer.Option(help="Root data directory to check.")] = None,
) -> None:
    """List the registered datasets and where each is read from."""
    from robult.data.registry import default_data_dir, registered_datasets

    root = data_dir or default_data_dir()
    typer.echo(f"data directory: {root if root else '(none: pass --data-dir or set $ROBULT_DATA_DIR)'}")
    rows = []
    for name, info in sorted(registered_datasets().items(), key=lambda kv: (kv[1].group, kv[0])):
        if info.folder is None:
            where = "generated" if info.group == "generated" else "given path"
        elif root is None:
            where = f"<data-dir>/{info.folder} (no data directory)"
        else:
            folder = Path(root) / info.folder
            where = f"{folder}" + ("" if folder.is_dir() else "  [missing]")
        rows.append((name, info.group, where, info.description))
    width = max(len(r[0]) for r in rows)
    gwidth = max(len(r[1]) for r in rows)
    for name, group, where, desc in rows:
        typer.echo(f"{name:<{width}}  {group:<{gwidth}}  {desc}\n{'':<{width}}  {'':<{gwidth}}  -> {where}")


def main() -> None:
    """Entry point of the ``robult`` script. An exception that is not a user error (a bug of ours or of a library)
    prints one line naming the file its traceback was saved to, and exits with status 1; ``--debug`` (or
    ``ROBULT_DEBUG=1``) prints the traceback instead."""
    try:
        app(prog_name="robult")
    except (KeyboardInterrupt, SystemExit):
        raise
    except Exception as err:
        if _debugging():
            raise
        saved = _save_traceback(err)
        where = f"traceback saved to {saved}" if saved else "rerun with --debug for the traceback"
        typer.secho(
            f"error: unexpected {type(err).__name__}: {_message(err)} ({where}; please report it with that file)",
            fg=typer.colors.RED,
            err=True,
        )
        sys.exit(1)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
