"""Methods: a method is a model plus a loss, trained by the one trainer (``robult.training``).

Each entry builds ``(model, loss)`` from the modality specs, the task, and the ``model`` / ``loss`` option dicts
of a run config; the builder declares its loss's config dataclass (``loss_config``) and :func:`build_method` hands it
only that config's keys (a foreign key set to a non-default value is ignored with a warning naming it). Models
return an output with ``present`` and per-modality ``logits`` and implement ``predict_subsets``; losses are
``loss(output, batch, epoch) -> result`` with ``result.total`` and ``result.log_dict(prefix)``.

Every method uses the same encoders (:class:`robult.modules.encoders.ModalityEncoders` built from the ``model``
section) and the same one-pass subset prediction (per-modality logits averaged by
:func:`robult.models.robult.aggregate_subsets`). The baselines are described in ``docs/baselines.md``.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from torch import nn

from robult.losses.baselines import (
    InstanceContrastiveLoss,
    InstanceContrastiveLossConfig,
    PseudoLabelLoss,
    PseudoLabelLossConfig,
    SharedPrivateLoss,
    SharedPrivateLossConfig,
    SupervisedLossConfig,
    SupervisedOnlyLoss,
)
from robult.losses.evidential import TMCLoss, TMCLossConfig
from robult.losses.fixmatch import FixMatchLoss, FixMatchLossConfig
from robult.losses.options import loss_defaults
from robult.losses.robult import RobultLoss, RobultLossConfig
from robult.specs import ModalitySpec, TaskSpec

# searched for every method (dotted config keys -> candidate values)
COMMON_SEARCH: dict[str, list[Any]] = {
    "train.lr": [3e-4, 1e-3, 3e-3],
    "train.weight_decay": [1e-5, 1e-4, 1e-3],
    "model.dropout": [0.0, 0.1, 0.3],
}
_LABELED_SHARE = {"train.labeled_share": [0.1, 0.25, 0.5]}
# λ_rec multiplies a squared norm summed over d_h = 128 features by default: 0.01 is about the old per-feature mean
_ROBULT_SEARCH: dict[str, list[Any]] = {
    "loss.temperature": [0.1, 0.2, 0.5, 1.0],
    "loss.lambda_lb": [0.3, 1.0],
    "loss.lambda_ulb": [0.0, 0.3, 1.0],
    "loss.sigma_min": [0.05, 0.3],
    "loss.lambda_rec": [0.01, 0.1, 1.0],
    "loss.lambda_pseudo": [0.3, 1.0],
    "loss.pseudo_confidence": [0.8, 0.9, 0.95],
    **_LABELED_SHARE,
}
_DROPOUT_SEARCH = {"train.modality_dropout": [0.3, 0.5, 0.7]}


@dataclass(frozen=True)
class Method:
    """A registered method: the whole truth about it (no other table lists methods).

    Attributes:
        name: registry name (``--methods``).
        description: one line for ``--help`` and reports.
        build: ``(modalities, task, model_options, loss_options, encoders) -> (model, loss)``.
        uses_unlabeled: whether training feeds unlabeled samples (``False``: labeled samples only).
        fixed_loss: loss options that *define* the method (e.g. an ablation's switch): applied over the config, so
            a config value for the same key is overridden.
        fixed_model: ``model`` options that define the method, applied over the config like ``fixed_loss``.
        train_fallbacks: ``train`` options this method uses when the config leaves them unset (``None``), e.g.
            ``{"modality_dropout": 0.5}``; the config's value wins whenever it is set (an explicit ``0.0`` too),
            else this, else the trainer's fallback (``robult.training.run._train_option``).
        search: the method's own search space for ``robult tune`` (dotted config keys -> candidates), searched
            together with :data:`COMMON_SEARCH`.
        color: its colour in every plot (a matplotlib colour).
    """

    name: str
    description: str
    build: Callable[..., tuple[nn.Module, nn.Module]]
    uses_unlabeled: bool = True
    fixed_loss: Mapping[str, Any] | None = None
    fixed_model: Mapping[str, Any] | None = None
    train_fallbacks: Mapping[str, Any] | None = None
    search: Mapping[str, list[Any]] = field(default_factory=dict)
    color: str = "tab:gray"

    def search_space(self) -> dict[str, list[Any]]:
        """:data:`COMMON_SEARCH` plus the method's own keys."""
        return {**COMMON_SEARCH, **self.search}

    @property
    def loss_config(self) -> type | None:
        """The config dataclass of the method's loss (its builder's ``loss_config``; ``None``: not declared, the
        builder gets every option)."""
        return getattr(self.build, "loss_config", None)

    def loss_options(self, options: Mapping[str, Any]) -> dict[str, Any]:
        """The options of ``options`` (a ``loss`` section) that the method's loss uses. A key of another loss's
        config is dropped, with a warning when its value is not the default (config dumps list every key); a key of
        no loss config is kept, so that the builder rejects it."""
        cls = self.loss_config
        if cls is None:
            return dict(options)
        own = {f.name for f in fields(cls)}
        defaults = loss_defaults()
        kept: dict[str, Any] = {}
        for key, value in options.items():
            if key in own or key not in defaults:
                kept[key] = value
            elif value != defaults[key]:
                warnings.warn(
                    f"loss.{key} = {value!r} is ignored: method {self.name!r} does not use it (its loss's options: "
                    f"{', '.join(sorted(own))})",
                    stacklevel=3,
                )
        return kept


def _dataclass_from(cls: type, options: Mapping[str, Any], what: str) -> Any:
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(options) - known)
    if unknown:
        raise ValueError(f"unknown {what} option {unknown[0]!r}; known: {sorted(known)}")
    return cls(**options)


def _loss_config(cls: type) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Declare the config dataclass of a builder's loss (``build.loss_config``)."""

    def mark(build: Callable[..., Any]) -> Callable[..., Any]:
        build.loss_config = cls  # type: ignore[attr-defined]
        return build

    return mark


@_loss_config(RobultLossConfig)
def _build_robult(modalities, task, model_options, loss_options, encoders=None):
    from robult.models.robult import RobultConfig, RobultModel

    model_cfg = _dataclass_from(RobultConfig, model_options, "model")
    loss_cfg = _dataclass_from(RobultLossConfig, loss_options, "loss")
    model = RobultModel(modalities, task, model_cfg, encoders)
    if loss_cfg.lambda_rec == 0:  # no reconstruction loss: frozen reconstructors (see _build_contrastive)
        model.reconstructors.requires_grad_(False)
    return model, RobultLoss(
        task, len(modalities), loss_cfg, [m.name for m in modalities], target_dim=model_cfg.shared_dim
    )


@_loss_config(SupervisedLossConfig)
def _build_late_fusion(modalities, task, model_options, loss_options, encoders=None):
    from robult.models.late_fusion import LateFusionModel
    from robult.models.robult import RobultConfig

    # the same encoder options as Robult; Robult-only options are accepted and ignored so that one config
    # serves every method (identical encoders)
    model_cfg = _dataclass_from(RobultConfig, model_options, "model")
    loss_cfg = _dataclass_from(SupervisedLossConfig, loss_options, "loss")
    return LateFusionModel(modalities, task, model_cfg, encoders), SupervisedOnlyLoss(task, loss_cfg)


def _warn_without_pseudo_labels(task: TaskSpec, method: str, consequence: str) -> None:
    """A method that learns from confident pseudo-labels warns that a regression task has none."""
    from robult.specs import TaskKind

    if task.kind == TaskKind.REGRESSION:
        warnings.warn(
            f"method {method!r} has no confident pseudo-labels for a regression task: {consequence}", stacklevel=3
        )


@_loss_config(PseudoLabelLossConfig)
def _build_pseudolabel(modalities, task, model_options, loss_options, encoders=None):
    from robult.models.late_fusion import LateFusionModel
    from robult.models.robult import RobultConfig

    model_cfg = _dataclass_from(RobultConfig, model_options, "model")
    loss_cfg = _dataclass_from(PseudoLabelLossConfig, loss_options, "loss")
    _warn_without_pseudo_labels(task, "pseudolabel", "its pseudo-label loss is 0 and it trains like 'moddrop' (with "
                                "unlabeled batches)")  # fmt: skip
    model = LateFusionModel(modalities, task, model_cfg, encoders)
    return model, PseudoLabelLoss(task, loss_cfg)


@_loss_config(InstanceContrastiveLossConfig)
def _build_contrastive(modalities, task, model_options, loss_options, encoders=None):
    from robult.models.robult import RobultConfig, RobultModel

    model_cfg = _dataclass_from(RobultConfig, model_options, "model")
    loss_cfg = _dataclass_from(InstanceContrastiveLossConfig, loss_options, "loss")
    model = RobultModel(modalities, task, model_cfg, encoders)
    # no reconstruction loss: freeze the (training-only) reconstructors so that no parameter is left without a
    # gradient (DDP without find_unused_parameters) and the optimizer skips them
    model.reconstructors.requires_grad_(False)
    return model, InstanceContrastiveLoss(task, loss_cfg, [m.name for m in modalities])


@_loss_config(SharedPrivateLossConfig)
def _build_shared_private(modalities, task, model_options, loss_options, encoders=None):
    from robult.models.robult import RobultConfig, RobultModel

    model_cfg = _dataclass_from(RobultConfig, model_options, "model")
    loss_cfg = _dataclass_from(SharedPrivateLossConfig, loss_options, "loss")
    model = RobultModel(modalities, task, model_cfg, encoders)
    if loss_cfg.lambda_rec_mean == 0:  # no reconstruction term: frozen reconstructors (see _build_contrastive)
        model.reconstructors.requires_grad_(False)
    return model, SharedPrivateLoss(task, model.reconstructors, loss_cfg, names=[m.name for m in modalities])


@_loss_config(TMCLossConfig)
def _build_tmc(modalities, task, model_options, loss_options, encoders=None):
    from robult.models.robult import RobultConfig
    from robult.models.tmc import TMCModel

    model_cfg = _dataclass_from(RobultConfig, model_options, "model")
    loss_cfg = _dataclass_from(TMCLossConfig, loss_options, "loss")
    model = TMCModel(modalities, task, model_cfg, encoders, pseudo_view=loss_cfg.pseudo_view)
    return model, TMCLoss(task, loss_cfg)


@_loss_config(FixMatchLossConfig)
def _build_fixmatch(modalities, task, model_options, loss_options, encoders=None):
    from robult.models.fixmatch import FixMatchModel, Perturbation
    from robult.models.robult import RobultConfig

    model_cfg = _dataclass_from(RobultConfig, model_options, "model")
    loss_cfg = _dataclass_from(FixMatchLossConfig, loss_options, "loss")
    _warn_without_pseudo_labels(task, "fixmatch", "its consistency loss is 0 and it trains like 'supervised' on "
                                "weakly perturbed inputs")  # fmt: skip
    weak = Perturbation(noise=loss_cfg.weak_noise)
    strong = Perturbation(loss_cfg.strong_noise, loss_cfg.strong_feature_dropout, loss_cfg.strong_modality_dropout)
    model = FixMatchModel(modalities, task, model_cfg, encoders, weak=weak, strong=strong)
    return model, FixMatchLoss(task, loss_cfg)


# modality dropout rate of ``moddrop`` and ``pseudolabel`` (per present entry, at least one modality kept)
MODALITY_DROPOUT = 0.5

METHODS: dict[str, Method] = {}


def register_method(method: Method) -> Method:
    if method.name in METHODS:
        raise ValueError(f"method {method.name!r} is registered twice")
    METHODS[method.name] = method
    return method


register_method(
    Method(
        "robult",
        "Robult (METHOD.md v3, the one recipe): shared/specific projectors, soft PU contrastive towards the "
        "stop-gradient fused teacher sg(S) with its confident pseudo-labels as labels, latent reconstruction, "
        "self-training on the teacher's confident labels",
        _build_robult,
        search=_ROBULT_SEARCH,
        color="tab:red",
    )
)
register_method(
    Method(
        "robult_v2",
        "Robult as METHOD.md v2.1: only true labels are labels in the contrastive parts "
        "(loss.pseudo_positive_confidence = 1; ablation)",
        _build_robult,
        fixed_loss={"pseudo_positive_confidence": 1.0},
        search=_ROBULT_SEARCH,
        color="salmon",
    )
)
register_method(
    Method(
        "robult_paper",
        "Robult closer to the paper: live fused targets S, no self-training, plain subset mean; L_ulb over every "
        "anchor and the summed L_rec as in v2 (ablation)",
        _build_robult,
        fixed_loss={"contrastive_grad_to_fusion": True, "lambda_pseudo": 0.0},
        fixed_model={"subset_weights": "uniform"},
        search={k: v for k, v in _ROBULT_SEARCH.items() if "pseudo" not in k},
        color="tab:brown",
    )
)
register_method(
    Method(
        "robult_no_st",
        "Robult without the self-training term (loss.lambda_pseudo = 0; ablation)",
        _build_robult,
        fixed_loss={"lambda_pseudo": 0.0},
        search={k: v for k, v in _ROBULT_SEARCH.items() if "pseudo" not in k},
        color="tab:purple",
    )
)
register_method(
    Method(
        "robult_labeled_only",
        "Robult trained on the labeled samples only (no unlabeled data)",
        _build_robult,
        uses_unlabeled=False,
        search={"loss.temperature": [0.1, 0.2, 0.5, 1.0], "loss.lambda_lb": [0.3, 1.0]},
        color="tab:pink",
    )
)
register_method(
    Method(
        "robult_no_rec",
        "Robult without the reconstruction loss (ablation)",
        _build_robult,
        fixed_loss={"lambda_rec": 0.0},
        search={k: v for k, v in _ROBULT_SEARCH.items() if k != "loss.lambda_rec"},
        color="tab:orange",
    )
)
register_method(
    Method(
        "robult_supcon",
        "Robult with labeled positives only: no soft PU candidates, the k = j term kept (ablation)",
        _build_robult,
        fixed_loss={"soft_weights": False},
        search={k: v for k, v in _ROBULT_SEARCH.items() if k != "loss.sigma_min"},
        color="tab:olive",
    )
)
register_method(
    Method(
        "supervised",
        "late fusion of unimodal heads, labeled data only",
        _build_late_fusion,
        uses_unlabeled=False,
        color="tab:blue",
    )
)
register_method(
    Method(
        "moddrop",
        "late fusion trained with modality dropout, labeled data only",
        _build_late_fusion,
        uses_unlabeled=False,
        train_fallbacks={"modality_dropout": MODALITY_DROPOUT},
        search=_DROPOUT_SEARCH,
        color="tab:cyan",
    )
)
register_method(
    Method(
        "pseudolabel",
        "late fusion + modality dropout + confidence-thresholded pseudo-labels on unlabeled data (FixMatch-style)",
        _build_pseudolabel,
        train_fallbacks={"modality_dropout": MODALITY_DROPOUT},
        search={
            **_DROPOUT_SEARCH,
            "loss.pseudo_confidence": [0.8, 0.9, 0.95],
            "loss.lambda_pl": [0.3, 1.0],
            **_LABELED_SHARE,
        },
        color="tab:green",
    )
)
register_method(
    Method(
        "contrastive",
        "Robult's encoders and fusion with instance-level InfoNCE between Z^m and S (no label-aware positives, "
        "no reconstruction)",
        _build_contrastive,
        search={"loss.temperature": [0.1, 0.2, 0.5, 1.0], "loss.lambda_nce": [0.3, 1.0], **_LABELED_SHARE},
        fixed_model={"subset_weights": "uniform"},  # its published definition: the plain mean
        color="tab:gray",
    )
)
register_method(
    Method(
        "shared_private",
        "MISA-style shared/private spaces: CMD similarity, soft orthogonality, reconstruction with full gradient",
        _build_shared_private,
        # the effective weights the old (λ_lb, λ_rec) grid gave (λ_diff was 0.3 λ_rec), now searched separately
        search={
            "loss.lambda_sim": [0.3, 1.0],
            "loss.lambda_rec_mean": [0.3, 1.0],
            "loss.lambda_diff": [0.09, 0.3],
            **_LABELED_SHARE,
        },
        fixed_model={"subset_weights": "uniform"},  # its published definition: the plain mean
        color="black",
    )
)

register_method(
    Method(
        "tmc",
        "Trusted multi-view classification (Han et al. 2021): evidential heads per modality, opinions combined with "
        "the reduced Dempster-Shafer rule; ETMC's pseudo-view with loss.pseudo_view; labeled data only",
        _build_tmc,
        uses_unlabeled=False,
        search={
            "loss.annealing_epochs": [10.0, 50.0],
            "loss.pseudo_view": [False, True],
            "train.modality_dropout": [0.0, 0.5],
        },
        color="goldenrod",
    )
)
register_method(
    Method(
        "fixmatch",
        "FixMatch (Sohn et al. 2020) on late fusion: pseudo-labels from a weakly perturbed sample train its strongly "
        "perturbed copy (modality dropout, feature dropout, noise)",
        _build_fixmatch,
        search={
            "loss.pseudo_confidence": [0.8, 0.9, 0.95],
            "loss.lambda_consistency": [0.3, 1.0],
            "loss.strong_modality_dropout": [0.3, 0.5, 0.7],
            **_LABELED_SHARE,
        },
        color="teal",
    )
)


def method_color(name: str) -> str:
    """A method's plot colour (its registry entry's); an unregistered name (an old results file) gets grey."""
    return METHODS[name].color if name in METHODS else "tab:gray"


def get_method(name: str) -> Method:
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; available: {sorted(METHODS)}")
    return METHODS[name]


def build_method(
    name: str,
    modalities: list[ModalitySpec],
    task: TaskSpec,
    model_options: Mapping[str, Any] | None = None,
    loss_options: Mapping[str, Any] | None = None,
    encoders: Mapping[str, nn.Module] | None = None,
) -> tuple[nn.Module, nn.Module]:
    """Build ``(model, loss)`` of a registered method; the method's fixed loss options override the config, and the
    builder gets only its loss's options (:meth:`Method.loss_options`)."""
    method = get_method(name)
    loss = method.loss_options({**dict(loss_options or {}), **dict(method.fixed_loss or {})})
    model = {**dict(model_options or {}), **dict(method.fixed_model or {})}
    return method.build(modalities, task, model, loss, dict(encoders or {}))
