"""``robult tune``: equal trial budgets, seeded draws, validation-only selection, and ``benchmark --tuned``."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from robult.cli import app
from robult.config import ConfigError, apply_settings, load_config, validate_config
from robult.experiments.grid import tuned_overrides, write_tuned
from robult.experiments.tuning import sample_trials, search_space
from robult.methods import COMMON_SEARCH as COMMON
from robult.methods import METHODS

runner = CliRunner()
TINY = [
    "--set",
    "dataset.options.n_samples=500",
    "--set",
    "train.max_epochs=2",
    "--set",
    "eval.rates=[0.0]",
]


def test_every_method_has_a_space_of_real_config_keys() -> None:
    base = load_config(None, []).model_dump(mode="json")
    for method in METHODS:
        space = search_space(method)
        assert set(COMMON) <= set(space), method
        for settings in sample_trials(method, 4):  # every drawn value passes the config's validation
            data = json.loads(json.dumps(base))
            apply_settings(data, settings, method)
            validate_config({**data, "train": {**data["train"], "method": method}}, method)


def test_trials_are_distinct_seeded_and_start_from_the_defaults() -> None:
    a = sample_trials("robult", 12, seed=0)
    assert a[0] == {} and len(a) == 12
    assert len({tuple(sorted(t.items())) for t in a[1:]}) == 11  # distinct
    assert a == sample_trials("robult", 12, seed=0)
    assert a != sample_trials("robult", 12, seed=1)
    assert sample_trials("supervised", 5)[1].keys() == COMMON.keys()
    size = 3 * 3 * 3  # supervised searches COMMON only
    assert len(sample_trials("supervised", size + 1)) == size + 1
    with pytest.raises(ValueError, match="exceeds the 28 settings"):
        sample_trials("supervised", size + 2)
    with pytest.raises(ValueError, match="unknown method 'nope'"):
        sample_trials("nope", 2)


def test_overrides_name_their_source_on_error(tmp_path: Path) -> None:
    data = load_config(None, []).model_dump(mode="json")
    with pytest.raises(ConfigError, match=re.escape("x.yaml: 'lr' is not a `section.key`")):
        apply_settings(data, {"lr": 0.1}, "x.yaml")
    path = tmp_path / "cub.yaml"
    path.write_text(
        yaml.safe_dump({"dataset": "cub", "settings": {"robult": {0.05: {"overrides": {"train.lr": 0.01}}}}})
    )
    with pytest.raises(ConfigError, match="tuned on dataset 'cub', not 'synthetic'"):
        tuned_overrides(path, "synthetic", "robult", 0.05)
    assert tuned_overrides(tmp_path, "cub", "robult", 0.05) == {"train.lr": 0.01}
    # a missing entry is an error that says how to make it, never a silent fallback to the defaults
    with pytest.raises(ConfigError, match=r"no tuned settings for robult at label ratio 0\.1; run `robult tune"):
        tuned_overrides(tmp_path, "cub", "robult", 0.1)
    with pytest.raises(ConfigError, match="no tuned settings for supervised"):
        tuned_overrides(tmp_path, "cub", "supervised", 0.05)
    with pytest.raises(ConfigError, match=r"pie\.yaml does not exist"):
        tuned_overrides(tmp_path, "pie", "robult", 0.05)
    path.write_text("dataset: cub\nsettings:\n  robult:\n    0.05: [1, 2]\n")
    with pytest.raises(ConfigError, match=re.escape("cub.yaml: settings.robult.0.05 needs an `overrides` mapping")):
        tuned_overrides(tmp_path, "cub", "robult", 0.05)


def test_write_tuned_merges_entries(tmp_path: Path) -> None:
    write_tuned(tmp_path, "pie", "robult", 0.5, {"overrides": {"train.lr": 0.003}, "val_score": 0.5})
    write_tuned(tmp_path, "pie", "supervised", 0.05, {"overrides": {}, "val_score": 0.4})
    write_tuned(tmp_path, "pie", "robult", 0.05, {"overrides": {"loss.lambda_rec": 0.1}, "val_score": 0.3})
    doc = yaml.safe_load((tmp_path / "pie.yaml").read_text())
    assert doc["dataset"] == "pie"
    assert list(doc["settings"]) == ["robult", "supervised"] and list(doc["settings"]["robult"]) == [0.05, 0.5]
    assert tuned_overrides(tmp_path, "pie", "robult", 0.5) == {"train.lr": 0.003}
    assert tuned_overrides(tmp_path, "pie", "robult", 0.05) == {"loss.lambda_rec": 0.1}


def test_tune_selects_on_validation_and_benchmark_applies_the_winner(tmp_path: Path) -> None:
    tuned = tmp_path / "tuned"
    args = ["tune", "--methods", "supervised", "--trials", "3", "--out", str(tmp_path / "t"), "--write", str(tuned)]
    result = runner.invoke(app, [*args, *TINY])
    assert result.exit_code == 0, result.output
    doc = json.loads((tmp_path / "t" / "tune.json").read_text())
    rows = doc["methods"]["supervised"]["trials"]
    assert [r["trial"] for r in rows] == [0, 1, 2] and rows[0]["overrides"] == {}
    best = max(rows, key=lambda r: r["val_mean"])
    assert doc["methods"]["supervised"]["best_trial"] == best["trial"]
    # selection never reads the test split: trial runs have no test result
    assert not list((tmp_path / "t" / "trials").glob("*/result.json"))
    chosen_doc = yaml.safe_load((tuned / "synthetic.yaml").read_text())
    chosen = chosen_doc["settings"]["supervised"][0.05]
    assert chosen["overrides"] == best["overrides"] and chosen["val_score"] == best["val_mean"]
    assert chosen["trials"] == 3 and chosen["seeds"] == 1
    # a second invocation reuses every trial
    again = runner.invoke(app, [*args, *TINY])
    assert again.exit_code == 0 and json.loads((tmp_path / "t" / "tune.json").read_text()) == doc
    other = runner.invoke(app, [*args, *TINY, "--set", "train.batch_size=32"])  # same --out, another base config
    assert other.exit_code != 0 and "holds a trial with another config" in other.output

    # benchmark --tuned: each method's runs carry its tuned settings; a method without an entry is an error
    chosen["overrides"] = {"train.lr": 0.003, "model.dropout": 0.3}
    write_tuned(tuned, "synthetic", "supervised", 0.05, chosen)
    write_tuned(tuned, "synthetic", "moddrop", 0.05, {"overrides": {}})
    bench = ["benchmark", "--methods", "supervised,moddrop", "--seeds", "1", "--out", str(tmp_path / "b")]
    bench += ["--dataset", "synthetic"]
    no_entry = runner.invoke(app, [*bench[:2], "supervised,pseudolabel", *bench[3:], "--tuned", str(tuned), *TINY])
    assert no_entry.exit_code != 0 and "no tuned settings for pseudolabel" in no_entry.output
    result = runner.invoke(app, [*bench, "--tuned", str(tuned), *TINY])
    assert result.exit_code == 0, result.output
    sup = load_config(tmp_path / "b" / "runs" / "supervised-r0.05-s0" / "config.yaml")
    mod = load_config(tmp_path / "b" / "runs" / "moddrop-r0.05-s0" / "config.yaml")
    assert sup.train.lr == 0.003 and sup.model.dropout == 0.3
    assert mod.train.lr == 1e-3 and mod.model.dropout == 0.1
    assert "--tuned" in (tmp_path / "b" / "summary.md").read_text()
    missing = runner.invoke(app, [*bench, "--tuned", str(tmp_path / "nope"), *TINY])
    assert missing.exit_code != 0 and "synthetic.yaml does not exist" in missing.output


def test_a_trial_skips_the_subset_weight_fit_that_a_run_does(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A trial is selected on its checkpoint's validation score, which the subset weights (model.subset_weights =
    validation, fitted after training) do not change: trials skip the fit and write no model artefact; a normal run
    (train, benchmark, a tuned run) fits them once."""
    from robult.evaluation import subset_weights
    from robult.experiments.tuning import run_tuning
    from robult.training.run import train_run

    from ..conftest import TINY_SYNTHETIC

    fits: list[int] = []
    original = subset_weights.fit_subset_weights

    def counting(*args, **kwargs):
        fits.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(subset_weights, "fit_subset_weights", counting)
    text = run_tuning(dataset="synthetic", methods=["robult"], trials=2, out=tmp_path / "t", overrides=TINY_SYNTHETIC)
    assert "robult" in text and fits == []
    trials = sorted((tmp_path / "t" / "trials").iterdir())
    assert len(trials) == 2 and all((t / "trial.json").is_file() and not (t / "model").exists() for t in trials)

    cfg = load_config(None, [*TINY_SYNTHETIC, "train.method=robult", f"out_dir={tmp_path / 'runs'}", "name=r"])
    assert cfg.model.subset_weights == "validation"
    result = train_run(cfg)
    assert fits == [1] and (result.run_dir / "model").is_dir() and result.evaluation is not None
    with pytest.raises(ValueError, match="not scored on the test split: pass evaluate_test=False"):
        train_run(cfg, trial=True)


def test_benchmark_reads_the_tuned_file_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`benchmark --tuned` reads the dataset's tuned file once for the whole grid (was once per (method, ratio)),
    with the same overrides per entry and the same error for the first missing one."""
    import robult.experiments.grid as grid
    from robult.experiments.benchmark import run_benchmark
    from robult.experiments.grid import tuned_grid

    for method, ratio, lr in (("supervised", 0.05, 0.003), ("supervised", 0.1, 0.01), ("moddrop", 0.05, 0.02)):
        write_tuned(tmp_path, "synthetic", method, ratio, {"overrides": {"train.lr": lr}})
    reads: list[Path] = []
    original = grid.read_yaml

    def counting(path, *args, **kwargs):
        reads.append(Path(path))
        return original(path, *args, **kwargs)

    monkeypatch.setattr(grid, "read_yaml", counting)
    got = tuned_grid(tmp_path, "synthetic", ["supervised", "moddrop"], [0.05])
    assert got == {("supervised", 0.05): {"train.lr": 0.003}, ("moddrop", 0.05): {"train.lr": 0.02}}
    assert reads == [tmp_path / "synthetic.yaml"]
    assert got["supervised", 0.05] == tuned_overrides(tmp_path, "synthetic", "supervised", 0.05)

    reads.clear()  # the grid's last entry is missing: one read, and the error names it before anything trains
    with pytest.raises(ConfigError, match=r"no tuned settings for moddrop at label ratio 0\.1; run `robult tune"):
        run_benchmark(
            dataset="synthetic",
            methods=["supervised", "moddrop"],
            label_ratios=[0.05, 0.1],
            seeds=[0],
            out=tmp_path / "b",
            tuned=tmp_path,
        )
    assert reads == [tmp_path / "synthetic.yaml"] and not (tmp_path / "b").exists()


def test_a_float_noise_tie_keeps_the_earlier_trial() -> None:
    """Validation means that differ by float noise (the same number of correct samples averaged in another order)
    are a tie: the earlier trial, the defaults first, wins; a real difference still wins."""
    from robult.experiments.tuning import select_best

    rows = [{"trial": 0, "val_mean": 0.6217078566551208}, {"trial": 1, "val_mean": 0.58},
            {"trial": 2, "val_mean": 0.6217079162597656}]  # fmt: skip
    assert select_best(rows, maximize=True)["trial"] == 0
    rows[2]["val_mean"] = 0.6226
    assert select_best(rows, maximize=True)["trial"] == 2
    losses = [{"trial": 0, "val_mean": 0.30}, {"trial": 1, "val_mean": 0.30 - 1e-9}, {"trial": 2, "val_mean": 0.4}]
    assert select_best(losses, maximize=False)["trial"] == 0
    losses[1]["val_mean"] = 0.29
    assert select_best(losses, maximize=False)["trial"] == 1
