"""evaluate(): one encoder pass per batch equals masked passes, shared saved masks, data presence respected."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from robult import MultimodalDataset, TaskSpec, all_subsets
from robult.data.synthetic import SyntheticConfig, synthetic_bundle
from robult.evaluation.evaluate import EvaluationResult, SubsetPredictor, evaluate
from robult.evaluation.metrics import compute_metrics
from robult.evaluation.protocols import MaskStore, random_rate_mask
from robult.models.late_fusion import LateFusionConfig, LateFusionModel
from robult.models.robult import RobultConfig, RobultModel

SMALL = {"hidden_dim": 16, "shared_dim": 8, "specific_dim": 8, "projector_hidden": (16,), "encoder_hidden": (16,)}


@pytest.fixture(scope="module")
def bundle():
    return synthetic_bundle(SyntheticConfig(n_samples=400))


def _model(bundle, seed: int = 0, **cfg) -> RobultModel:
    torch.manual_seed(seed)
    return RobultModel(bundle.modalities, bundle.task, RobultConfig(**{**SMALL, **cfg}))


def _masked_pass_metrics(model, dataset: MultimodalDataset, present: torch.Tensor, task: TaskSpec) -> dict:
    """Reference: a separate forward over a copy of the data whose presence mask is ``present``."""
    masked = dataset.with_present(present)
    batch = masked.__getitems__(range(len(masked)))
    model.eval()
    with torch.no_grad():
        out = model(batch, with_reconstruction=False)
        preds = model.predict_subsets(out, [dataset.modality_names]).predictions[0]
    return compute_metrics(preds, batch.target, task)


def _run(model, bundle, root: Path | None, **kw) -> EvaluationResult:
    store = None if root is None else MaskStore(root)
    kw.setdefault("batch_size", 32)
    return evaluate(model, bundle.test, bundle.task, bundle.modality_names, store=store, dataset_name="synthetic", **kw)


@pytest.mark.parametrize(
    "cfg",
    [{}, {"aggregate": "feature_mean", "use_fused_when_complete": True, "fusion": "attention"}],
    ids=["logit_mean", "feature_mean+fused"],
)
def test_one_pass_equals_masked_passes(bundle, tmp_path: Path, cfg: dict) -> None:
    model = _model(bundle, **cfg)
    result = _run(model, bundle, tmp_path)
    names = bundle.modality_names
    test = bundle.test
    n = len(test)
    assert result.counts["n"] == n
    assert list(result.subsets) == ["m0", "m1", "m2", "m0+m1", "m0+m2", "m1+m2", "m0+m1+m2"]
    for subset in all_subsets(names):
        key = "+".join(subset)
        present = torch.tensor([[m in subset for m in names]] * n)
        expected = _masked_pass_metrics(model, test, present, bundle.task)
        for metric, value in expected.items():
            assert result.subsets[key][metric] == pytest.approx(value, abs=1e-6), (key, metric)
        assert result.counts[f"all-subsets/{key}"] == n
    # random rate: the re-masked single pass equals a forward over the masked data
    for rate in ("0.5", "0.9"):
        mask = random_rate_mask(n, 3, float(rate), 0)
        expected = _masked_pass_metrics(model, test, mask, bundle.task)
        for metric, value in expected.items():
            assert result.random_rate[rate][metric] == pytest.approx(value, abs=1e-6), (rate, metric)
    assert result.random_rate["0.0"] == result.subsets["m0+m1+m2"]
    assert list(result.random_rate) == ["0.0", "0.1", "0.2", "0.3", "0.4", "0.5", "0.6", "0.7", "0.8", "0.9"]


def test_forward_runs_once_per_batch_and_modes_are_restored(bundle, tmp_path: Path) -> None:
    model = _model(bundle).train()
    calls = []
    original = model.forward

    def counting(batch, *args, **kwargs):
        calls.append(batch.size)
        assert not model.training and not torch.is_grad_enabled()
        return original(batch, *args, **kwargs)

    model.forward = counting  # type: ignore[method-assign]
    _run(model, bundle, tmp_path, batch_size=30)
    n = len(bundle.test)
    assert len(calls) == math.ceil(n / 30) and sum(calls) == n
    assert model.training


def test_second_method_reads_the_same_mask_files(bundle, tmp_path: Path) -> None:
    first = _run(_model(bundle, seed=0), bundle, tmp_path, rates=(0.0, 0.3, 0.6))
    assert sorted(first.mask_files) == ["0.0", "0.3", "0.6"]
    mtimes = {k: Path(p).stat().st_mtime_ns for k, p in first.mask_files.items()}
    torch.manual_seed(1)
    other = LateFusionModel.from_config(bundle.modalities, bundle.task, LateFusionConfig.of(RobultConfig(**SMALL)))
    assert isinstance(other, SubsetPredictor)
    second = _run(other, bundle, tmp_path, rates=(0.0, 0.3, 0.6))
    assert second.mask_files == first.mask_files
    assert second.mask_sha256 == first.mask_sha256
    assert {k: Path(p).stat().st_mtime_ns for k, p in second.mask_files.items()} == mtimes
    assert Path(first.mask_files["0.3"]) == tmp_path / "synthetic" / "test" / "random-rate_eta0.3_seed0.npy"
    # without a store the masks are the same, just not saved
    model = _model(bundle, seed=0)
    unsaved = _run(model, bundle, None, rates=(0.3,), protocols=("random-rate",))
    assert unsaved.mask_files == {} and unsaved.subsets == {}
    assert unsaved.random_rate["0.3"] == first.random_rate["0.3"]


def test_data_presence_applies_and_invalid_rows_are_excluded(bundle, tmp_path: Path) -> None:
    test = bundle.test
    n = len(test)
    present = torch.ones(n, 3, dtype=torch.bool)
    present[::3, 1] = False  # m1 missing in the data for every third sample
    present[1::4, [0, 2]] = False  # only m1 for some others
    present[~present.any(1), 0] = True
    labeled = torch.ones(n, dtype=torch.bool)
    labeled[-5:] = False  # unlabeled rows are never scored
    data = test.with_present(present).with_labeled(labeled)
    model = _model(bundle)
    result = evaluate(
        model, data, bundle.task, bundle.modality_names, store=MaskStore(tmp_path), dataset_name="partial"
    )
    scored = data.labeled
    assert result.counts["all-subsets/m1"] == int((present[:, 1] & scored).sum())
    assert result.counts["all-subsets/m0+m2"] == int(((present[:, 0] | present[:, 2]) & scored).sum())
    # the m1 subset, scored on the rows holding m1 only, equals a masked pass over those rows
    rows = (present[:, 1] & scored).nonzero().flatten()
    only_m1 = torch.tensor([[False, True, False]] * len(rows))
    expected = _masked_pass_metrics(model, data.subset(rows), only_m1, bundle.task)
    assert result.subsets["m1"]["accuracy"] == pytest.approx(expected["accuracy"], abs=1e-6)
    # random rate: the saved mask is ANDed with the data's presence; emptied rows are excluded and counted
    mask = random_rate_mask(n, 3, 0.6, 0)
    kept = (mask & present).any(1) & scored
    assert result.counts["random-rate/0.6"] == int(kept.sum())
    expected = _masked_pass_metrics(model, data.subset(kept.nonzero().flatten()), (mask & present)[kept], bundle.task)
    assert result.random_rate["0.6"]["accuracy"] == pytest.approx(expected["accuracy"], abs=1e-6)


def test_protocol_selection_result_dict_and_errors(bundle, tmp_path: Path) -> None:
    model = _model(bundle)
    only = _run(model, bundle, tmp_path, protocols=("all-subsets",))
    assert only.random_rate == {} and only.mask_files == {} and not (tmp_path / "synthetic").exists()
    values = [v["accuracy"] for v in only.subsets.values()]
    assert only.mean_over_subsets("accuracy") == pytest.approx(sum(values) / len(values))
    again = EvaluationResult.from_dict(only.to_dict())
    assert again == only
    with pytest.raises(ValueError, match="auroc"):
        only.mean_over_subsets("auroc")
    with pytest.raises(ValueError, match="unknown protocol 'every'"):
        _run(model, bundle, tmp_path, protocols=("every",))
    with pytest.raises(ValueError, match="differ from the dataset"):
        evaluate(model, bundle.test, bundle.task, ["x", "y", "z"], store=None, dataset_name="synthetic")


def test_importing_evaluation_does_not_import_matplotlib_or_torchmetrics() -> None:
    code = (
        "import sys, robult, robult.evaluation, robult.evaluation.report;"
        "bad = [m for m in ('matplotlib', 'torchmetrics') if m in sys.modules];"
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
