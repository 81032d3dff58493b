"""Layers: the MLP building block, and grouped layers (M independent MLPs evaluated in one batched op, one per
modality)."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


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


class GroupedMLP(nn.Sequential):
    """``M`` independent MLPs (``GroupedLinear -> LayerNorm -> GELU`` blocks and a final ``GroupedLinear``) on
    ``x [B, M, d_in]``. LayerNorm and GELU act per sample and group, so groups never mix."""

    def __init__(self, groups: int, in_dim: int, hidden: tuple[int, ...] | list[int], out_dim: int) -> None:
        layers: list[nn.Module] = []
        width = in_dim
        for h in hidden:
            layers += [GroupedLinear(groups, width, h), nn.LayerNorm(h), nn.GELU()]
            width = h
        layers.append(GroupedLinear(groups, width, out_dim))
        super().__init__(*layers)
        self.out_dim = out_dim
