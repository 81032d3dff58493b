"""Built-in modality encoders.

Every encoder maps a batch of one modality to ``H^m ∈ R^{out_dim}``. Sequence encoders take ``(x, lengths)`` and
never read padding beyond ``lengths``; the token encoder (:class:`TokenEncoder`) embeds integer ids and runs one of
them. User encoders are any ``nn.Module``; the model adds a linear adapter to the common width ``d_h`` (see
:class:`robult.models.RobultModel`).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import torch
from torch import Tensor, nn

from robult.modules.layers import MLP, transformer_stack
from robult.specs import ModalityKind, ModalitySpec
from robult.utils.options import option

if TYPE_CHECKING:
    from robult.batch import Batch


class MLPEncoder(nn.Module):
    """Encoder for vector modalities: an :class:`MLP` over the flattened input."""

    def __init__(self, in_dim: int, out_dim: int, hidden: tuple[int, ...] = (256,), dropout: float = 0.1) -> None:
        super().__init__()
        self.net = MLP(in_dim, hidden, out_dim, dropout=dropout)
        self.out_dim = out_dim

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x.flatten(1))


def _masked_mean(x: Tensor, lengths: Tensor) -> Tensor:
    steps = torch.arange(x.shape[1], device=x.device)
    mask = (steps[None, :] < lengths[:, None]).to(x.dtype)
    return (x * mask[..., None]).sum(1) / lengths.clamp(min=1).to(x.dtype)[:, None]


class GRUEncoder(nn.Module):
    """Encoder for padded sequences ``[B, T, d]`` with lengths: a (bi)GRU over the packed sequence; the output is
    the concatenated final hidden states projected to ``out_dim``."""

    def __init__(
        self, in_dim: int, out_dim: int, hidden: int = 128, num_layers: int = 1, bidirectional: bool = True
    ) -> None:
        super().__init__()
        self.gru = nn.GRU(in_dim, hidden, num_layers=num_layers, batch_first=True, bidirectional=bidirectional)
        self.proj = nn.Linear(hidden * (2 if bidirectional else 1), out_dim)
        self.out_dim = out_dim

    def forward(self, x: Tensor, lengths: Tensor) -> Tensor:
        packed = nn.utils.rnn.pack_padded_sequence(
            x, lengths.clamp(min=1).cpu(), batch_first=True, enforce_sorted=False
        )
        _, h = self.gru(packed)  # [layers * dirs, B, hidden]
        dirs = 2 if self.gru.bidirectional else 1
        last = h[-dirs:].transpose(0, 1).reshape(x.shape[0], -1)
        return self.proj(last)


class TransformerSequenceEncoder(nn.Module):
    """Encoder for padded sequences with lengths: input projection, learned positions, a Transformer encoder with a
    key-padding mask, and a masked mean over valid steps."""

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        d_model: int = 128,
        num_layers: int = 2,
        num_heads: int = 4,
        max_len: int = 1024,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.inp = nn.Linear(in_dim, d_model)
        self.pos = nn.Parameter(torch.zeros(max_len, d_model))
        nn.init.normal_(self.pos, std=0.02)
        self.encoder = transformer_stack(d_model, num_layers, num_heads, dropout)
        self.proj = nn.Linear(d_model, out_dim)
        self.max_len = max_len
        self.out_dim = out_dim

    def forward(self, x: Tensor, lengths: Tensor) -> Tensor:
        t = x.shape[1]
        if t > self.max_len:
            raise ValueError(f"sequence length {t} exceeds the encoder's max_len {self.max_len}")
        steps = torch.arange(t, device=x.device)
        pad = steps[None, :] >= lengths[:, None]
        # padding may hold anything (even NaN): zero it so it cannot leak through attention arithmetic
        x = x.masked_fill(pad[..., None], 0.0)
        h = self.encoder(self.inp(x) + self.pos[:t], src_key_padding_mask=pad)
        return self.proj(_masked_mean(h, lengths))


class ConvSequenceEncoder(nn.Module):
    """Encoder for padded sequences ``[B, T, d]`` with lengths: a 1-D CNN over time that never reads padding.

    Each block is a convolution over time (``kernel`` wide, the first at stride 1, the next ones at stride 2), a
    per-step layer norm over channels and GELU; the pooled output is the masked mean and masked max over the valid
    steps, projected to ``out_dim``. Before every convolution the steps beyond a sample's length are set to zero,
    and lengths follow each stride (``L' = floor((L + 2p - k) / s) + 1``), so a sample's output is the one it would
    get alone, padded or not: appending padding (of any value) changes nothing. The batch is cut to its longest
    sample first, so the cost follows the true lengths, not the dataset's longest sequence.

    Args:
        in_dim: features per step (e.g. mel bands).
        out_dim: output width.
        width: channels of the first block (doubled at each later block).
        num_layers: number of convolution blocks.
        kernel: kernel width over time (odd).
        dropout: dropout before the projection.
    """

    def __init__(
        self, in_dim: int, out_dim: int, width: int = 64, num_layers: int = 3, kernel: int = 5, dropout: float = 0.1
    ) -> None:
        super().__init__()
        if kernel < 1 or kernel % 2 == 0:
            raise ValueError(f"ConvSequenceEncoder: kernel must be odd and positive, got {kernel}")
        if num_layers < 1:
            raise ValueError(f"ConvSequenceEncoder: num_layers must be at least 1, got {num_layers}")
        channels = [in_dim] + [width * 2**i for i in range(num_layers)]
        self.convs = nn.ModuleList(
            nn.Conv1d(c_in, c_out, kernel, stride=1 if i == 0 else 2, padding=kernel // 2)
            for i, (c_in, c_out) in enumerate(itertools.pairwise(channels))
        )
        self.norms = nn.ModuleList(nn.LayerNorm(c) for c in channels[1:])
        self.activation = nn.GELU()
        self.dropout = nn.Dropout(dropout)
        self.proj = nn.Linear(2 * channels[-1], out_dim)
        self.out_dim = out_dim

    def forward(self, x: Tensor, lengths: Tensor) -> Tensor:
        lengths = lengths.clamp(min=1)
        if not torch.jit.is_tracing():  # a traced (exported) model keeps every step: the cut is only a speed-up
            x = x[:, : int(lengths.max())]  # [B, T, d]: nothing beyond the longest sample is read
        for conv, norm in zip(self.convs, self.norms, strict=True):
            valid = torch.arange(x.shape[1], device=x.device)[None, :] < lengths[:, None]
            x = x.masked_fill(~valid[..., None], 0.0)
            h = conv(x.transpose(1, 2)).transpose(1, 2)  # [B, T', c]
            (p,), (k,), (s,) = conv.padding, conv.kernel_size, conv.stride
            lengths = torch.div(lengths + 2 * p - k, s, rounding_mode="floor") + 1
            x = self.activation(norm(h))
        valid = torch.arange(x.shape[1], device=x.device)[None, :] < lengths[:, None]
        mean = _masked_mean(x, lengths)
        peak = x.masked_fill(~valid[..., None], float("-inf")).amax(dim=1)
        return self.proj(self.dropout(torch.cat([mean, peak], dim=-1)))


class ConvImageEncoder(nn.Module):
    """A small CNN for ``[B, C, H, W]`` images (a weak default; pass a pretrained backbone for real images):
    three stride-2 convolutions, global average pooling (``features``) and a linear ``head``."""

    def __init__(self, in_channels: int, out_dim: int, width: int = 32, activation: type[nn.Module] = nn.GELU) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, stride=2, padding=1),
            activation(),
            nn.Conv2d(width, 2 * width, 3, stride=2, padding=1),
            activation(),
            nn.Conv2d(2 * width, 4 * width, 3, stride=2, padding=1),
            activation(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.head = nn.Linear(4 * width, out_dim)
        self.out_dim = out_dim

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


TOKEN_BUCKETS = 32768  # the default of ``model.token_buckets``: more than BERT's 30522 ids


@dataclass
class EncoderConfig:
    """Options of the built-in encoders (:class:`ModalityEncoders`), the ``model`` keys every method reads."""

    hidden_dim: int = option(
        128,
        "``d_h``, the common width of every encoder output (a linear adapter brings user encoders to it).",
        ge=1,
    )
    encoder_hidden: tuple[int, ...] = option((256,), "hidden widths of the built-in MLP encoders.")
    sequence_encoder: Literal["gru", "transformer", "conv"] = option(
        "gru",
        'built-in encoder for sequences: ``"gru"``, ``"transformer"`` or ``"conv"`` (a 1-D CNN over time, '
        ":class:`robult.modules.encoders.ConvSequenceEncoder`); a ``tokens`` modality embeds its ids and runs the same "
        "encoder.",
    )
    token_buckets: int = option(
        TOKEN_BUCKETS,
        "embedding rows of the built-in encoder of ``tokens`` modalities (width ``hidden_dim``): id ``i`` uses row "
        "``i mod token_buckets``, so the default covers BERT's 30522 ids one row each.",
        ge=1,
    )
    dropout: float = option(0.1, "dropout in the built-in encoders.", ge=0.0, lt=1.0)

    def __post_init__(self) -> None:
        if self.hidden_dim < 1:
            raise ValueError(f"hidden_dim must be positive, got {self.hidden_dim}")
        self.encoder_hidden = tuple(self.encoder_hidden)

    @classmethod
    def of(cls, config: object) -> EncoderConfig:
        """The encoder options of a larger config holding the same fields (e.g. ``RobultConfig``)."""
        return cls(**{name: getattr(config, name) for name in cls.__dataclass_fields__})


def encoder_option(name: str, help: str | None = None) -> Any:
    """A config field equal to :class:`EncoderConfig`'s ``name`` (its default, meaning and bounds; ``help`` replaces
    the meaning), for a model config that holds the encoder keys among its own in its own order (``RobultConfig``)::

        hidden_dim: int = encoder_option("hidden_dim")
    """
    f = EncoderConfig.__dataclass_fields__[name]
    return field(default=f.default, metadata={**f.metadata, **({} if help is None else {"help": help})})


def build_sequence_encoder(name: str, in_dim: int, out_dim: int, **kwargs: object) -> nn.Module:
    """The built-in sequence encoder ``name`` (``"gru"``, ``"transformer"`` or ``"conv"``) from ``[B, T, in_dim]``
    with lengths to ``[B, out_dim]``; ``kwargs`` go to its class."""
    if name == "gru":
        return GRUEncoder(in_dim, out_dim, **kwargs)  # type: ignore[arg-type]
    if name == "transformer":
        return TransformerSequenceEncoder(in_dim, out_dim, **kwargs)  # type: ignore[arg-type]
    if name == "conv":
        return ConvSequenceEncoder(in_dim, out_dim, **kwargs)  # type: ignore[arg-type]
    raise ValueError(f"unknown sequence encoder {name!r}; use 'gru', 'transformer' or 'conv'")


class TokenEncoder(nn.Module):
    """Encoder for ``tokens`` modalities (integer ids ``[B, T]`` with lengths): a learned embedding of the ids, then a
    built-in sequence encoder (the one ``sequence`` modalities get) over the embedded steps.

    The vocabulary is fixed by ``buckets``, not by the data (a saved model is rebuilt from its config): id ``i`` uses
    embedding row ``i mod buckets`` (the hashing trick; with the default 32768 rows every BERT id has its own row,
    and larger vocabularies share rows). Ids beyond a sample's length are never read: they are replaced by 0 before
    the lookup, and the sequence encoder ignores those steps, so padding of any value (even negative) changes nothing.
    A negative id within a sample's length is an error naming the modality (checked in eager mode; a traced,
    exported model maps it by floor modulo, ``-1`` to row ``buckets - 1``).

    Args:
        out_dim: output width.
        buckets: embedding rows (``model.token_buckets``).
        embedding_dim: width of the embedded steps, the sequence encoder's input (default ``out_dim``, i.e. ``d_h``).
        sequence_encoder: ``"gru"``, ``"transformer"`` or ``"conv"``.
        name: the modality, named in errors.
        kwargs: passed to the sequence encoder (e.g. ``dropout`` for ``conv``).
    """

    def __init__(
        self,
        out_dim: int,
        buckets: int = TOKEN_BUCKETS,
        embedding_dim: int | None = None,
        sequence_encoder: str = "gru",
        name: str = "tokens",
        **kwargs: object,
    ) -> None:
        super().__init__()
        if buckets < 1:
            raise ValueError(f"modality {name!r}: token_buckets must be >= 1, got {buckets}")
        width = out_dim if embedding_dim is None else embedding_dim
        # N(0, 1) rows: the scale of the standardised features the sequence encoders get for sequence modalities
        self.embedding = nn.Embedding(buckets, width)
        self.sequence = build_sequence_encoder(sequence_encoder, width, out_dim, **kwargs)
        self.buckets = buckets
        self.name = name
        self.out_dim = out_dim

    def embed(self, ids: Tensor, lengths: Tensor) -> Tensor:
        """``[B, T]`` ids -> ``[B, T, embedding_dim]``; steps beyond each length embed id 0."""
        if ids.is_floating_point() or ids.is_complex() or ids.dtype == torch.bool:
            raise ValueError(f"modality {self.name!r}: token ids must be integers, got {ids.dtype}")
        if ids.ndim != 2:
            raise ValueError(f"modality {self.name!r}: token ids must be [B, T], got shape {tuple(ids.shape)}")
        valid = torch.arange(ids.shape[1], device=ids.device)[None, :] < lengths.clamp(min=1)[:, None]
        ids = torch.where(valid, ids.long(), torch.zeros_like(ids, dtype=torch.long))
        if not torch.jit.is_tracing() and bool((ids < 0).any()):
            row, step = (int(v) for v in (ids < 0).nonzero()[0])
            raise ValueError(
                f"modality {self.name!r}: negative token id {int(ids[row, step])} at step {step} (within the sample's "
                "length); token ids must be >= 0 (ids >= model.token_buckets share rows by modulo)"
            )
        return self.embedding(torch.remainder(ids, self.buckets))

    def forward(self, ids: Tensor, lengths: Tensor) -> Tensor:
        return self.sequence(self.embed(ids, lengths), lengths)


def build_encoder(
    spec: ModalitySpec,
    out_dim: int,
    sequence_encoder: str = "gru",
    token_buckets: int = TOKEN_BUCKETS,
    **kwargs: object,
) -> nn.Module:
    """The built-in encoder for a modality spec.

    Args:
        spec: the modality.
        out_dim: output width ``d_h``.
        sequence_encoder: ``"gru"``, ``"transformer"`` or ``"conv"`` (:class:`ConvSequenceEncoder`) for sequence
            and tokens modalities.
        token_buckets: embedding rows of a tokens modality's :class:`TokenEncoder` (ids map by modulo).
        kwargs: passed to the encoder (e.g. ``hidden`` for MLPs).
    """
    if spec.kind == ModalityKind.VECTOR:
        return MLPEncoder(int(spec.shape[0]), out_dim, **kwargs)  # type: ignore[arg-type]
    if spec.kind == ModalityKind.SEQUENCE:
        in_dim = spec.shape[-1]
        if in_dim is None:
            raise ValueError(f"modality {spec.name!r}: a sequence spec needs a fixed feature width")
        return build_sequence_encoder(sequence_encoder, in_dim, out_dim, **kwargs)
    if spec.kind == ModalityKind.TOKENS:
        return TokenEncoder(out_dim, token_buckets, sequence_encoder=sequence_encoder, name=spec.name, **kwargs)
    if spec.kind == ModalityKind.IMAGE:
        return ConvImageEncoder(int(spec.shape[0]), out_dim, **kwargs)  # type: ignore[arg-type]
    raise ValueError(
        f"modality {spec.name!r} of kind {spec.kind.value!r} has no built-in encoder; pass your own nn.Module "
        "in `encoders`"
    )


def encoder_out_dim(encoder: nn.Module, spec: ModalitySpec) -> int:
    """``encoder.out_dim`` if declared, else inferred by one dummy forward pass on a zero input of the spec."""
    declared = getattr(encoder, "out_dim", None)
    if isinstance(declared, int):
        return declared
    shape = [8 if s is None else s for s in spec.shape]
    dtype = torch.long if spec.kind == ModalityKind.TOKENS else torch.float32
    x = torch.zeros(2, *shape, dtype=dtype)
    was_training = encoder.training
    encoder.eval()
    try:
        with torch.no_grad():
            out = encoder(x, torch.full((2,), shape[0], dtype=torch.long)) if spec.is_sequential else encoder(x)
    except Exception as err:  # pragma: no cover - depends on user code
        raise ValueError(
            f"could not infer the output width of the encoder of modality {spec.name!r}; give it an `out_dim` "
            f"attribute ({err})"
        ) from err
    finally:
        encoder.train(was_training)
    if out.ndim != 2:
        raise ValueError(
            f"the encoder of modality {spec.name!r} returns shape {tuple(out.shape)}; encoders must return [B, d]"
        )
    return int(out.shape[1])


class ModalityEncoders(nn.Module):
    """One encoder ``f_m`` per modality plus a linear adapter to the common width ``d_h``.

    ``forward(batch)`` returns ``H [B, M, d_h]``: every encoder runs on the rows where its modality is present,
    and only on those (absent inputs may hold NaN); absent rows are zero and must not be read.

    Args:
        modalities: the modality specs.
        hidden_dim: ``d_h``.
        encoders: user encoders by modality name (any ``nn.Module`` returning ``[B, d]``; sequence encoders are
            called as ``encoder(x, lengths)``); built-ins for the others.
        encoder_hidden, dropout: options of the built-in MLP encoders.
        sequence_encoder: ``"gru"``, ``"transformer"`` or ``"conv"`` for built-in sequence and token encoders.
        token_buckets: embedding rows of the built-in token encoders (:class:`TokenEncoder`).
    """

    def __init__(
        self,
        modalities: list[ModalitySpec],
        hidden_dim: int,
        encoders: dict[str, nn.Module] | None = None,
        encoder_hidden: tuple[int, ...] = (256,),
        dropout: float = 0.1,
        sequence_encoder: str = "gru",
        token_buckets: int = TOKEN_BUCKETS,
    ) -> None:
        super().__init__()
        self.modalities = list(modalities)
        self.hidden_dim = hidden_dim
        names = [s.name for s in self.modalities]
        if len(set(names)) != len(names):
            raise ValueError(f"modality names must be unique, got {names}")
        encoders = dict(encoders or {})
        unknown = sorted(set(encoders) - set(names))
        if unknown:
            raise ValueError(f"encoder given for unknown modality {unknown[0]!r}; modalities are {names}")
        self.encoders = nn.ModuleDict()
        self.adapters = nn.ModuleDict()
        for spec in self.modalities:
            if spec.name in encoders:
                enc = encoders[spec.name]
                width = encoder_out_dim(enc, spec)
                self.encoders[spec.name] = enc
                self.adapters[spec.name] = nn.Identity() if width == hidden_dim else nn.Linear(width, hidden_dim)
            else:
                extra: dict[str, object] = {}
                if spec.kind == ModalityKind.VECTOR:
                    extra = {"hidden": encoder_hidden, "dropout": dropout}
                elif spec.is_sequential and sequence_encoder == "conv":
                    extra = {"dropout": dropout}
                self.encoders[spec.name] = build_encoder(spec, hidden_dim, sequence_encoder, token_buckets, **extra)
                self.adapters[spec.name] = nn.Identity()

    @classmethod
    def from_config(
        cls,
        modalities: list[ModalitySpec],
        config: EncoderConfig | None = None,
        encoders: Mapping[str, nn.Module] | None = None,
    ) -> ModalityEncoders:
        """The encoders ``config`` describes (:class:`EncoderConfig`; defaults when ``None``), with the user's
        ``encoders`` where given."""
        cfg = config or EncoderConfig()
        return cls(
            list(modalities),
            cfg.hidden_dim,
            dict(encoders or {}),
            cfg.encoder_hidden,
            cfg.dropout,
            cfg.sequence_encoder,
            cfg.token_buckets,
        )

    @property
    def names(self) -> list[str]:
        """The modality names, in order."""
        return [s.name for s in self.modalities]

    def forward(self, batch: Batch) -> Tensor:
        b = batch.size
        out = []
        for m, spec in enumerate(self.modalities):
            rows = batch.present[:, m].nonzero().flatten()
            full = torch.zeros(b, self.hidden_dim, device=batch.present.device)
            if rows.numel():
                x = batch.inputs[spec.name].index_select(0, rows)
                enc = self.encoders[spec.name]
                h = enc(x, batch.lengths[spec.name].index_select(0, rows)) if spec.is_sequential else enc(x)
                h = self.adapters[spec.name](h)
                full = full.to(h.dtype).index_copy(0, rows, h)
            out.append(full)
        return torch.stack(out, dim=1)
