"""Reusable building blocks: encoders and fusions."""

from robult.modules.encoders import (
    MLP,
    ConvImageEncoder,
    ConvSequenceEncoder,
    GRUEncoder,
    MLPEncoder,
    TokenEncoder,
    TransformerSequenceEncoder,
    build_encoder,
)
from robult.modules.fusions import AttentionFusion, ConcatFusion, build_fusion

__all__ = [
    "MLP",
    "AttentionFusion",
    "ConcatFusion",
    "ConvImageEncoder",
    "ConvSequenceEncoder",
    "GRUEncoder",
    "MLPEncoder",
    "TokenEncoder",
    "TransformerSequenceEncoder",
    "build_encoder",
    "build_fusion",
]
