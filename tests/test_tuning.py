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
from robult.methods import COMMON_SEARCH as COMMON
from robult.methods import METHODS
from robult.tuning import load_tuned, sample_trials, search_space

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
    path = tmp_path / "robult-r0.05.yaml"
    path.write_text(yaml.safe_dump({"dataset": "cub", "overrides": {"train.lr": 0.01}}))
    with pytest.raises(ConfigError, match="tuned on dataset 'cub', not 'synthetic'"):
        load_tuned(tmp_path, "robult", 0.05, "synthetic")
    assert load_tuned(tmp_path, "robult", 0.05, "cub") == {"train.lr": 0.01}
    assert load_tuned(tmp_path, "robult", 0.1, "cub") == {}  # another ratio: no file, the defaults
    path.write_text("overrides: [1, 2]")
    with pytest.raises(ConfigError, match=re.escape("robult-r0.05.yaml: expected a mapping")):
        load_tuned(tmp_path, "robult", 0.05, "cub")


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
    assert json.loads((tuned / "tune-r0.05.json").read_text()) == doc
    chosen = yaml.safe_load((tuned / "supervised-r0.05.yaml").read_text())
    assert chosen["overrides"] == best["overrides"] and chosen["val_score"] == best["val_mean"]
    # a second invocation reuses every trial
    again = runner.invoke(app, [*args, *TINY])
    assert again.exit_code == 0 and json.loads((tmp_path / "t" / "tune.json").read_text()) == doc
    other = runner.invoke(app, [*args, *TINY, "--set", "train.batch_size=32"])  # same --out, another base config
    assert other.exit_code != 0 and "holds a trial with another config" in other.output

    # benchmark --tuned: the method's runs carry the tuned settings; a method without a file keeps the defaults
    chosen["overrides"] = {"train.lr": 0.003, "model.dropout": 0.3}
    (tuned / "supervised-r0.05.yaml").write_text(yaml.safe_dump(chosen))
    bench = ["benchmark", "--methods", "supervised,moddrop", "--seeds", "1", "--out", str(tmp_path / "b")]
    result = runner.invoke(app, [*bench, "--tuned", str(tuned), *TINY])
    assert result.exit_code == 0, result.output
    sup = load_config(tmp_path / "b" / "runs" / "supervised-r0.05-s0" / "config.yaml")
    mod = load_config(tmp_path / "b" / "runs" / "moddrop-r0.05-s0" / "config.yaml")
    assert sup.train.lr == 0.003 and sup.model.dropout == 0.3
    assert mod.train.lr == 1e-3 and mod.model.dropout == 0.1
    assert "--tuned" in (tmp_path / "b" / "summary.md").read_text()
    missing = runner.invoke(app, [*bench, "--tuned", str(tmp_path / "nope"), *TINY])
    assert missing.exit_code != 0 and "is not a directory" in missing.output


def test_tune_record_merges_methods_of_the_same_search(tmp_path: Path) -> None:
    from robult.tuning import _merge_record, tune_record

    path = tune_record(tmp_path, 0.5)
    assert path.name == "tune-r0.5.json"
    search = {"dataset": "pie", "label_ratio": 0.5, "trials": 6, "seeds": [0], "search_seed": 0,
              "base_config": None, "base_set": []}  # fmt: skip
    first = {**search, "methods": {"robult": {"best_trial": 2}, "supervised": {"best_trial": 0}}}
    assert _merge_record(path, first) == first  # no record yet
    path.write_text(json.dumps(first))
    again = {**search, "methods": {"robult": {"best_trial": 4}}}  # robult tuned again, same search
    merged = _merge_record(path, again)
    assert merged["methods"] == {"robult": {"best_trial": 4}, "supervised": {"best_trial": 0}}
    other = {**search, "trials": 8, "methods": {"robult": {"best_trial": 1}}}  # another budget: replaced
    assert _merge_record(path, other) == other
    path.write_text("{not json")
    assert _merge_record(path, again) == again
