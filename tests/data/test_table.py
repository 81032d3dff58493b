"""A table as a trained model's input: the features, presence and labels that ``robult predict|evaluate --input
FILE.csv`` read equal what training read from the same table; clear errors for columns that do not fit the model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from robult.data.table import load_table_dataset, read_table_inputs, table_targets
from robult.specs import ModalitySpec, TaskSpec

SPECS = [ModalitySpec("a", "vector", (2,)), ModalitySpec("b", "vector", (1,))]


def _csv(path: Path) -> Path:
    path.write_text(
        "label,a__0,a__1,b__0,split\n"
        "dog,1.5,2,7,train\n"
        ",,,8,train\n"  # unlabeled, lacks a
        "cat,0.25,-1,,test\n"  # lacks b
        "eel,3,4,5,val\n"
        "dog,1,1,1,test\n"
        "cat,2,2,2,train\n"
    )
    return path


def test_read_table_inputs_equals_what_training_reads(tmp_path: Path) -> None:
    table = _csv(tmp_path / "pets.csv")
    got = read_table_inputs(table, SPECS)
    assert got.num_rows == 6 and got.source == table and list(got.inputs) == ["a", "b"]
    np.testing.assert_array_equal(got.present["a"], [True, False, True, True, True, True])
    np.testing.assert_array_equal(got.present["b"], [True, True, False, True, True, True])
    bundle = load_table_dataset(table)
    for part in (bundle.train, bundle.val, bundle.test):  # every split's rows, by their row in the file
        rows = part.source_rows.numpy()
        for j, name in enumerate(("a", "b")):
            np.testing.assert_array_equal(got.inputs[name][rows], np.asarray(part.inputs[name]))
            np.testing.assert_array_equal(got.present[name][rows], part.present[:, j].numpy())
        target, labeled = table_targets(got.label, bundle.task, "pets.csv (label)")
        np.testing.assert_array_equal(labeled[rows], part.labeled.numpy())
        assert torch.equal(torch.from_numpy(target[rows])[part.labeled], part.target[part.labeled])
    assert got.inputs["a"].dtype == np.float32 and got.inputs["a"][1].tolist() == [0.0, 0.0]


def test_table_targets_match_the_models_classes(tmp_path: Path) -> None:
    pets = TaskSpec("multiclass", num_classes=3, label_names=("cat", "dog", "eel"))
    target, labeled = table_targets(["eel", "", " cat ", None, "dog"], pets, "t")
    assert target.tolist() == [2, -1, 0, -1, 1] and labeled.tolist() == [True, False, True, False, True]
    ids = TaskSpec("multiclass", num_classes=3)  # no names: class ids, "2.0" and 2 alike
    assert table_targets(["2.0", "0", "", "1"], ids, "t")[0].tolist() == [2, 0, -1, 1]
    assert table_targets(np.array([1.0, np.nan, 0.0]), TaskSpec("binary"), "t")[0].tolist() == [1.0, 0.0, 0.0]
    values, labeled = table_targets(["0.5", "", "-3"], TaskSpec("regression"), "t")
    assert values[[0, 2]].tolist() == [0.5, -3.0] and labeled.tolist() == [True, False, True]
    with pytest.raises(ValueError, match=r"^t: row 1 holds 'fox', not one of the model's classes \['cat', 'dog'"):
        table_targets(["cat", "fox"], pets, "t")
    with pytest.raises(ValueError, match=r"^t: row 0 holds '1\.5', not one of the model's classes \['0', '1', '2'\]"):
        table_targets(["1.5"], ids, "t")
    with pytest.raises(ValueError, match=r"^t: row 1 holds 'x', not a number"):
        table_targets(["1", "x"], TaskSpec("regression"), "t")
    with pytest.raises(ValueError, match=r"^t: the model is multilabel, and a table holds one label per row"):
        table_targets(["1"], TaskSpec("multilabel", num_classes=2), "t")
    with pytest.raises(ValueError, match=r"^t: no labeled row"):
        table_targets(["", None], pets, "t")


def test_a_table_that_does_not_fit_the_model_is_one_line_naming_it(tmp_path: Path) -> None:
    table = _csv(tmp_path / "pets.csv")
    with pytest.raises(ValueError, match=r"pets\.csv: modality 'a' has 2 columns \(a__\*\), the model's has 3"):
        read_table_inputs(table, [ModalitySpec("a", "vector", (3,)), SPECS[1]])
    with pytest.raises(ValueError, match=r"modality 'b' \(b__\* columns\) is not one of the model's \['a'\]"):
        read_table_inputs(table, SPECS[:1])
    with pytest.raises(ValueError, match=r"the model's modality 'b' is a sequence; a table holds vector modalities"):
        read_table_inputs(table, [SPECS[0], ModalitySpec("b", "sequence", (None, 1))])
    only_a = read_table_inputs(table, [*SPECS, ModalitySpec("c", "vector", (4,))])  # c: missing from every row
    assert list(only_a.inputs) == ["a", "b"]
    (tmp_path / "empty.csv").write_text("label,a__0,a__1\n")
    with pytest.raises(ValueError, match=r"empty\.csv: no rows below the header"):
        read_table_inputs(tmp_path / "empty.csv", SPECS)


def test_the_header_alone_names_the_modalities(tmp_path: Path) -> None:
    from robult.data.table import read_table_header, table_modality_names

    table = _csv(tmp_path / "pets.csv")
    assert read_table_header(table) == ["label", "a__0", "a__1", "b__0", "split"]
    assert table_modality_names(table) == ["a", "b"]
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"label": ["x"], "c__0": [1.0], "a__0": [2.0]}), tmp_path / "t.parquet")
    assert table_modality_names(tmp_path / "t.parquet") == ["c", "a"]
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(ValueError, match=r"empty\.csv: empty file \(expected a header row\)"):
        table_modality_names(tmp_path / "empty.csv")


def test_a_fractional_label_of_a_classification_task_is_an_error_not_a_truncated_class(tmp_path: Path) -> None:
    table = tmp_path / "t.csv"
    table.write_text("label,a__0\n0,1\n1,2\n1.5,3\n0,4\n")
    assert load_table_dataset(table).task.kind.value == "regression"  # inferred: not every label is an integer
    for task in ("multiclass", "binary"):
        with pytest.raises(ValueError, match=rf"t\.csv \(label\): row 2 holds '1\.5', not a class of a {task} task"):
            load_table_dataset(table, task=task)
