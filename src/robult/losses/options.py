"""Every loss's config dataclass and their union, the run config's ``loss`` section.

Each loss takes its own small config (:data:`LOSS_CONFIGS`); a method's builder (:mod:`robult.methods`) picks its
loss's keys out of the ``loss`` section. A key that two configs share must mean the same thing in both: same type,
same default and same bounds (checked by :func:`loss_fields` when the run config is built, so a mismatch fails
at import).
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any

from robult.losses.baselines import (
    InstanceContrastiveLossConfig,
    PseudoLabelLossConfig,
    SharedPrivateLossConfig,
    SupervisedLossConfig,
)
from robult.losses.evidential import TMCLossConfig
from robult.losses.fixmatch import FixMatchLossConfig
from robult.losses.robult import RobultLossConfig
from robult.utils.bounds import field_bounds

# the union's key order: Robult's keys first, then each baseline's new keys
LOSS_CONFIGS: tuple[type, ...] = (
    RobultLossConfig,
    SupervisedLossConfig,
    PseudoLabelLossConfig,
    InstanceContrastiveLossConfig,
    SharedPrivateLossConfig,
    TMCLossConfig,
    FixMatchLossConfig,
)


@dataclasses.dataclass(frozen=True)
class LossField:
    """One key of the union: its field (from the first config that declares it), type and the configs using it."""

    name: str
    type: Any
    field: dataclasses.Field
    owners: tuple[type, ...]

    @property
    def default(self) -> Any:
        return self.field.default


def loss_fields(configs: tuple[type, ...] = LOSS_CONFIGS) -> dict[str, LossField]:
    """The union of the fields of ``configs``, in declaration order.

    Raises:
        TypeError: a key declared by two configs with a different type, default or bounds (the name would mean two
            things in one run config).
    """
    out: dict[str, LossField] = {}
    for cls in configs:
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if f.default is dataclasses.MISSING:
                raise TypeError(f"{cls.__name__}.{f.name} has no default; every loss option needs one")
            seen = out.get(f.name)
            if seen is None:
                out[f.name] = LossField(f.name, hints[f.name], f, (cls,))
                continue
            first = seen.owners[0].__name__
            for what, a, b in (
                ("type", seen.type, hints[f.name]),
                ("default", seen.default, f.default),
                ("bounds", field_bounds(seen.field), field_bounds(f)),
            ):
                if a != b:
                    raise TypeError(
                        f"loss option {f.name!r} has {what} {a!r} in {first} but {b!r} in {cls.__name__}: a key "
                        f"shared by two loss configs must mean one thing (rename one of them)"
                    )
            out[f.name] = dataclasses.replace(seen, owners=(*seen.owners, cls))
    return out


def loss_defaults() -> dict[str, Any]:
    """Key -> default of every loss option (the ``loss`` section's defaults)."""
    return {name: f.default for name, f in loss_fields().items()}


__all__ = ["LOSS_CONFIGS", "LossField", "loss_defaults", "loss_fields"]
