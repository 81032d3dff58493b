"""Validated run configuration (pydantic), read from YAML with ``--set key=value`` overrides.

Every section forbids unknown keys; errors become one :class:`ConfigError` line naming the file and the key.
The ``model`` section mirrors :class:`robult.models.RobultConfig` field by field (same names, types and defaults);
the ``loss`` section is the union of every loss's config (:data:`robult.losses.options.LOSS_CONFIGS`; a key shared by
two of them has one type, default and meaning), and each method takes its own loss's keys from it.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictFloat,
    StrictInt,
    ValidationError,
    create_model,
    field_validator,
)
from pydantic_core import PydanticCustomError

from robult.losses.options import loss_fields
from robult.models.robult import RobultConfig
from robult.utils.bounds import field_bounds
from robult.utils.paths import path_component_problem

RATES_DEFAULT = [round(0.1 * i, 1) for i in range(10)]


class ConfigError(ValueError):
    """A configuration problem, as one line naming the file and key."""


def docstring_attributes(cls: type) -> dict[str, str]:
    """Field name -> meaning, from the ``Attributes:`` block of a class docstring (Google style; an entry may name
    several fields, ``a, b, c: meaning``, and continue on indented lines)."""
    doc = inspect.getdoc(cls) or ""
    out: dict[str, str] = {}
    lines = doc.split("\n")
    try:
        start = next(i for i, line in enumerate(lines) if line.strip() == "Attributes:")
    except StopIteration:
        return out
    keys: list[str] = []
    indent: int | None = None
    for line in lines[start + 1 :]:
        if not line.strip():
            if keys:
                continue
            break
        width = len(line) - len(line.lstrip())
        if indent is None:
            indent = width
        if width < indent:
            break
        text = line.strip()
        head, sep, rest = text.partition(": ")
        names = [h.strip() for h in head.split(",")]
        if width == indent and sep and all(n.isidentifier() for n in names):
            keys = names
            for k in keys:
                out[k] = rest.strip()
        elif keys:
            for k in keys:
                out[k] = f"{out[k]} {text}".strip()
    return out


# every number of the run config is finite (no NaN / Inf, e.g. ``--set model.dropout=.nan``), and an integer or a
# number is never a bool (``train.max_epochs=true`` is not 1): pydantic's allow_inf_nan=False and strict int/float
SECTION_CONFIG = ConfigDict(extra="forbid", allow_inf_nan=False)
SEED_MAX = 2**32 - 1  # numpy's and Lightning's seed range is [0, 2**32 - 1]


def strict_numbers(hint: Any) -> Any:
    """``hint`` with ``int`` made ``StrictInt`` and ``float`` made ``StrictFloat``, inside ``X | None``, unions,
    ``tuple[...]`` and ``list[...]`` too (a ``float`` still accepts an integer)."""
    if hint is int:
        return StrictInt
    if hint is float:
        return StrictFloat
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (tuple, list) and args:
        return origin[tuple(strict_numbers(a) if a is not Ellipsis else a for a in args)]
    if origin in (typing.Union, types.UnionType) and args:
        out = strict_numbers(args[0])
        for a in args[1:]:
            out = out | strict_numbers(a)
        return out
    return hint


def _section_from_dataclass(cls: type, name: str) -> type[BaseModel]:
    hints = typing.get_type_hints(cls)
    meanings = docstring_attributes(cls)
    spec: dict[str, Any] = {
        f.name: (strict_numbers(hints[f.name]), Field(f.default, description=meanings.get(f.name), **field_bounds(f)))
        for f in dataclasses.fields(cls)
    }
    return create_model(name, __config__=SECTION_CONFIG, **spec)


def _loss_section() -> type[BaseModel]:
    """The union of every loss config's fields; a shared key's meaning is its first config's, plus another config's
    own wording when it has one."""
    spec: dict[str, Any] = {}
    for name, lf in loss_fields().items():
        texts: dict[str, str] = {}  # meaning -> the first config that words it so
        for owner in lf.owners:
            text = docstring_attributes(owner).get(name)
            if text:
                texts.setdefault(text, owner.__name__)
        parts = [text if i == 0 else f"[{owner}: {text}]" for i, (text, owner) in enumerate(texts.items())]
        meaning = " ".join(parts) or None
        spec[name] = (strict_numbers(lf.type), Field(lf.default, description=meaning, **field_bounds(lf.field)))
    return create_model("LossSection", __config__=SECTION_CONFIG, **spec)


ModelSection = _section_from_dataclass(RobultConfig, "ModelSection")
LossSection = _loss_section()


class _Strict(BaseModel):
    # the docstring under each field is its meaning (``robult config show`` prints it)
    model_config = ConfigDict(**SECTION_CONFIG, use_attribute_docstrings=True)


class DatasetSection(_Strict):
    """Which data: a registry name (``robult datasets``), its directory and loader options."""

    name: str = "synthetic"
    """Dataset name (``robult datasets`` lists them; ``user`` reads your own directory: ``options.path``)."""
    data_dir: str | None = None
    """Root data directory (default: ``$ROBULT_DATA_DIR``, else ``../shared/data``)."""
    val_fraction: StrictFloat = Field(0.1, gt=0.0, lt=1.0)
    """Share of the training split held out for validation (model selection, early stopping)."""
    options: dict[str, Any] = Field(default_factory=dict)
    """Loader options, e.g. ``path`` (``user``), ``n_samples`` or ``task`` (``synthetic``)."""

    @field_validator("options")
    @classmethod
    def _finite_options(cls, v: dict[str, Any]) -> dict[str, Any]:
        def walk(value: Any, key: str) -> None:
            if isinstance(value, float) and not math.isfinite(value):
                raise PydanticCustomError("finite_number", f"option {key!r} must be a finite number")
            if isinstance(value, dict):
                for k, item in value.items():
                    walk(item, f"{key}.{k}")
            elif isinstance(value, list):
                for i, item in enumerate(value):
                    walk(item, f"{key}[{i}]")

        for k, value in v.items():
            walk(value, str(k))
        return v


class TrainSection(_Strict):
    """Training options."""

    method: str = "robult"
    """The method (``robult config show`` lists them; ``docs/baselines.md``)."""
    label_ratio: StrictFloat = Field(0.05, gt=0.0, le=1.0)
    """Share of the training split whose labels training may use (a seeded, stratified subset). Applies to a
    dataset whose training rows are all labeled; one that marks rows unlabeled (the user format's ``labeled:``
    file) trains on its labeled rows as given, unless ``train.given_labels: subsample``."""
    given_labels: Literal["use", "subsample"] = "use"
    """When the dataset marks some training rows unlabeled: ``use`` trains on exactly its labeled rows (ignoring
    ``label_ratio``); ``subsample`` keeps a seeded ``label_ratio`` share of them, stratified by class (at least one
    label per class)."""
    labeled_share: StrictFloat | None = Field(None, gt=0.0, le=1.0)
    """Share of labeled samples in every batch (default ``max(label_ratio, 0.25)``; ignored when the method trains
    on labeled data only)."""
    batch_size: StrictInt = Field(128, ge=2)
    """Samples per training batch."""
    max_epochs: StrictInt = Field(60, ge=1)
    """Upper bound on training epochs."""
    patience: StrictInt = Field(15, ge=0)
    """Epochs without improvement of the selection score before early stopping (0: no early stopping)."""
    lr: StrictFloat = Field(1e-3, gt=0.0)
    """Learning rate (AdamW)."""
    weight_decay: StrictFloat = Field(1e-4, ge=0.0)
    """Weight decay (AdamW)."""
    seed: StrictInt = Field(0, ge=0, le=SEED_MAX)
    """Seed of the weights, the batches, the labeled subset and the dataset's split."""
    modality_dropout: StrictFloat | None = Field(None, ge=0.0, lt=1.0)
    """Training-time modality dropout rate (``None``: the method's default, 0 for most methods)."""
    use_unlabeled: bool | None = None
    """Feed unlabeled samples to training (``None``: the method decides; ``true`` is refused for a method that trains
    on labeled samples only)."""
    accelerator: str = "auto"
    """Lightning accelerator: ``auto`` (a GPU when one is present, else the CPU), ``cpu``, ``gpu``, ..."""
    devices: Annotated[StrictInt, Field(ge=1)] | Literal[-1] | str = 1
    """Number of devices (or a Lightning device string); more than one trains with DDP."""
    find_unused_parameters: bool | None = None
    """DDP only: let DDP look for parameters without a gradient after every backward pass (slower). ``None``: only
    when a training batch can lack a modality entirely (training samples with absent modalities, or modality
    dropout), which leaves that encoder without a gradient; every built-in method uses all its trainable
    parameters otherwise. Set ``true`` for a user encoder with parameters its forward pass does not use."""
    ddp_timeout: StrictFloat = Field(300.0, gt=0.0, le=86400.0)
    """Several processes only: seconds a process waits for the others, at start (while they load the data) and in
    every collective, before the run ends with one line naming the process and the epoch and step where it waited
    (a process that died or hangs; ``docs/distributed.md``). Raise it when the data take longer to load."""
    precision: str = "32-true"
    """Lightning precision, e.g. ``32-true`` or ``bf16-mixed``."""
    num_workers: StrictInt = Field(0, ge=0)
    """DataLoader worker processes."""
    num_threads: StrictInt | None = Field(None, ge=1)
    """CPU threads torch uses in this process (``torch.set_num_threads``). ``None``: chosen when the run starts
    (``robult.utils.threads.choose_threads``): 1 for a step under ~5e8 multiply-adds (parameters x batch size, the
    default models) or on a busy machine, else one per idle core; ``OMP_NUM_THREADS``, when set, is kept. A run with
    more threads than idle cores warns that it is likely oversubscribed (``docs/performance.md``)."""
    logger: Literal["csv", "tensorboard"] = "csv"
    """Per-epoch metrics log: ``csv`` (``<run>/logs/metrics.csv``) or ``tensorboard`` (``<run>/logs/``, needs
    ``pip install 'robult[tensorboard]'``)."""
    progress: bool = True
    """Show progress bars."""


class EvalSection(_Strict):
    """Test-time missingness protocols (see ``docs/protocols.md``)."""

    protocols: list[Literal["all-subsets", "random-rate"]] = Field(
        default_factory=lambda: ["all-subsets", "random-rate"]
    )
    """Test protocols: every modality subset, and/or per-sample random missingness."""
    rates: list[StrictFloat] = Field(default_factory=lambda: list(RATES_DEFAULT))
    """Missing rates of the random-rate protocol, each in [0, 1)."""
    mask_seed: StrictInt = Field(0, ge=0, le=SEED_MAX)
    """Seed of the random-rate masks (saved once, shared by every method)."""
    batch_size: StrictInt = Field(1024, ge=1)
    """Samples per evaluation forward pass."""
    masks_dir: str | None = None
    """Where the saved masks live (default ``<out_dir>/masks``)."""

    @field_validator("rates")
    @classmethod
    def _rates_in_range(cls, v: list[float]) -> list[float]:
        bad = [r for r in v if not 0.0 <= r < 1.0]
        if bad:
            raise ValueError(f"rates must lie in [0, 1), got {bad[0]}")
        return v


class RunConfig(_Strict):
    """A whole run: ``robult train --config FILE``."""

    name: str | None = None
    """Run name (default ``<dataset>-<method>-r<label_ratio>-s<seed>``)."""
    out_dir: str = "runs"
    """Directory holding the run directories."""
    dataset: DatasetSection = Field(default_factory=DatasetSection)
    model: ModelSection = Field(default_factory=ModelSection)  # type: ignore[valid-type]
    loss: LossSection = Field(default_factory=LossSection)  # type: ignore[valid-type]
    train: TrainSection = Field(default_factory=TrainSection)
    eval: EvalSection = Field(default_factory=EvalSection)

    @field_validator("name")
    @classmethod
    def _one_path_component(cls, v: str | None) -> str | None:
        if not v:  # empty: the default name
            return None
        problem = path_component_problem(v)
        if problem is not None:
            raise PydanticCustomError("run_name", f"a run name is one directory name inside out_dir: {problem}")
        return v

    def run_name(self) -> str:
        """The run directory's name inside ``out_dir``: ``name``, else ``<dataset>-<method>-r<ratio>-s<seed>``;
        a :class:`ConfigError` naming the key unless it is one plain path component (a config built in code, or a
        dataset's own name, skips the field check)."""
        t = self.train
        name = self.name or f"{self.dataset.name}-{t.method}-r{t.label_ratio:g}-s{t.seed}"
        problem = path_component_problem(name)
        if problem is not None:
            key = "name" if self.name else "dataset.name"
            raise ConfigError(
                f"key {key!r}: run name {name!r} cannot be a run directory inside out_dir: {problem} (set "
                "name=<one plain name>, e.g. name=my-run)"
            )
        return name


_UNION_TAGS = {"int", "str", "float", "bool", "none", "list", "dict", "tuple"}


def _format_error(err: ValidationError, source: str) -> str:
    first = err.errors()[0]
    # a union's errors carry the member's tag after the key (``train.devices.constrained-int``): drop it
    loc = [
        p for p in first["loc"] if not (isinstance(p, str) and (p in _UNION_TAGS or not p.replace("_", "a").isalnum()))
    ]
    key = ".".join(str(p) for p in loc) or "<root>"
    kind = first["type"]
    if kind == "extra_forbidden":
        return f"{source}: unknown key '{key}'"
    if kind == "missing":
        return f"{source}: missing key '{key}'"
    got = first.get("input")
    got_s = "" if isinstance(got, dict) else f" (got {got!r})"
    return f"{source}: key '{key}': {first['msg']}{got_s}"


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"train.lr=0.01"`` -> ``(["train", "lr"], 0.01)``; the value is parsed as YAML."""
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected KEY=VALUE, e.g. train.lr=0.001")
    key, raw = text.split("=", 1)
    parts = [p for p in key.strip().split(".") if p]
    if not parts:
        raise ConfigError(f"--set {text!r}: empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as err:
        raise ConfigError(f"--set {text!r}: value is not valid YAML ({err})") from err
    return parts, value


def _set_dotted(data: dict[str, Any], parts: list[str], value: Any, where: str) -> None:
    """``data[p0][p1]...[pn] = value``, creating sections as needed; a non-mapping on the way is an error."""
    node = data
    for p in parts[:-1]:
        child = node.get(p)
        if child is None:
            child = node[p] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"{where}: '{p}' is not a section")
        node = child
    node[parts[-1]] = value


def apply_overrides(data: dict[str, Any], overrides: list[str] | None) -> dict[str, Any]:
    """Set dotted keys in a nested dict (creating sections as needed) from ``--set KEY=VALUE`` texts; an error
    names the ``--set`` at fault (``--set train=3`` itself, not a later ``--set train.lr=...``)."""
    sections = {
        k
        for k, f in RunConfig.model_fields.items()
        if isinstance(f.annotation, type) and issubclass(f.annotation, BaseModel)
    }
    set_by: dict[tuple[str, ...], str] = {}
    for text in overrides or []:
        parts, value = parse_override(text)
        if len(parts) == 1 and parts[0] in sections and not isinstance(value, dict):
            raise ConfigError(
                f"--set {text!r}: '{parts[0]}' is a section, not a value; set one of its keys, e.g. "
                f"--set {parts[0]}.KEY=VALUE (`robult config show` lists them)"
            )
        try:
            _set_dotted(data, parts, value, f"--set {text!r}")
        except ConfigError:
            earlier = [i for i in range(1, len(parts)) if tuple(parts[:i]) in set_by]
            if not earlier:
                raise
            key = ".".join(parts[: earlier[-1]])
            raise ConfigError(
                f"--set {set_by[tuple(parts[: earlier[-1]])]!r}: sets '{key}' to a value, so --set {text!r} cannot "
                f"set a key inside it"
            ) from None
        set_by[tuple(parts)] = text
    return data


def apply_settings(data: dict[str, Any], settings: Mapping[str, Any], where: str) -> dict[str, Any]:
    """Set ``section.key`` (or deeper) entries given as a mapping, e.g. a tuned config's ``overrides``; the
    first part must name an existing section of ``data``. ``where`` names the source in errors."""
    for dotted, value in settings.items():
        parts = dotted.split(".")
        if len(parts) < 2 or not all(parts) or not isinstance(data.get(parts[0]), dict):
            raise ConfigError(f"{where}: {dotted!r} is not a `section.key` of the run config")
        _set_dotted(data, parts, value, where)
    return data


def read_yaml(path: Path) -> Any:
    """The parsed YAML of ``path``; a syntax error is a :class:`ConfigError` naming the file."""
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({err})") from err


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> RunConfig:
    """Read a YAML config (or start from defaults when ``path`` is None), apply overrides, validate."""
    source = "config" if path is None else str(path)
    data: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"{p}: config file not found")
        loaded = read_yaml(p)
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"{p}: the top level must be a mapping of sections, got {type(loaded).__name__}")
        data = loaded or {}
    data = apply_overrides(data, overrides)
    return validate_config(data, source)


def validate_config(data: dict[str, Any], source: str = "config") -> RunConfig:
    try:
        cfg = RunConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_format_error(err, source)) from None
    from robult.methods import METHODS

    if cfg.train.method not in METHODS:
        raise ConfigError(
            f"{source}: key 'train.method': unknown method {cfg.train.method!r}; available: {sorted(METHODS)}"
        )
    check_use_unlabeled(cfg, source)
    return cfg


def check_use_unlabeled(cfg: RunConfig, source: str | None = None) -> None:
    """``train.use_unlabeled: true`` contradicts a method that trains on labeled samples only: a
    :class:`ConfigError` (``source`` names the config it came from)."""
    from robult.methods import METHODS

    method = METHODS[cfg.train.method]
    if cfg.train.use_unlabeled and not method.uses_unlabeled:
        key = "train.use_unlabeled" if source is None else f"{source}: key 'train.use_unlabeled'"
        raise ConfigError(
            f"{key}: true contradicts method {method.name!r}, which trains on labeled samples only (leave it unset, "
            "or choose a method that uses unlabeled data)"
        )


def config_to_yaml(cfg: RunConfig) -> str:
    """The resolved config as YAML (written next to every run)."""
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)


def describe_config(method: str | None = None) -> list[tuple[str, Any, str]]:
    """``(dotted key, default, meaning)`` for every key of the run config, in schema order; the meanings are the
    fields' docstrings. With ``method``, ``train.method`` is that method, the loss options the method fixes show
    their fixed value, the ``train`` options it falls back to show that value and the loss options its loss does not
    use are marked (all noted in the meaning)."""
    from robult.methods import get_method

    fixed: dict[str, Any] = {}
    fallbacks: dict[str, Any] = {}
    unused: set[str] = set()
    if method is not None:
        m = get_method(method)
        if m.loss_config is not None:
            own = {f.name for f in dataclasses.fields(m.loss_config)}
            unused = {f"loss.{k}" for k in LossSection.model_fields if k not in own}
        fixed = {f"loss.{k}": v for k, v in (m.fixed_loss or {}).items()}
        fixed["train.method"] = method
        fallbacks = {f"train.{k}": v for k, v in (m.train_fallbacks or {}).items()}
    defaults = RunConfig().model_dump(mode="json")
    rows: list[tuple[str, Any, str]] = []

    def walk(model: type[BaseModel], values: dict[str, Any], prefix: str) -> None:
        for key, info in model.model_fields.items():
            dotted = f"{prefix}{key}"
            annotation = info.annotation
            if isinstance(annotation, type) and issubclass(annotation, BaseModel):
                walk(annotation, values[key], f"{dotted}.")
                continue
            value = values[key]
            meaning = " ".join((info.description or "").split())
            if dotted in fixed:
                value = fixed[dotted]
                if dotted != "train.method":
                    meaning = f"{meaning} [fixed by method {method!r}]"
            elif dotted in fallbacks and value is None:
                value = fallbacks[dotted]
                meaning = f"{meaning} [method {method!r} uses {value!r} when unset]"
            elif dotted in unused:
                meaning = f"{meaning} [not used by method {method!r}]"
            rows.append((dotted, value, meaning))

    walk(RunConfig, defaults, "")
    return rows
