"""Fusion modules ``φ``: map the present modalities' features ``{H^m}`` of a sample to one vector ``S``.

Absent modalities are never zero-filled into the fusion network: concatenation fusion substitutes a *learned*
per-modality placeholder for an absent ``H^m`` (so the network sees "missing", not a fake zero feature), and
attention fusion masks absent modality tokens out of the attention and the pooling.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from robult.modules.layers import MLP, transformer_stack


class ConcatFusion(nn.Module):
    """Concatenation + MLP (default).

    Args:
        num_modalities: M.
        in_dim: width of each ``H^m``.
        out_dim: width of ``S``.
        hidden: hidden widths of the MLP.
        dropout: dropout in the MLP.
    """

    def __init__(
        self,
        num_modalities: int,
        in_dim: int,
        out_dim: int,
        hidden: tuple[int, ...] | None = None,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.missing = nn.Parameter(torch.zeros(num_modalities, in_dim))
        nn.init.normal_(self.missing, std=0.02)
        self.net = MLP(num_modalities * in_dim, (in_dim,) if hidden is None else hidden, out_dim, dropout=dropout)

    def forward(self, hidden: Tensor, present: Tensor) -> Tensor:
        """Args: hidden ``[B, M, d_h]`` (absent rows arbitrary), present ``[B, M]``. Returns ``S [B, out_dim]``."""
        h = torch.where(present[..., None], hidden, self.missing[None].to(hidden.dtype))
        return self.net(h.flatten(1))


class AttentionFusion(nn.Module):
    """Transformer over modality tokens (plus a learned modality embedding), masked where a modality is absent,
    then a masked mean over present tokens and a linear map to ``out_dim``."""

    def __init__(
        self,
        num_modalities: int,
        in_dim: int,
        out_dim: int,
        num_layers: int = 1,
        num_heads: int = 4,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        if in_dim % num_heads:
            raise ValueError(f"attention fusion: d_h={in_dim} must be divisible by num_heads={num_heads}")
        self.modality_embedding = nn.Parameter(torch.zeros(num_modalities, in_dim))
        nn.init.normal_(self.modality_embedding, std=0.02)
        self.encoder = transformer_stack(in_dim, num_layers, num_heads, dropout)
        self.out = nn.Linear(in_dim, out_dim)

    def forward(self, hidden: Tensor, present: Tensor) -> Tensor:
        tokens = hidden.masked_fill(~present[..., None], 0.0) + self.modality_embedding[None]
        h = self.encoder(tokens, src_key_padding_mask=~present)
        w = present.to(h.dtype)[..., None]
        pooled = (h.masked_fill(~present[..., None], 0.0) * w).sum(1) / w.sum(1).clamp(min=1.0)
        return self.out(pooled)


def build_fusion(kind: str, num_modalities: int, in_dim: int, out_dim: int, dropout: float = 0.1) -> nn.Module:
    """``"concat"`` (default) or ``"attention"``."""
    if kind == "concat":
        return ConcatFusion(num_modalities, in_dim, out_dim, dropout=dropout)
    if kind == "attention":
        return AttentionFusion(num_modalities, in_dim, out_dim, dropout=dropout)
    raise ValueError(f"unknown fusion {kind!r}; use 'concat' or 'attention'")
