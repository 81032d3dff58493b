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
    model = LateFusionModel.from_config(MODS, TaskSpec("multiclass", num_classes=4))
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
    model = LateFusionModel.from_config(MODS, TaskSpec("multiclass", num_classes=4))
    with pytest.raises(ValueError, match="late fusion averages logits: aggregate 'feature_mean'"):
        model.predict(make_batch(), [["a"]], aggregate="feature_mean")
    with pytest.raises(ValueError, match="modality names must be unique"):
        LateFusionModel.from_config([MODS[0], MODS[0]], TaskSpec("multiclass", num_classes=4))


def test_the_model_takes_its_encoders_and_heads_as_arguments() -> None:
    from torch import nn

    from robult.methods import build_method
    from robult.models.late_fusion import LateFusionConfig
    from robult.modules.encoders import ModalityEncoders

    task = TaskSpec("multiclass", num_classes=4)
    cfg = LateFusionConfig(hidden_dim=8, encoder_hidden=(6,))
    torch.manual_seed(0)
    encoders = ModalityEncoders.from_config(MODS, cfg)
    heads = {m.name: nn.Linear(8, 4) for m in MODS}
    model = LateFusionModel(MODS, task, encoders, heads)
    assert model.encoders is encoders and all(model.heads[n] is heads[n] for n in heads)
    assert model(make_batch()).logits.shape == (12, 3, 4)
    # from_config draws the weights in the order the registry's builder does
    torch.manual_seed(0)
    built = LateFusionModel.from_config(MODS, task, cfg)
    torch.manual_seed(0)
    registry, _ = build_method("supervised", MODS, task, {"hidden_dim": 8, "encoder_hidden": (6,)})
    assert built.state_dict().keys() == registry.state_dict().keys()
    assert all(torch.equal(v, registry.state_dict()[k]) for k, v in built.state_dict().items())
    with pytest.raises(ValueError, match=r"one head per modality is needed: missing \['c'\], unknown \['d'\]"):
        LateFusionModel(MODS, task, encoders, {"a": nn.Linear(8, 4), "b": nn.Linear(8, 4), "d": nn.Linear(8, 4)})
    with pytest.raises(ValueError, match=r"the encoders' modalities \['a', 'b'\] differ from the model's"):
        LateFusionModel(MODS, task, ModalityEncoders.from_config(MODS[:2], cfg), heads)
    with pytest.raises(TypeError, match=r"encoders must be a robult\.modules\.encoders\.ModalityEncoders, got dict"):
        LateFusionModel(MODS, task, {"a": nn.Linear(5, 8)}, heads)  # type: ignore[arg-type]
