"""Grouped layers: every group owns its parameters (METHOD.md 2.1: each ``r_m`` owns its normalisation)."""

from __future__ import annotations

import torch
from torch import nn

from robult.modules.layers import GroupedLayerNorm, GroupedMLP


def test_grouped_layer_norm_equals_one_layer_norm_per_group() -> None:
    torch.manual_seed(0)
    norm = GroupedLayerNorm(3, 8)
    with torch.no_grad():
        norm.weight.normal_()
        norm.bias.normal_()
    x = torch.randn(5, 3, 8)
    out = norm(x)
    for m in range(3):
        ref = nn.LayerNorm(8)
        with torch.no_grad():
            ref.weight.copy_(norm.weight[m])
            ref.bias.copy_(norm.bias[m])
        torch.testing.assert_close(out[:, m], ref(x[:, m]), rtol=0, atol=1e-6)


def test_a_loss_on_one_group_moves_only_that_groups_parameters() -> None:
    torch.manual_seed(0)
    mlp = GroupedMLP(3, 6, (8,), 4)
    x = torch.randn(7, 3, 6)
    mlp(x)[:, 1].pow(2).sum().backward()
    for name, p in mlp.named_parameters():
        assert p.grad is not None, name
        others = p.grad[[0, 2]]
        assert torch.count_nonzero(others) == 0, f"{name}: group 1's loss reached groups 0 and 2"
        assert torch.count_nonzero(p.grad[1]) > 0, f"{name}: group 1 got no gradient"


def test_a_shared_norm_state_dict_loads_as_the_same_function() -> None:
    """A model saved when the groups shared one ``nn.LayerNorm`` ([d] weight and bias) keeps its outputs."""
    torch.manual_seed(0)
    mlp = GroupedMLP(2, 5, (8,), 3)
    shared_w, shared_b = torch.randn(8), torch.randn(8)
    old = {k: v.clone() for k, v in mlp.state_dict().items()}
    old["1.weight"], old["1.bias"] = shared_w, shared_b  # the old single LayerNorm's layout
    mlp.load_state_dict(old)
    assert mlp[1].weight.shape == (2, 8)
    x = torch.randn(4, 2, 5)
    h = mlp[0](x)
    expected = nn.functional.layer_norm(h, (8,), shared_w, shared_b)
    torch.testing.assert_close(mlp[1](h), expected, rtol=0, atol=1e-6)


def test_fresh_grouped_norm_is_bit_identical_to_a_fresh_layer_norm() -> None:
    x = torch.randn(4, 3, 16)
    assert torch.equal(GroupedLayerNorm(3, 16)(x), nn.LayerNorm(16)(x))
