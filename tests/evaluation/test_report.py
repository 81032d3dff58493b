"""The results document (results.json schema, NaN as null), one evaluation as text, the random-rate plot."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from robult.evaluation.evaluate import EvaluationResult
from robult.evaluation.report import (
    format_evaluation,
    load_results,
    plot_random_rate,
    results_document,
    run_entry,
    write_results,
)

from ..conftest import toy_evaluation, toy_results

PNG = b"\x89PNG\r\n\x1a\n"


def test_results_schema_and_round_trip(tmp_path: Path) -> None:
    doc = toy_results()
    assert list(doc) == ["dataset", "task", "metric", "higher_is_better", "modalities", "runs"]
    run = doc["runs"][0]
    for key in ("method", "label_ratio", "seed", "subsets", "mean_over_subsets", "random_rate", "all_metrics"):
        assert key in run
    assert run["subsets"] == {"a": 0.5, "b": 0.7, "a+b": 0.8}
    assert run["mean_over_subsets"] == pytest.approx((0.5 + 0.7 + 0.8) / 3)
    assert run["random_rate"] == {"0.0": 0.8, "0.5": 0.6}
    assert run["all_metrics"]["subsets"]["a"] == {"accuracy": 0.5, "other": 0.0}
    path = tmp_path / "results.json"
    write_results(path, doc)
    assert load_results(path) == doc


def test_nan_becomes_null_and_shows_as_na(tmp_path: Path) -> None:
    runs = [run_entry("m", 1.0, 0, toy_evaluation(math.nan, 0.5, 0.5, 0.5, 0.5), "accuracy")]
    doc = results_document("toy", "multiclass", "accuracy", True, ["a", "b"], runs)
    assert doc["runs"][0]["subsets"]["a"] is None and doc["runs"][0]["mean_over_subsets"] is None
    write_results(tmp_path / "r.json", doc)
    assert "NaN" not in (tmp_path / "r.json").read_text()


def test_load_results_names_file_and_missing_key(tmp_path: Path) -> None:
    doc = toy_results()
    del doc["runs"][1]["seed"]
    path = tmp_path / "broken.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(ValueError, match=r"broken\.json: missing required key 'runs\[1\]\.seed'"):
        load_results(path)
    path.write_text(json.dumps({"dataset": "toy"}))
    with pytest.raises(ValueError, match=r"broken\.json: missing required key 'task'"):
        load_results(path)


def test_subset_keys_must_follow_modality_order() -> None:
    runs = [{**run_entry("m", 1.0, 0, toy_evaluation(0.5, 0.5, 0.5, 0.5, 0.5), "accuracy")}]
    runs[0]["subsets"] = {"b+a": 0.5}
    with pytest.raises(ValueError, match="'b\\+a' is not in the dataset's modality order"):
        results_document("toy", "multiclass", "accuracy", True, ["a", "b"], runs)


@pytest.mark.parametrize("higher", [True, False])
def test_the_random_rate_plot_is_a_png_file(tmp_path: Path, higher: bool) -> None:
    doc = toy_results("accuracy" if higher else "mae", higher)
    plot_random_rate(doc, tmp_path / "random_rate.png")
    data = (tmp_path / "random_rate.png").read_bytes()
    assert data[:8] == PNG and len(data) > 5000
    assert [p.name for p in tmp_path.iterdir()] == ["random_rate.png"]  # no temp file left


def test_format_evaluation() -> None:
    text = format_evaluation(toy_evaluation(0.5, 0.7, 0.8, 0.8, 0.6), "accuracy")
    assert text.splitlines() == [
        "test accuracy per modality subset:",
        "  a     0.5000",
        "  b     0.7000",
        "  a+b   0.8000",
        "  mean  0.6667",
        "test accuracy per random missing rate:",
        "  0.0:0.800  0.5:0.600",
    ]


def _strict(text: str) -> object:
    def refuse(name: str) -> None:
        raise ValueError(f"{name} is not JSON")

    return json.loads(text, parse_constant=refuse)


def test_run_entry_reads_a_result_json_with_null_scores(tmp_path: Path) -> None:
    from robult.utils.io import atomic_write_json

    path = tmp_path / "result.json"
    atomic_write_json(path, {"test": toy_evaluation(math.nan, 0.5, math.inf, math.nan, 0.5).to_dict()})
    saved = _strict(path.read_text())["test"]  # type: ignore[index]
    assert saved["subsets"]["a"]["accuracy"] is None and saved["subsets"]["a+b"]["accuracy"] is None
    entry = run_entry("m", 0.1, 0, saved, "accuracy")  # null is missing: no TypeError summing None
    assert math.isnan(entry["mean_over_subsets"]) and entry["subsets"]["b"] == 0.5
    assert math.isnan(EvaluationResult.from_dict(saved).mean_over_subsets("accuracy"))
    doc = results_document("toy", "multiclass", "accuracy", True, ["a", "b"], [entry])
    write_results(tmp_path / "results.json", doc)
    assert _strict((tmp_path / "results.json").read_text())["runs"][0]["mean_over_subsets"] is None  # type: ignore[index]
