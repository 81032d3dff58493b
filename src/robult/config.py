"""Validated run configuration (pydantic), read from YAML with ``--set key=value`` overrides.

Every section forbids unknown keys; errors become one :class:`ConfigError` line naming the file and the key.
Each method owns its configuration (:class:`robult.methods.Method`: its model's config dataclass, its loss's, and
the ``train`` keys it reads); the ``model`` and ``loss`` sections are the unions of every registered method's
(:func:`robult.methods.section_fields`; a key shared by two configs has one type, default and meaning), so that one
file serves every method, and each method takes its own keys from them. :func:`describe_config` and
:func:`method_view` show one method's keys and values (``robult config show --method M``).
"""

from __future__ import annotations

import math
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, NamedTuple

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

from robult.methods import SECTIONS, Method, foreign_options, get_method, section_fields
from robult.utils.bounds import field_bounds
from robult.utils.options import field_meanings
from robult.utils.paths import path_component_problem

RATES_DEFAULT = [round(0.1 * i, 1) for i in range(10)]


class ConfigError(ValueError):
    """A configuration problem, as one line naming the file and key."""


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


def _meaning(cls: type, name: str) -> str | None:
    return field_meanings(cls).get(name)


def _union_section(section: Literal["model", "loss"], title: str) -> type[BaseModel]:
    """The ``model`` or ``loss`` section: the union of every method's config fields; a shared key's meaning is its
    first config's, plus another config's own wording when it has one."""
    spec: dict[str, Any] = {}
    for name, of in section_fields(section).items():
        texts: dict[str, str] = {}  # meaning -> the first config that words it so
        for owner in of.owners:
            text = _meaning(owner, name)
            if text:
                texts.setdefault(text, owner.__name__)
        parts = [text if i == 0 else f"[{owner}: {text}]" for i, (text, owner) in enumerate(texts.items())]
        meaning = " ".join(parts) or None
        spec[name] = (strict_numbers(of.type), Field(of.default, description=meaning, **field_bounds(of.field)))
    return create_model(title, __config__=SECTION_CONFIG, **spec)


ModelSection = _union_section("model", "ModelSection")
LossSection = _union_section("loss", "LossSection")


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


class ConfigKey(NamedTuple):
    """One key of the run config as ``robult config show`` lists it: dotted key, type, default (or the value a method
    uses) and meaning."""

    key: str
    type: str
    default: Any
    meaning: str


def type_name(hint: Any) -> str:
    """A readable type of a config key: ``int``, ``float | None``, ``tuple[int, ...]``, ``"gru" | "conv"``."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Annotated:
        return type_name(args[0])
    if origin is Literal:
        return " | ".join(f'"{a}"' if isinstance(a, str) else repr(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " | ".join(type_name(a) for a in args)
    if origin in (list, tuple, dict):
        inner = ", ".join("..." if a is Ellipsis else type_name(a) for a in args)
        return f"{origin.__name__}[{inner}]" if args else origin.__name__
    if hint is type(None):
        return "None"
    return getattr(hint, "__name__", str(hint))


def _field_type(info: Any) -> str:
    # pydantic moves the ``Strict``/bounds metadata of an ``Annotated`` field off its annotation: the bare type
    return type_name(info.annotation)


def method_keys(method: Method) -> dict[str, set[str]]:
    """Section -> the keys of ``model``, ``loss`` and ``train`` that ``method`` reads (the other sections and the
    top-level keys are read by every method)."""
    keys = {section: set(names) for section, names in method.keys().items()}
    keys["train"] = set(method.train_keys(list(TrainSection.model_fields)))
    return keys


def config_keys(method: str | None = None) -> list[ConfigKey]:
    """Every key of the run config in schema order, with its type, default and meaning (the fields' docstrings).

    With ``method``, only the keys that method reads: its model's and its loss's config keys, the ``train`` keys it
    reads, and the top-level, ``dataset`` and ``eval`` keys; ``train.method`` is that method, the options it fixes show
    their fixed value and the ``train`` options it falls back to show that value (both noted in the meaning); a model
    or loss key's meaning is the wording of the method's own config."""
    m = get_method(method) if method is not None else None
    reads = method_keys(m) if m is not None else {}
    fixed: dict[str, Any] = {}
    fallbacks: dict[str, Any] = {}
    own_meanings: dict[str, str] = {}
    if m is not None:
        for section in SECTIONS:
            fixed.update({f"{section}.{k}": v for k, v in m.fixed(section).items()})
            meanings = field_meanings(m.config_class(section))
            own_meanings.update({f"{section}.{k}": v for k, v in meanings.items()})
        fixed["train.method"] = m.name
        fallbacks = {f"train.{k}": v for k, v in (m.train_fallbacks or {}).items()}
    defaults = RunConfig().model_dump(mode="json")
    rows: list[ConfigKey] = []

    def walk(model: type[BaseModel], values: dict[str, Any], prefix: str) -> None:
        for key, info in model.model_fields.items():
            dotted = f"{prefix}{key}"
            annotation = info.annotation
            if isinstance(annotation, type) and issubclass(annotation, BaseModel):
                walk(annotation, values[key], f"{dotted}.")
                continue
            section = prefix.rstrip(".")
            if section in reads and key not in reads[section]:
                continue
            value = values[key]
            meaning = " ".join((own_meanings.get(dotted) or info.description or "").split())
            if dotted in fixed:
                value = fixed[dotted]
                if dotted != "train.method":
                    meaning = f"{meaning} [fixed by method {method!r}]"
            elif dotted in fallbacks and value is None:
                value = fallbacks[dotted]
                meaning = f"{meaning} [method {method!r} uses {value!r} when unset]"
            rows.append(ConfigKey(dotted, _field_type(info), value, meaning))

    walk(RunConfig, defaults, "")
    return rows


def describe_config(method: str | None = None) -> list[tuple[str, Any, str]]:
    """``(dotted key, default, meaning)`` of :func:`config_keys` (with ``method``: only that method's keys)."""
    return [(k.key, k.default, k.meaning) for k in config_keys(method)]


def format_config_keys(rows: list[ConfigKey]) -> str:
    """The listing of ``robult config show``: ``key  type  default`` on one line, the meaning indented below."""
    import json

    width = max(len(r.key) for r in rows)
    kind = max(len(r.type) for r in rows)
    lines = []
    for r in rows:
        lines.append(f"{r.key:<{width}}  {r.type:<{kind}}  {json.dumps(r.default)}")
        lines.append(f"{'':<{width}}    {r.meaning}")
    return "\n".join(lines)


def method_view(cfg: RunConfig, method: str | None = None) -> tuple[dict[str, Any], list[str]]:
    """The resolved config as ``method`` (default ``cfg.train.method``) runs it, and notes on what it changes.

    Returns:
        ``(values, notes)``: the nested values of the keys the method reads (:func:`method_keys`), with its fixed
        options applied and its ``train`` fallbacks filled in; and one line per key the config sets that the method
        ignores (a key of another method's config, at a non-default value), overrides (a fixed option) or fills in.
    """
    m = get_method(method or cfg.train.method)
    data = cfg.model_dump(mode="json")
    reads = method_keys(m)
    notes: list[str] = []
    for section in SECTIONS:
        for key, value in foreign_options(m, section, data[section]).items():
            notes.append(f"{section}.{key} = {value!r} is ignored: method {m.name!r} does not use it")
        for key, value in m.fixed(section).items():
            if data[section][key] != value:
                notes.append(
                    f"{section}.{key} = {data[section][key]!r} is overridden: method {m.name!r} fixes it to {value!r}"
                )
            data[section][key] = value
    for key, value in data["train"].items():  # a train key goes unread only for a labeled-only method
        if value is not None and key not in reads["train"]:
            notes.append(f"train.{key} = {value!r} is ignored: method {m.name!r} trains on labeled samples only")
    for key, value in (m.train_fallbacks or {}).items():
        if data["train"].get(key) is None:
            data["train"][key] = value
            notes.append(f"train.{key} is unset: method {m.name!r} uses {value!r}")
    for section, keys in reads.items():
        data[section] = {k: v for k, v in data[section].items() if k in keys}
    return data, notes


def method_config_yaml(cfg: RunConfig, method: str | None = None) -> str:
    """:func:`method_view` as YAML (``robult config show --method M --config F``), its notes as comments at the
    end, so the text still parses."""
    values, notes = method_view(cfg, method)
    text = yaml.safe_dump(values, sort_keys=False)
    if notes:
        text += "".join(f"# {line}\n" for line in notes)
    return text
