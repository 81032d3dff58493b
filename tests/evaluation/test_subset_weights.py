"""Per-modality subset weights chosen on the validation split: a noise view is down-weighted, nothing changes
when there is nothing to gain, and a single modality is never rescaled."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
from torch import Tensor, nn

from robult import Batch, ModalitySpec, TaskSpec
from robult.data.dataset import MultimodalDataset
from robult.evaluation.subset_weights import fit_subset_weights
from robult.models.subsets import aggregate_subsets, subset_masks

NAMES = ["good", "noise"]


@dataclass
class _Out:
    logits: Tensor
    present: Tensor


class _Fixed(nn.Module):
    """Returns the inputs as per-modality logits: 'good' holds the label's one-hot, 'noise' loud random logits."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("modality_weights", torch.ones(2))

    def forward(self, batch: Batch, with_reconstruction: bool = False, validate: bool = True) -> _Out:
        return _Out(torch.stack([batch.inputs["good"], batch.inputs["noise"]], dim=1), batch.present)

    def predict_subsets(self, output: _Out, subsets):
        keys, masks = subset_masks(subsets, NAMES)
        return aggregate_subsets(keys, masks, output.logits, output.present, weights=self.modality_weights)


def _data(noise_scale: float, n: int = 200) -> MultimodalDataset:
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 4, (n,), generator=g)
    good = torch.nn.functional.one_hot(y, 4).float() + 0.3 * torch.randn(n, 4, generator=g)
    noise = noise_scale * torch.randn(n, 4, generator=g)
    specs = [ModalitySpec("good", "vector", (4,)), ModalitySpec("noise", "vector", (4,))]
    task = TaskSpec("multiclass", num_classes=4)
    return MultimodalDataset(specs, task, {"good": good, "noise": noise}, y, labeled=torch.ones(n, dtype=torch.bool))


def test_a_noise_view_is_down_weighted_and_the_score_improves() -> None:
    model, data = _Fixed(), _data(noise_scale=3.0)
    task = TaskSpec("multiclass", num_classes=4)
    batch = data.__getitems__(range(len(data)))
    plain = model.predict_subsets(model(batch), [["good", "noise"]]).predictions[0].argmax(-1)
    weights = fit_subset_weights(model, data, task, NAMES, "accuracy")
    assert weights.tolist() == pytest.approx([1.0, 0.1]) and torch.equal(model.modality_weights, weights)
    both = model.predict_subsets(model(batch), [["good", "noise"]]).predictions[0].argmax(-1)
    assert (both == batch.target).float().mean() > (plain == batch.target).float().mean() + 0.1
    # a subset of one modality is never rescaled: 'noise' alone predicts exactly as before
    alone = model.predict_subsets(model(batch), [["noise"]]).predictions[0]
    torch.testing.assert_close(alone, batch.inputs["noise"])


def test_nothing_to_gain_keeps_the_plain_mean() -> None:
    model, data = _Fixed(), _data(noise_scale=0.0)  # 'noise' is all zeros: weighting cannot change any argmax
    weights = fit_subset_weights(model, data, TaskSpec("multiclass", num_classes=4), NAMES, "accuracy")
    assert weights.tolist() == [1.0, 1.0]
