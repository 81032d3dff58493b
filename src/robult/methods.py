"""Methods: a method is a model plus a loss, trained by the one trainer (``robult.training``).

Each registry entry (:class:`Method`) owns its configuration: the config dataclass of its model (``model_config``:
the ``model`` keys it reads) and of its loss (``loss_config``: the ``loss`` keys), and the ``train`` keys it reads
(:meth:`Method.keys`). The run config's ``model`` and ``loss`` sections are the unions of every method's
(:func:`section_fields`); :func:`build_method` hands a builder only its own keys, as its typed configs (a key of
another method's config set to a non-default value is ignored with a warning naming it). Models return an output with
``present`` and per-modality ``logits`` and implement ``predict_subsets``; losses are ``loss(output, batch, epoch) ->
result`` with ``result.total`` and ``result.log_dict(prefix)``.

Every method uses the same encoders (:class:`robult.modules.encoders.ModalityEncoders`, built by the builders from
the encoder keys every model config holds, :class:`robult.modules.encoders.EncoderConfig`) and the same one-pass
subset prediction (per-modality logits averaged by :func:`robult.models.subsets.aggregate_subsets`); the models take
their encoders and heads as arguments. The baselines are described in ``docs/baselines.md``.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Literal

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
from robult.losses.robult import RobultLoss, RobultLossConfig
from robult.models.late_fusion import LateFusionConfig
from robult.models.robult import RobultConfig
from robult.modules.encoders import EncoderConfig, ModalityEncoders
from robult.specs import ModalitySpec, TaskSpec
from robult.utils.options import OptionField, option_fields, option_names

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


def _robult_search_without(part: str) -> dict[str, list[Any]]:
    """Robult's search space less the keys containing ``part``: those an ablation fixes."""
    return {k: v for k, v in _ROBULT_SEARCH.items() if part not in k}


Section = Literal["model", "loss"]
SECTIONS: tuple[Section, ...] = ("model", "loss")  # the sections a method owns a config of
# ``train`` keys a method that trains on labeled samples only does not read
_UNLABELED_ONLY_TRAIN_KEYS = ("labeled_share",)


@dataclass(frozen=True)
class Method:
    """A registered method: the whole truth about it (no other table lists methods).

    Attributes:
        name: registry name (``--methods``).
        description: one line for ``--help`` and reports.
        build: ``(modalities, task, model_config, loss_config, encoders) -> (model, loss)``: the configs are instances
            of ``model_config`` and ``loss_config``, ``encoders`` the user's encoders by modality name.
        model_config: the config dataclass of the method's model: the ``model`` keys it reads.
        loss_config: the config dataclass of the method's loss: the ``loss`` keys it reads.
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
    model_config: type
    loss_config: type
    uses_unlabeled: bool = True
    fixed_loss: Mapping[str, Any] | None = None
    fixed_model: Mapping[str, Any] | None = None
    train_fallbacks: Mapping[str, Any] | None = None
    search: Mapping[str, list[Any]] = field(default_factory=dict)
    color: str = "tab:gray"

    def search_space(self) -> dict[str, list[Any]]:
        """:data:`COMMON_SEARCH` plus the method's own keys."""
        return {**COMMON_SEARCH, **self.search}

    def config_class(self, section: Section) -> type:
        """The config dataclass of the method's ``model`` or ``loss``."""
        if section not in SECTIONS:
            raise ValueError(f"a method owns a 'model' and a 'loss' config, not {section!r}")
        return self.model_config if section == "model" else self.loss_config

    def fixed(self, section: Section) -> dict[str, Any]:
        """The options of ``section`` that define the method (``fixed_model`` / ``fixed_loss``)."""
        return dict((self.fixed_model if section == "model" else self.fixed_loss) or {})

    def train_keys(self, all_keys: list[str]) -> list[str]:
        """The keys of ``all_keys`` (the ``train`` section's) that the method reads: all of them, but
        ``labeled_share`` for a method that trains on labeled samples only."""
        return [k for k in all_keys if self.uses_unlabeled or k not in _UNLABELED_ONLY_TRAIN_KEYS]

    def options(self, section: Section, options: Mapping[str, Any], warn: bool = True) -> dict[str, Any]:
        """The options of ``options`` (a whole ``model`` or ``loss`` section) that the method reads. A key of another
        method's config is dropped, with a warning when its value is not the default (:func:`foreign_options`); a key
        of no config is kept, so that the config class rejects it."""
        own = set(option_names(self.config_class(section)))
        union = section_fields(section)
        kept = {k: v for k, v in options.items() if k in own or k not in union}
        if warn:
            for key, value in foreign_options(self, section, options).items():
                warnings.warn(
                    f"{section}.{key} = {value!r} is ignored: method {self.name!r} does not use it (its {section}'s "
                    f"options: {', '.join(sorted(own))})",
                    stacklevel=4,  # build_method's caller
                )
        return kept

    def configs(
        self, model_options: Mapping[str, Any] | None = None, loss_options: Mapping[str, Any] | None = None
    ) -> tuple[Any, Any]:
        """The method's typed ``(model config, loss config)`` from whole ``model`` / ``loss`` sections (or any part
        of them): its own keys, with its fixed options applied over them (foreign keys warn, see :meth:`options`)."""
        out = []
        for section, given in zip(SECTIONS, (model_options, loss_options), strict=True):
            values = {**self.options(section, dict(given or {})), **self.fixed(section)}
            out.append(_dataclass_from(self.config_class(section), values, section))
        return out[0], out[1]

    def keys(self) -> dict[str, list[str]]:
        """Section -> the keys of ``model`` and ``loss`` the method reads, in declaration order."""
        return {section: option_names(self.config_class(section)) for section in SECTIONS}


def section_fields(section: Section) -> dict[str, OptionField]:
    """The run config's ``model`` or ``loss`` section: the union of the registered methods' configs, in
    registration order (Robult's first). A key two configs share has one type, default and bounds
    (:func:`robult.utils.options.option_fields`)."""
    configs = [m.config_class(section) for m in METHODS.values()]
    return option_fields(configs, section)


def section_defaults(section: Section) -> dict[str, Any]:
    """Key -> default of every option of the ``model`` or ``loss`` section."""
    return {name: f.default for name, f in section_fields(section).items()}


def foreign_options(method: Method, section: Section, options: Mapping[str, Any]) -> dict[str, Any]:
    """The options of ``options`` (a ``model`` or ``loss`` section) that another method's config declares and
    ``method`` does not read, set to a value other than the default: what a run of ``method`` ignores."""
    own = set(option_names(method.config_class(section)))
    defaults = section_defaults(section)
    return {k: v for k, v in options.items() if k not in own and k in defaults and not _same(v, defaults[k])}


def _same(value: Any, default: Any) -> bool:
    """A config value equals a dataclass default (a YAML list equals a tuple default)."""
    if isinstance(value, list | tuple) and isinstance(default, list | tuple):
        return list(value) == list(default)
    return bool(value == default)


def _dataclass_from(cls: type, options: Mapping[str, Any], what: str) -> Any:
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(options) - known)
    if unknown:
        raise ValueError(f"unknown {what} option {unknown[0]!r}; known: {sorted(known)}")
    return cls(**options)


def _encoders(modalities: list[ModalitySpec], config: Any, user: Mapping[str, nn.Module]) -> ModalityEncoders:
    """The encoders of every method: built from the encoder keys of its model config, the user's where given."""
    return ModalityEncoders.from_config(modalities, EncoderConfig.of(config), user)


def _build_robult(modalities, task, model_cfg: RobultConfig, loss_cfg: RobultLossConfig, encoders):
    from robult.models.robult import RobultModel

    model = RobultModel(modalities, task, model_cfg, _encoders(modalities, model_cfg, encoders))
    if loss_cfg.lambda_rec == 0:  # no reconstruction loss: frozen reconstructors (see _build_contrastive)
        model.reconstructors.requires_grad_(False)
    return model, RobultLoss(
        task, len(modalities), loss_cfg, [m.name for m in modalities], target_dim=model_cfg.shared_dim
    )


def _late_fusion(modalities, task, model_cfg: LateFusionConfig, encoders, cls: type | None = None, **parts: Any):
    """A late-fusion model (``cls``, default :class:`LateFusionModel`) built by its ``from_config``: the encoders,
    then one head per modality (the order in which their weights are drawn); ``parts`` go to its constructor."""
    from robult.models.late_fusion import LateFusionModel

    return (cls or LateFusionModel).from_config(modalities, task, model_cfg, encoders, **parts)


def _build_late_fusion(modalities, task, model_cfg: LateFusionConfig, loss_cfg: SupervisedLossConfig, encoders):
    # the same encoder options as Robult, so that comparisons isolate the training objective
    return _late_fusion(modalities, task, model_cfg, encoders), SupervisedOnlyLoss(task, loss_cfg)


def _warn_without_pseudo_labels(task: TaskSpec, method: str, consequence: str) -> None:
    """A method that learns from confident pseudo-labels warns that a regression task has none."""
    from robult.specs import TaskKind

    if task.kind == TaskKind.REGRESSION:
        warnings.warn(
            f"method {method!r} has no confident pseudo-labels for a regression task: {consequence}", stacklevel=3
        )


def _build_pseudolabel(modalities, task, model_cfg: LateFusionConfig, loss_cfg: PseudoLabelLossConfig, encoders):
    _warn_without_pseudo_labels(task, "pseudolabel", "its pseudo-label loss is 0 and it trains like 'moddrop' (with "
                                "unlabeled batches)")  # fmt: skip
    return _late_fusion(modalities, task, model_cfg, encoders), PseudoLabelLoss(task, loss_cfg)


def _build_contrastive(modalities, task, model_cfg: RobultConfig, loss_cfg: InstanceContrastiveLossConfig, encoders):
    from robult.models.robult import RobultModel

    model = RobultModel(modalities, task, model_cfg, _encoders(modalities, model_cfg, encoders))
    # no reconstruction loss: freeze the (training-only) reconstructors so that no parameter is left without a
    # gradient (DDP without find_unused_parameters) and the optimizer skips them
    model.reconstructors.requires_grad_(False)
    return model, InstanceContrastiveLoss(task, loss_cfg, [m.name for m in modalities])


def _build_shared_private(modalities, task, model_cfg: RobultConfig, loss_cfg: SharedPrivateLossConfig, encoders):
    from robult.models.robult import RobultModel

    model = RobultModel(modalities, task, model_cfg, _encoders(modalities, model_cfg, encoders))
    if loss_cfg.lambda_rec_mean == 0:  # no reconstruction term: frozen reconstructors (see _build_contrastive)
        model.reconstructors.requires_grad_(False)
    return model, SharedPrivateLoss(task, model.reconstructors, loss_cfg, names=[m.name for m in modalities])


def _build_tmc(modalities, task, model_cfg: LateFusionConfig, loss_cfg: TMCLossConfig, encoders):
    from robult.models.tmc import TMCModel

    # from_config refuses a regression task before any weight is drawn
    model = TMCModel.from_config(modalities, task, model_cfg, encoders, pseudo_view=loss_cfg.pseudo_view)
    return model, TMCLoss(task, loss_cfg)


def _build_fixmatch(modalities, task, model_cfg: LateFusionConfig, loss_cfg: FixMatchLossConfig, encoders):
    from robult.models.fixmatch import FixMatchModel, Perturbation

    _warn_without_pseudo_labels(task, "fixmatch", "its consistency loss is 0 and it trains like 'supervised' on "
                                "weakly perturbed inputs")  # fmt: skip
    weak = Perturbation(noise=loss_cfg.weak_noise)
    strong = Perturbation(loss_cfg.strong_noise, loss_cfg.strong_feature_dropout, loss_cfg.strong_modality_dropout)
    model = _late_fusion(modalities, task, model_cfg, encoders, FixMatchModel, weak=weak, strong=strong)
    return model, FixMatchLoss(task, loss_cfg)


# the (builder, model config, loss config) of each family of methods
_ROBULT = (_build_robult, RobultConfig, RobultLossConfig)
_LATE_FUSION = (_build_late_fusion, LateFusionConfig, SupervisedLossConfig)


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
        *_ROBULT,
        search=_ROBULT_SEARCH,
        color="tab:red",
    )
)
register_method(
    Method(
        "robult_v2",
        "Robult as METHOD.md v2.1: only true labels are labels in the contrastive parts "
        "(loss.pseudo_positive_confidence = 1; ablation)",
        *_ROBULT,
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
        *_ROBULT,
        fixed_loss={"contrastive_grad_to_fusion": True, "lambda_pseudo": 0.0},
        fixed_model={"subset_weights": "uniform"},
        search=_robult_search_without("pseudo"),
        color="tab:brown",
    )
)
register_method(
    Method(
        "robult_no_st",
        "Robult without the self-training term (loss.lambda_pseudo = 0; ablation)",
        *_ROBULT,
        fixed_loss={"lambda_pseudo": 0.0},
        search=_robult_search_without("pseudo"),
        color="tab:purple",
    )
)
register_method(
    Method(
        "robult_labeled_only",
        "Robult trained on the labeled samples only (no unlabeled data)",
        *_ROBULT,
        uses_unlabeled=False,
        search={"loss.temperature": [0.1, 0.2, 0.5, 1.0], "loss.lambda_lb": [0.3, 1.0]},
        color="tab:pink",
    )
)
register_method(
    Method(
        "robult_no_rec",
        "Robult without the reconstruction loss (ablation)",
        *_ROBULT,
        fixed_loss={"lambda_rec": 0.0},
        search=_robult_search_without("loss.lambda_rec"),
        color="tab:orange",
    )
)
register_method(
    Method(
        "robult_supcon",
        "Robult with labeled positives only: no soft PU candidates, the k = j term kept (ablation)",
        *_ROBULT,
        fixed_loss={"soft_weights": False},
        search=_robult_search_without("loss.sigma_min"),
        color="tab:olive",
    )
)
register_method(
    Method(
        "supervised",
        "late fusion of unimodal heads, labeled data only",
        *_LATE_FUSION,
        uses_unlabeled=False,
        color="tab:blue",
    )
)
register_method(
    Method(
        "moddrop",
        "late fusion trained with modality dropout, labeled data only",
        *_LATE_FUSION,
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
        LateFusionConfig,
        PseudoLabelLossConfig,
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
        RobultConfig,
        InstanceContrastiveLossConfig,
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
        RobultConfig,
        SharedPrivateLossConfig,
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
        LateFusionConfig,
        TMCLossConfig,
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
        LateFusionConfig,
        FixMatchLossConfig,
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
    """Build ``(model, loss)`` of a registered method from ``model`` / ``loss`` options (whole run-config sections
    or any part of them): the builder gets the method's typed configs (:meth:`Method.configs`: its own keys, its fixed
    options over them; a foreign key set to a non-default value warns) and the user's ``encoders``."""
    method = get_method(name)
    model_cfg, loss_cfg = method.configs(model_options, loss_options)
    return method.build(list(modalities), task, model_cfg, loss_cfg, dict(encoders or {}))
