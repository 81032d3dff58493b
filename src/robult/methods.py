"""Methods: a method is a model plus a loss, trained by the one trainer (``robult.training``).

Each entry builds ``(model, loss)`` from the modality specs, the task, and the ``model`` / ``loss`` option dicts
of a run config. Models return an output with ``present`` and per-modality ``logits`` and implement
``predict_subsets``; losses are ``loss(output, batch, epoch) -> result`` with ``result.total`` and
``result.log_dict(prefix)``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import Any

from torch import nn

from robult.batch import Batch
from robult.losses.robult import RobultLoss, RobultLossConfig
from robult.losses.supervised import SupervisedLoss, SupervisedLossOutput
from robult.specs import ModalitySpec, TaskSpec


@dataclass(frozen=True)
class Method:
    """A registered method.

    Attributes:
        name: registry name (``--methods``).
        description: one line for ``--help`` and reports.
        build: ``(modalities, task, model_options, loss_options, encoders) -> (model, loss)``.
        uses_unlabeled: whether training feeds unlabeled samples (``False``: labeled samples only).
        loss_defaults: loss options this method fixes (e.g. an ablation's switch), applied over the config.
    """

    name: str
    description: str
    build: Callable[..., tuple[nn.Module, nn.Module]]
    uses_unlabeled: bool = True
    loss_defaults: Mapping[str, Any] | None = None


def _dataclass_from(cls: type, options: Mapping[str, Any], what: str) -> Any:
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(options) - known)
    if unknown:
        raise ValueError(f"unknown {what} option {unknown[0]!r}; known: {sorted(known)}")
    return cls(**options)


class SupervisedOnlyLoss(nn.Module):
    """``L_sup`` on the per-modality predictions of labeled samples (plus the fused head when the model has one)."""

    def __init__(self, task: TaskSpec, regression_loss: str = "l1") -> None:
        super().__init__()
        self.supervised = SupervisedLoss(task, regression_loss)

    def forward(self, output: Any, batch: Batch, epoch: float = 0.0) -> SupervisedLossOutput:
        return self.supervised(output.logits, output.fused_logits, output.present, batch.target, batch.labeled)


def _build_robult(modalities, task, model_options, loss_options, encoders=None):
    from robult.models.robult import RobultConfig, RobultModel

    model_cfg = _dataclass_from(RobultConfig, model_options, "model")
    loss_cfg = _dataclass_from(RobultLossConfig, loss_options, "loss")
    return RobultModel(modalities, task, model_cfg, encoders), RobultLoss(task, len(modalities), loss_cfg)


def _build_late_fusion(modalities, task, model_options, loss_options, encoders=None):
    from robult.models.late_fusion import LateFusionModel
    from robult.models.robult import RobultConfig

    # the same encoder options as Robult; Robult-only options are accepted and ignored so that one config
    # serves every method (identical encoders)
    model_cfg = _dataclass_from(RobultConfig, model_options, "model")
    loss_cfg = _dataclass_from(RobultLossConfig, loss_options, "loss")
    return LateFusionModel(modalities, task, model_cfg, encoders), SupervisedOnlyLoss(task, loss_cfg.regression_loss)


METHODS: dict[str, Method] = {}


def register_method(method: Method) -> Method:
    if method.name in METHODS:
        raise ValueError(f"method {method.name!r} is registered twice")
    METHODS[method.name] = method
    return method


register_method(
    Method("robult", "Robult: shared/specific projectors, soft PU contrastive, latent reconstruction", _build_robult)
)
register_method(
    Method(
        "robult_labeled_only",
        "Robult trained on the labeled samples only (no unlabeled data)",
        _build_robult,
        uses_unlabeled=False,
    )
)
register_method(
    Method("robult_no_rec", "Robult without the reconstruction loss", _build_robult, loss_defaults={"lambda_rec": 0.0})
)
register_method(
    Method(
        "robult_supcon",
        "Robult with labeled positives only (no soft PU part)",
        _build_robult,
        loss_defaults={"soft_weights": False},
    )
)
for _kernel in ("rbf", "laplace", "cauchy", "one_sided"):
    register_method(
        Method(
            f"robult_{_kernel}",
            f"Robult with the {_kernel} soft PU weighting kernel",
            _build_robult,
            loss_defaults={"kernel": _kernel},
        )
    )
register_method(
    Method(
        "supervised",
        "late fusion of unimodal heads, labeled data only",
        _build_late_fusion,
        uses_unlabeled=False,
    )
)


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
    """Build ``(model, loss)`` of a registered method; the method's fixed loss options override the config."""
    method = get_method(name)
    loss = {**dict(loss_options or {}), **dict(method.loss_defaults or {})}
    return method.build(modalities, task, dict(model_options or {}), loss, dict(encoders or {}))
