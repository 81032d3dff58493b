"""The schema of ``dataset.yaml``: the task, the modality declarations and the whole file, read and validated.

The format itself is described in :mod:`robult.data.user` and ``docs/datasets.md``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from robult.data.registry import DEFAULT_METRICS
from robult.specs import TaskKind, TaskSpec
from robult.utils.paths import path_component_problem

__all__ = [
    "YAML_NAME",
    "MissingFileError",
    "ModalityConfig",
    "TaskConfig",
    "UserDatasetConfig",
    "format_validation_error",
    "read_config",
]

YAML_NAME = "dataset.yaml"


class MissingFileError(FileNotFoundError, ValueError):
    """A file named by ``dataset.yaml`` does not exist (both a ``FileNotFoundError`` and a ``ValueError``)."""


class TaskConfig(BaseModel):
    """``task:`` of ``dataset.yaml``."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["multiclass", "binary", "multilabel", "regression"]
    num_classes: int | None = Field(default=None, description="classes (multiclass) or labels (multilabel)")
    target_range: tuple[float, float] | None = None
    label_names: list[str] | None = None

    @model_validator(mode="after")
    def _check(self) -> TaskConfig:
        if self.kind in ("multiclass", "multilabel") and (self.num_classes is None or self.num_classes < 2):
            raise ValueError(f"num_classes (>= 2) is required for a {self.kind} task, got {self.num_classes}")
        if self.target_range is not None and self.kind != "regression":
            raise ValueError("target_range applies to regression tasks only")
        if self.target_range is not None and self.target_range[0] > self.target_range[1]:
            raise ValueError(f"target_range {list(self.target_range)} is empty")
        return self

    def to_spec(self) -> TaskSpec:
        return TaskSpec(
            self.kind,
            num_classes=self.num_classes or 0,
            target_range=self.target_range,
            label_names=tuple(self.label_names or ()),
        )


class ModalityConfig(BaseModel):
    """One entry of ``modalities:``."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)
    kind: Literal["vector", "sequence", "image", "tokens"]
    file: str
    lengths: str | None = None

    @model_validator(mode="after")
    def _check(self) -> ModalityConfig:
        sequential = self.kind in ("sequence", "tokens")
        if "+" in self.name:
            raise ValueError(f"modality name {self.name!r} must not contain '+'")
        if sequential and self.lengths is None:
            raise ValueError(f"modality {self.name!r}: a {self.kind} modality needs a lengths file")
        if not sequential and self.lengths is not None:
            raise ValueError(f"modality {self.name!r}: lengths apply to sequence and tokens modalities only")
        return self


class UserDatasetConfig(BaseModel):
    """The whole ``dataset.yaml``."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)
    description: str = ""
    task: TaskConfig
    primary_metric: str | None = None
    modalities: list[ModalityConfig] = Field(min_length=1)
    labels: str
    split: str | None = None
    present: str | None = None
    labeled: str | None = None
    standardize: bool = False

    @field_validator("name")
    @classmethod
    def _one_path_component(cls, v: str) -> str:
        # the name is a directory of the mask store (and may name runs): one plain path component
        problem = path_component_problem(v)
        if problem is not None:
            raise ValueError(f"{v!r}: the dataset's name is used as a directory name, but {problem}")
        return v

    @model_validator(mode="after")
    def _check(self) -> UserDatasetConfig:
        names = [m.name for m in self.modalities]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"modality name {dup[0]!r} appears more than once")
        return self

    @property
    def metric(self) -> str:
        return self.primary_metric or DEFAULT_METRICS[TaskKind(self.task.kind)]


def format_validation_error(err: ValidationError) -> str:
    parts = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "<top level>"
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown key (not part of the dataset.yaml format)"
        parts.append(f"{loc}: {msg}")
    return "; ".join(parts)


def read_config(path: str | Path) -> tuple[UserDatasetConfig, Path]:
    """Read and validate ``dataset.yaml``.

    Args:
        path: the dataset directory or the YAML file itself.

    Returns:
        The validated config and the YAML file's path.

    Raises:
        MissingFileError: no such file.
        ValueError: malformed YAML or keys / values outside the format (the message names the key).
    """
    path = Path(path).expanduser()
    yaml_path = path / YAML_NAME if path.is_dir() else path
    if not yaml_path.is_file():
        raise MissingFileError(f"{yaml_path}: dataset description not found (expected {YAML_NAME} in {path})")
    try:
        raw = yaml.safe_load(yaml_path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise ValueError(f"{yaml_path}: not valid YAML ({err})") from err
    if not isinstance(raw, dict):
        raise ValueError(f"{yaml_path}: expected a mapping at the top level, got {type(raw).__name__}")
    try:
        config = UserDatasetConfig.model_validate(raw)
    except ValidationError as err:
        raise ValueError(f"{yaml_path}: {format_validation_error(err)}") from None
    return config, yaml_path
