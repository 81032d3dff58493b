"""The late-fusion model of the baselines: a subset's prediction is the mean of its present modalities' logits."""

from __future__ import annotations

import pytest
import torch

from robult import ModalitySpec, TaskSpec
from robult.models.late_fusion import LateFusionModel

from ..conftest import make_batch

MODS = [ModalitySpec("a", "vector", (5,)), ModalitySpec("b", "vector", (7,)), ModalitySpec("c", "sequence", (6, 3))]


def test_subset_prediction_is_the_mean_of_present_modality_logits() -> None:
    torch.manual_seed(0)
    model = LateFusionModel(MODS, TaskSpec("multiclass", num_classes=4))
    batch = make_batch()
    preds = model.predict(batch, [["a", "b"]])
    model.eval()
    logits = model(batch).logits  # [B, M, K]
    both = batch.present[:, :2]
    expected = (logits[:, :2] * both[..., None]).sum(1) / both.sum(1, keepdim=True).clamp(min=1)
    valid = both.any(1)
    assert torch.equal(preds.valid[0], valid)
    assert torch.allclose(preds["a+b"][valid], expected[valid], atol=1e-6)
    assert torch.isnan(preds["a+b"][~valid]).all()


def test_late_fusion_refuses_an_aggregate_it_does_not_have_and_duplicate_names() -> None:
    model = LateFusionModel(MODS, TaskSpec("multiclass", num_classes=4))
    with pytest.raises(ValueError, match="late fusion averages logits: aggregate 'feature_mean'"):
        model.predict(make_batch(), [["a"]], aggregate="feature_mean")
    with pytest.raises(ValueError, match="modality names must be unique"):
        LateFusionModel([MODS[0], MODS[0]], TaskSpec("multiclass", num_classes=4))
