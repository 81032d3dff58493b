"""Layers: the MLP building block, and grouped layers (M independent MLPs evaluated in one batched op, one per
modality)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def transformer_stack(width: int, num_layers: int, num_heads: int, dropout: float) -> nn.TransformerEncoder:
    """``num_layers`` transformer encoder layers over batch-first ``[B, T, width]`` tokens (``num_heads`` heads, a
    ``2 * width`` feed-forward, ``dropout``): the stack of the built-in transformer sequence encoder and of the
    attention fusion."""
    layer = nn.TransformerEncoderLayer(width, num_heads, dim_feedforward=2 * width, dropout=dropout, batch_first=True)
    return nn.TransformerEncoder(layer, num_layers, enable_nested_tensor=False)


class MLP(nn.Sequential):
    """``Linear -> [norm] -> act -> dropout`` blocks and a final ``Linear``.

    Args:
        in_dim: input width.
        hidden: widths of the hidden layers (empty: a single linear map).
        out_dim: output width.
        dropout: dropout after each hidden activation.
        norm: ``"layer"`` (LayerNorm), ``"batch"`` (BatchNorm1d) or ``None``.
    """

    def __init__(
        self,
        in_dim: int,
        hidden: tuple[int, ...] | list[int],
        out_dim: int,
        dropout: float = 0.0,
        norm: str | None = "layer",
    ) -> None:
        layers: list[nn.Module] = []
        width = in_dim
        for h in hidden:
            layers.append(nn.Linear(width, h))
            if norm == "layer":
                layers.append(nn.LayerNorm(h))
            elif norm == "batch":
                layers.append(nn.BatchNorm1d(h))
            elif norm is not None:
                raise ValueError(f"unknown norm {norm!r}; use 'layer', 'batch' or None")
            layers.append(nn.GELU())
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = h
        layers.append(nn.Linear(width, out_dim))
        super().__init__(*layers)
        self.out_dim = out_dim


class GroupedLinear(nn.Module):
    """``M`` independent linear maps applied to ``x [B, M, d_in]`` in one ``einsum``.

    Group ``m`` of the output depends only on group ``m`` of the input and on ``weight[m]``, ``bias[m]``.
    Initialised like ``nn.Linear`` (per group).
    """

    def __init__(self, groups: int, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(groups, in_dim, out_dim))
        self.bias = nn.Parameter(torch.empty(groups, out_dim))
        bound = 1.0 / math.sqrt(in_dim)
        nn.init.uniform_(self.weight, -bound, bound)
        nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: Tensor) -> Tensor:
        return torch.einsum("bmi,mio->bmo", x, self.weight) + self.bias


class GroupedLayerNorm(nn.Module):
    """``M`` independent LayerNorms on ``x [B, M, d]``: each group is normalised over its ``d`` features and has its
    own affine ``weight[m]``, ``bias[m]`` (so no group's gradient moves another group's normalisation).

    A state dict holding one shared ``[d]`` weight and bias (the layout of a single ``nn.LayerNorm``, used by
    models saved before each group owned its parameters) loads as that value copied to every group: the same
    function.
    """

    def __init__(self, groups: int, dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.dim, self.eps = dim, eps
        self.weight = nn.Parameter(torch.ones(groups, dim))
        self.bias = nn.Parameter(torch.zeros(groups, dim))

    def forward(self, x: Tensor) -> Tensor:
        return F.layer_norm(x, (self.dim,), eps=self.eps) * self.weight + self.bias

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        for name in ("weight", "bias"):
            value = state_dict.get(prefix + name)
            if value is not None and value.dim() == 1 and value.shape[0] == self.dim:
                state_dict[prefix + name] = value.expand(self.weight.shape[0], self.dim).clone()
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


class GroupedMLP(nn.Sequential):
    """``M`` independent MLPs (``GroupedLinear -> GroupedLayerNorm -> GELU`` blocks and a final ``GroupedLinear``)
    on ``x [B, M, d_in]``. Every parameter belongs to one group (normalisation included) and every op acts per
    sample and group, so groups never mix."""

    def __init__(self, groups: int, in_dim: int, hidden: tuple[int, ...] | list[int], out_dim: int) -> None:
        layers: list[nn.Module] = []
        width = in_dim
        for h in hidden:
            layers += [GroupedLinear(groups, width, h), GroupedLayerNorm(groups, h), nn.GELU()]
            width = h
        layers.append(GroupedLinear(groups, width, out_dim))
        super().__init__(*layers)
        self.out_dim = out_dim
