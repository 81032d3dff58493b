"""The Robult model (``docs/METHOD.md``): encoders ``f_m``, a shared projector ``g_0`` (redundant
features ``Z``), modality-specific projectors ``g_m`` (unique features ``U``), a fusion ``φ`` (fused ``S``), a fused
head ``c_S``, a head ``c`` shared across modalities, and reconstructors ``r_m`` (training only).

Inference with any subset ``A`` of modalities aggregates the per-modality predictions ``c([U^m; Z^m])`` over
``m ∈ A``; since each of those depends on its own modality alone, the predictions of *all* subsets come from one
encoder pass (:meth:`RobultModel.predict_subsets`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import torch
from torch import Tensor, nn

from robult.batch import Batch, validate_batch
from robult.models.base import MultimodalModel
from robult.models.subsets import SubsetPredictions, aggregate_subsets, subset_masks
from robult.modules.encoders import EncoderConfig, ModalityEncoders, encoder_option
from robult.modules.fusions import build_fusion
from robult.modules.layers import MLP, GroupedMLP
from robult.specs import ModalitySpec, TaskSpec
from robult.utils.options import option

if TYPE_CHECKING:
    from robult.data.dataset import MultimodalDataset

AGGREGATES = ("logit_mean", "feature_mean")


@dataclass
class RobultConfig:
    """Architecture options (defaults from METHOD.md); each field's meaning is its ``help`` (``robult config show``
    prints it)."""

    hidden_dim: int = encoder_option("hidden_dim")
    shared_dim: int = option(64, "``d_z``, width of ``Z^m`` and of the fused ``S``.", ge=1)
    specific_dim: int = option(64, "``d_u``, width of ``U^m``.", ge=1)
    projector_hidden: tuple[int, ...] = option((), "hidden widths of ``g_0`` and ``g_m`` (empty: linear projectors).")
    head_hidden: tuple[int, ...] = option((), "hidden widths of the heads ``c`` and ``c_S``.")
    encoder_hidden: tuple[int, ...] = encoder_option("encoder_hidden")
    sequence_encoder: Literal["gru", "transformer", "conv"] = encoder_option("sequence_encoder")
    token_buckets: int = encoder_option("token_buckets")
    fusion: Literal["concat", "attention"] = option(
        "concat",
        '``"concat"`` (concatenation + MLP) or ``"attention"`` (masked attention over modality tokens).',
    )
    dropout: float = encoder_option(
        "dropout", "dropout in the built-in encoders and the fusion (projectors and heads have none)."
    )
    aggregate: Literal["logit_mean", "feature_mean"] = option(
        "logit_mean",
        '``"logit_mean"`` (mean of per-modality predictions) or ``"feature_mean"`` '
        "(head on the mean of ``[U^m; Z^m]``).",
    )
    use_fused_when_complete: bool = option(
        False,
        "predict with the fused head ``c_S(S)`` when every modality is present.",
    )
    rec_grad_to_encoder: bool = option(
        False,
        "let the reconstruction loss reach the encoders (off: only ``g_m`` and ``r_m``).",
    )
    fusion_grad_to_encoder: bool = option(
        True,
        "let the fused branch (``c_S(S)`` supervision and the contrastive targets ``S``) reach the encoders (METHOD.md;"
        " off: the fusion sees ``sg(H)``, so each encoder is trained only through its own modality's ``Z^m, U^m`` — not"
        " in METHOD.md, an experiment against modality competition).",
    )
    subset_weights: Literal["validation", "uniform"] = option(
        "validation",
        "the per-modality weights of the subset average. ``validation`` (default): after training, each modality's "
        "weight is chosen from {0.1, 0.3, 1} on the validation split (the selection score, by coordinate ascent from "
        "all-1, kept only where it improves), so a view that is near chance alone stops diluting the others; "
        "``uniform``: the plain mean. Only :class:`RobultModel` has the weights (saved with it); the late-fusion "
        "baselines average uniformly.",
    )
    strong_view: float = option(
        0.0,
        "training only (weak/strong self-training, FixMatch-style): the forward also predicts every sample with the "
        "fused head from a strongly perturbed copy of its hidden features (each present modality dropped with this "
        "probability, at least one kept, and dropout at this rate on the kept ``H^m``), returned as "
        "``RobultOutput.strong_fused_logits``; the self-training term trains it towards the weak (unperturbed) "
        "teacher's confident pseudo-label, so the fused teacher also learns from unlabeled samples. 0 (off): no strong "
        "view, and the forward draws no extra random numbers.",
        ge=0.0,
        lt=1.0,
    )

    def __post_init__(self) -> None:
        if self.aggregate not in AGGREGATES:
            raise ValueError(f"unknown aggregate {self.aggregate!r}; use one of {AGGREGATES}")
        for key in ("hidden_dim", "shared_dim", "specific_dim"):
            if getattr(self, key) < 1:
                raise ValueError(f"{key} must be positive, got {getattr(self, key)}")
        if not 0.0 <= self.strong_view < 1.0:
            raise ValueError(f"strong_view must lie in [0, 1), got {self.strong_view}")
        self.projector_hidden = tuple(self.projector_hidden)
        self.head_hidden = tuple(self.head_hidden)
        self.encoder_hidden = tuple(self.encoder_hidden)


@dataclass
class RobultOutput:
    """What a forward pass returns. Rows of absent modalities hold arbitrary finite values: mask with ``present``.

    Attributes:
        hidden: ``H [B, M, d_h]``.
        shared: ``Z [B, M, d_z]`` (redundant features, shared projector).
        specific: ``U [B, M, d_u]`` (unique features, modality-specific projectors).
        fused: ``S [B, d_z]`` (fusion of the present modalities).
        logits: ``c([U^m; Z^m])`` per modality, ``[B, M, K]`` (K = task outputs; raw values for regression).
        fused_logits: ``c_S(S)``, ``[B, K]``.
        present: ``[B, M]``.
        reconstruction: ``r_m([g_m(sg H^m); sg Z^m])``, ``[B, M, d_h]``, or ``None`` when not requested.
        reconstruction_target: ``sg(H) [B, M, d_h]`` or ``None``.
        strong_fused_logits: ``c_S`` on a strongly perturbed copy ``[B, K]`` (training with
            ``RobultConfig.strong_view > 0`` only), else ``None``.
    """

    hidden: Tensor
    shared: Tensor
    specific: Tensor
    fused: Tensor
    logits: Tensor
    fused_logits: Tensor
    present: Tensor
    reconstruction: Tensor | None = None
    reconstruction_target: Tensor | None = None
    strong_fused_logits: Tensor | None = None


class RobultModel(MultimodalModel):
    """Robult: redundancy (``Z``) and modality-specific (``U``) features for robust multimodal learning.

    Args:
        modalities: the modality specs (their order is the column order of ``present``).
        task: the task spec.
        config: architecture options.
        encoders: the encoders, either built (:class:`ModalityEncoders`, width ``config.hidden_dim``) or optional
            user encoders by modality name (any ``nn.Module`` returning ``[B, d]``; sequence encoders are called as
            ``encoder(x, lengths)``), with built-ins from ``config`` for the others.
    """

    def __init__(
        self,
        modalities: Sequence[ModalitySpec],
        task: TaskSpec,
        config: RobultConfig | None = None,
        encoders: ModalityEncoders | Mapping[str, nn.Module] | None = None,
    ) -> None:
        cfg = config or RobultConfig()
        if not isinstance(encoders, ModalityEncoders):
            encoders = ModalityEncoders.from_config(list(modalities), EncoderConfig.of(cfg), encoders)
        if encoders.hidden_dim != cfg.hidden_dim:
            raise ValueError(
                f"the encoders' width {encoders.hidden_dim} differs from config.hidden_dim {cfg.hidden_dim}"
            )
        super().__init__(modalities, task, encoders)
        self.config = cfg
        d_h, d_z, d_u, k = cfg.hidden_dim, cfg.shared_dim, cfg.specific_dim, task.num_outputs
        self.shared_projector = MLP(d_h, cfg.projector_hidden, d_z, dropout=0.0)
        self.specific_projectors = GroupedMLP(len(self.names), d_h, cfg.projector_hidden, d_u)
        self.fusion = build_fusion(cfg.fusion, len(self.names), d_h, d_z, dropout=cfg.dropout)
        self.fused_head = MLP(d_z, cfg.head_hidden, k, dropout=0.0)
        self.head = MLP(d_z + d_u, cfg.head_hidden, k, dropout=0.0)
        self.reconstructors = GroupedMLP(len(self.names), d_u + d_z, (d_h,), d_h)
        # per-modality weights of the subset average (all 1 until fitted on validation, see subset_weights)
        self.register_buffer("modality_weights", torch.ones(len(self.names)))

    @classmethod
    def from_config(
        cls,
        modalities: Sequence[ModalitySpec],
        task: TaskSpec,
        config: RobultConfig | None = None,
        encoders: Mapping[str, nn.Module] | None = None,
    ) -> RobultModel:
        """The model with its encoders built from ``config`` (the user's ``encoders`` where given), as the
        late-fusion models' ``from_config``; the same as ``RobultModel(modalities, task, config, encoders)``."""
        cfg = config or RobultConfig()
        built = ModalityEncoders.from_config(list(modalities), EncoderConfig.of(cfg), encoders)
        return cls(modalities, task, cfg, built)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        # checkpoints written before the weights existed load as the plain mean
        state_dict.setdefault(prefix + "modality_weights", torch.ones(len(self.names)))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def after_fit(self, val: MultimodalDataset, task: TaskSpec, names: Sequence[str], primary_metric: str) -> None:
        """Choose the per-modality weights of the subset average on the validation split when the config asks for it
        (``subset_weights = validation``, METHOD.md 2.1); ``uniform`` keeps the plain mean."""
        if self.config.subset_weights == "validation":
            from robult.evaluation.subset_weights import fit_subset_weights

            fit_subset_weights(self, val, task, names, primary_metric)

    # ------------------------------------------------------------------ encoding
    def encode(self, batch: Batch) -> Tensor:
        """``H [B, M, d_h]`` from the present modalities only (absent rows are zero and must not be read)."""
        return self.encoders(batch)

    def project(self, hidden: Tensor) -> tuple[Tensor, Tensor]:
        """``(Z, U)`` from ``H``: the shared projector on every modality, each specific projector on its own."""
        return self.shared_projector(hidden), self.specific_projectors(hidden)

    def forward(self, batch: Batch, with_reconstruction: bool = True, validate: bool = True) -> RobultOutput:
        """Encode, project, fuse and predict.

        Args:
            batch: the batch.
            with_reconstruction: also compute ``r_m`` outputs for the reconstruction loss (training).
            validate: check the batch against the specs (names, shapes, presence, NaN in present inputs).
        """
        if validate:
            validate_batch(batch, self.modalities)
        hidden = self.encode(batch)
        b = hidden.shape[0]
        shared = self.shared_projector(hidden)
        recon = target = None
        if with_reconstruction:
            # U for prediction sees H; U for reconstruction sees sg(H) (unless rec_grad_to_encoder): one grouped
            # call on both
            target = hidden.detach()
            source = hidden if self.config.rec_grad_to_encoder else target
            both = self.specific_projectors(torch.cat([hidden, source], dim=0))
            specific, specific_rec = both[:b], both[b:]
            recon = self.reconstructors(torch.cat([specific_rec, shared.detach()], dim=-1))
        else:
            specific = self.specific_projectors(hidden)
        fused = self.fusion(hidden if self.config.fusion_grad_to_encoder else hidden.detach(), batch.present)
        logits = self.head(torch.cat([specific, shared], dim=-1))
        fused_logits = self.fused_head(fused)
        strong = None
        if self.training and self.config.strong_view > 0:
            strong = self.fused_head(self.strong_fusion(hidden, batch.present, self.config.strong_view))
        return RobultOutput(hidden, shared, specific, fused, logits, fused_logits, batch.present, recon, target, strong)

    def strong_fusion(self, hidden: Tensor, present: Tensor, rate: float) -> Tensor:
        """``S`` of a strongly perturbed copy: each present modality dropped with probability ``rate`` (at least one
        kept, :func:`robult.training.sampler.drop_modalities`) and dropout at ``rate`` on the kept ``H^m``."""
        from robult.training.sampler import drop_modalities

        kept = drop_modalities(present, rate)
        source = hidden if self.config.fusion_grad_to_encoder else hidden.detach()
        return self.fusion(nn.functional.dropout(source, rate, training=True), kept)

    # ------------------------------------------------------------------ inference
    def predict_subsets(
        self,
        output: RobultOutput,
        subsets: Sequence[Sequence[str]] | Tensor,
        aggregate: str | None = None,
        use_fused_when_complete: bool | None = None,
    ) -> SubsetPredictions:
        """Predictions for every subset in ``subsets`` from one forward pass (see :func:`aggregate_subsets`)."""
        aggregate = aggregate or self.config.aggregate
        if aggregate not in AGGREGATES:
            raise ValueError(f"unknown aggregate {aggregate!r}; use one of {AGGREGATES}")
        fused_complete = (
            self.config.use_fused_when_complete if use_fused_when_complete is None else use_fused_when_complete
        )
        keys, masks = subset_masks(subsets, self.names)
        features = head = None
        if aggregate == "feature_mean":
            features, head = torch.cat([output.specific, output.shared], dim=-1), self.head
        return aggregate_subsets(
            keys,
            masks,
            output.logits,
            output.present,
            features=features,
            head=head,
            fused_logits=output.fused_logits if fused_complete else None,
            weights=self.modality_weights,
        )
