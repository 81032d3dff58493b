"""Benchmark reports: summary tables (mean ± std over seeds, bold best, n/a) and the per-subset heatmap."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from robult.evaluation.report import results_document, run_entry
from robult.experiments.report import plot_subset_heatmap, summary_table, write_summary

from ..conftest import toy_evaluation, toy_results

PNG = b"\x89PNG\r\n\x1a\n"


def _row(table: str, method: str, nth: int = 0) -> str:
    return [line for line in table.splitlines() if line.startswith(f"| {method} |")][nth]


def test_summary_mean_std_and_bold_higher_is_better() -> None:
    table = summary_table(toy_results())
    assert "| method | labels | seeds | a | b | a+b | mean over subsets |" in table
    # robult: a = mean(0.5, 0.7) ± std(ddof=1) = 60.0 ± 14.1; supervised (one seed) shows the mean alone
    assert _row(table, "robult") == "| robult | 5% | 2 | 60.0 ± 14.1 | 65.0 ± 7.1 | **85.0 ± 7.1** | **70.0 ± 4.7** |"
    assert _row(table, "supervised") == "| supervised | 5% | 1 | **65.0** | **75.0** | 70.0 | **70.0** |"
    # random-rate table: columns are rates; the tie at 0.5 bolds both
    assert "| method | labels | seeds | η=0.0 | η=0.5 |" in table
    assert _row(table, "robult", 1) == "| robult | 5% | 2 | **85.0 ± 7.1** | **65.0 ± 7.1** |"
    assert _row(table, "supervised", 1) == "| supervised | 5% | 1 | 70.0 | **65.0** |"
    assert "higher is better" in table and "accuracy (%)" in table


def test_summary_bold_lower_is_better_raw_format() -> None:
    table = summary_table(toy_results("mae", higher=False))
    robult = "| robult | 5% | 2 | **0.600 ± 0.141** | **0.650 ± 0.071** | 0.850 ± 0.071 | **0.700 ± 0.047** |"
    assert _row(table, "robult") == robult
    assert _row(table, "supervised") == "| supervised | 5% | 1 | 0.650 | 0.750 | **0.700** | **0.700** |"
    assert "lower is better" in table


def test_write_summary_has_header(tmp_path: Path) -> None:
    path = tmp_path / "summary.md"
    write_summary(path, toy_results(), extra_header="Command: `robult benchmark`")
    text = path.read_text()
    assert text.startswith("# Benchmark: toy (multiclass)\n\nCommand: `robult benchmark`\n")
    assert summary_table(toy_results()) in text


def test_an_undefined_value_shows_as_na() -> None:
    """NaN in memory and null in a result.json are missing: the cell (and the mean over them) is n/a."""
    runs = [run_entry("m", 1.0, 0, toy_evaluation(math.nan, 0.5, 0.5, 0.5, 0.5), "accuracy")]
    doc = results_document("toy", "multiclass", "accuracy", True, ["a", "b"], runs)
    assert _row(summary_table(doc), "m").startswith("| m | 100% | 1 | n/a | 50.0 | 50.0 | n/a |")
    saved = toy_evaluation(math.nan, 0.5, math.inf, math.nan, 0.5).to_dict()
    saved["subsets"]["a"]["accuracy"] = saved["subsets"]["a+b"]["accuracy"] = None  # as a result.json holds them
    doc = results_document(
        "toy", "multiclass", "accuracy", True, ["a", "b"], [run_entry("m", 0.1, 0, saved, "accuracy")]
    )
    assert "n/a" in _row(summary_table(doc), "m")


@pytest.mark.parametrize("higher", [True, False])
def test_the_heatmap_is_a_png_file(tmp_path: Path, higher: bool) -> None:
    plot_subset_heatmap(toy_results("accuracy" if higher else "mae", higher), tmp_path / "subsets.png")
    data = (tmp_path / "subsets.png").read_bytes()
    assert data[:8] == PNG and len(data) > 5000
    assert [p.name for p in tmp_path.iterdir()] == ["subsets.png"]  # no temp file left
