"""Seeded synthetic multimodal benchmark built from latent factors of known roles.

Each sample has independent standard-normal latent factors:

- **redundant** ``r`` (``redundant_dim``): present in *every* modality;
- **unique** ``u_m`` (``unique_dim``): present in modality ``m`` only;
- **nuisance** ``n_m`` (``nuisance_dim``): present in modality ``m`` only and never read by the label: variation
  a model must learn to ignore (few labels make that hard; agreement across modalities discards it);
- **synergistic** ``s_m`` (``synergy_dim``) for the modalities in ``synergy_modalities``: each lives in one
  modality, but the label reads only their elementwise product ``Π_m s_m``, which is uncorrelated with every single
  factor: it is predictable only from the modalities *jointly*.

Modality ``m`` is a fixed random non-linear mix of its factors plus noise:
``x^m = W2_m · tanh(W1_m · [r; u_m; n_m; s_m]) + noise · ε``.

The label draws on a configurable mix (:class:`LabelMix`): each component (redundant, each unique factor, the
synergy term) is mapped by a fixed random linear map to ``K`` scores, standardised and weighted; the task kind turns
the summed score into a label (argmax: multiclass; sign: binary; per-label sign: multilabel; ``3·tanh``:
regression in [-3, 3]).

**Which modality subsets can predict the label** (for a mix with weights ``α``):

- if ``α_redundant > 0``, every non-empty subset predicts the redundant part;
- the unique part of modality ``m`` (``α_unique[m] > 0``) is predictable only from subsets containing ``m``;
- the synergy part (``α_synergy > 0``) only from subsets containing *all* of ``synergy_modalities``.

:func:`predictive_subsets` lists, per subset, which components it can see. The default mix (used by the
embedded default dataset of ``robult benchmark``) uses all three roles, so every single modality is above chance,
each pair is better, and only all three together see everything.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch

from robult.data.dataset import MultimodalDataset
from robult.data.registry import DatasetBundle, LoadOptions, default_metric, register_dataset
from robult.data.splits import strata, train_val_test_split
from robult.specs import ModalitySpec, TaskKind, TaskSpec, all_subsets, subset_key
from robult.utils.bounds import BOUNDS, field_bounds


@dataclass(frozen=True)
class LabelMix:
    """Weights of the label's components.

    Attributes:
        redundant: weight of the redundant factor.
        unique: weight of each modality's unique factor (one per modality; a scalar applies to all).
        synergy: weight of the synergistic product term.
    """

    redundant: float = 1.0
    unique: tuple[float, ...] | float = 0.6
    synergy: float = 0.6

    def unique_weights(self, num_modalities: int) -> tuple[float, ...]:
        if isinstance(self.unique, int | float):
            return (float(self.unique),) * num_modalities
        if len(self.unique) != num_modalities:
            raise ValueError(f"LabelMix.unique has {len(self.unique)} weights for {num_modalities} modalities")
        return tuple(float(u) for u in self.unique)


@dataclass(frozen=True)
class SyntheticConfig:
    """Generator options (defaults: the embedded showcase dataset).

    Attributes:
        n_samples: number of samples.
        modality_dims: input width per modality (its length is M).
        task: ``multiclass``, ``binary``, ``multilabel`` or ``regression``.
        num_classes: classes (multiclass) or labels (multilabel).
        redundant_dim, unique_dim, synergy_dim: factor widths.
        nuisance_dim: width of per-modality factors that the label never reads (modality-specific variation a
            model must learn to ignore; cross-modal agreement discards it, few labels make it hard to).
        synergy_modalities: modalities whose synergistic factors multiply into the synergy term.
        mix: the label's component weights.
        noise: standard deviation of the additive input noise.
        label_noise: standard deviation of noise added to the label score (irreducible error).
        margin: multiclass only: keep only samples whose top label score exceeds the runner-up by at least this
            much (rejection sampling from a larger pool), so classes are separated by a low-density gap — the
            cluster assumption under which unlabeled data can help. 0 (default) keeps every sample.
        cluster_std: multiclass only: if positive, the classes are balanced clusters of the redundant factor
            (``r = c_y + cluster_std · ε`` with class centres ``c_y`` drawn on the sphere of radius 2) and the label
            is the cluster ``y``; ``mix`` and ``label_noise`` are then unused and the unique, synergistic and
            nuisance factors are variation the label never reads. 0 (default) keeps the mix-based label.
        seed: the seed of everything (mixing maps, factors, noise).
    """

    n_samples: int = field(default=3000, metadata={"ge": 1})
    modality_dims: tuple[int, ...] = (32, 24, 16)
    task: str = "multiclass"
    num_classes: int = field(default=4, metadata={"ge": 2})
    redundant_dim: int = field(default=2, metadata={"ge": 1})
    unique_dim: int = field(default=2, metadata={"ge": 0})
    synergy_dim: int = field(default=1, metadata={"ge": 0})
    nuisance_dim: int = field(default=8, metadata={"ge": 0})
    synergy_modalities: tuple[int, ...] = (0, 1)
    mix: LabelMix = field(default_factory=LabelMix)
    noise: float = field(default=0.3, metadata={"ge": 0.0})
    label_noise: float = field(default=0.1, metadata={"ge": 0.0})
    margin: float = field(default=0.0, metadata={"ge": 0.0})
    cluster_std: float = field(default=0.0, metadata={"ge": 0.0})
    seed: int = 0

    @property
    def names(self) -> list[str]:
        return [f"m{i}" for i in range(len(self.modality_dims))]


@dataclass
class SyntheticData:
    """Generated arrays and the factors behind them.

    Attributes:
        inputs: modality name -> ``[N, d_m]`` float32.
        target: labels (``[N]`` or ``[N, L]``).
        modalities, task: the specs.
        factors: ``"redundant"``, ``"unique:<m>"``, ``"synergy:<m>"``, ``"nuisance:<m>"`` (when ``nuisance_dim``
            is positive) -> ``[N, width]`` factor arrays, row ``i`` behind input row ``i`` (for probes and tests).
        config: the generator options.
    """

    inputs: dict[str, np.ndarray]
    target: np.ndarray
    modalities: list[ModalitySpec]
    task: TaskSpec
    factors: dict[str, np.ndarray]
    config: SyntheticConfig


def _standardize(a: np.ndarray) -> np.ndarray:
    return (a - a.mean(0)) / (a.std(0) + 1e-8)


def generate_synthetic(config: SyntheticConfig | None = None) -> SyntheticData:
    """Generate a dataset (deterministic for ``config.seed``)."""
    cfg = config or SyntheticConfig()
    m = len(cfg.modality_dims)
    if m < 1:
        raise ValueError("modality_dims needs at least one modality")
    if any(i < 0 or i >= m for i in cfg.synergy_modalities):
        raise ValueError(f"synergy_modalities {cfg.synergy_modalities} must index the {m} modalities")
    kind = TaskKind(cfg.task)
    rng = np.random.default_rng(cfg.seed)
    n = cfg.n_samples
    k = cfg.num_classes if kind in (TaskKind.MULTICLASS, TaskKind.MULTILABEL) else 1

    if cfg.margin > 0 and kind != TaskKind.MULTICLASS:
        raise ValueError("the synthetic `margin` option applies to multiclass tasks only")
    if cfg.cluster_std > 0 and (kind != TaskKind.MULTICLASS or cfg.margin > 0):
        raise ValueError("the synthetic `cluster_std` option needs a multiclass task and margin 0")
    pool = n if cfg.margin <= 0 else n * 20
    redundant = rng.standard_normal((pool, cfg.redundant_dim))
    unique = [rng.standard_normal((pool, cfg.unique_dim)) for _ in range(m)]
    syn = {i: rng.standard_normal((pool, cfg.synergy_dim)) for i in cfg.synergy_modalities}
    nuisance = [rng.standard_normal((pool, cfg.nuisance_dim)) for _ in range(m)]
    names = cfg.names

    def label_scores(label_rng: np.random.Generator) -> np.ndarray:
        """Standardised, weighted components mapped to k scores, plus label noise."""
        mix = cfg.mix
        comps: list[tuple[float, np.ndarray]] = [(mix.redundant, redundant)]
        comps += list(zip(mix.unique_weights(m), unique, strict=True))
        if syn:
            comps.append((mix.synergy, np.prod(np.stack([syn[i] for i in cfg.synergy_modalities]), axis=0)))
        out = np.zeros((len(redundant), k))
        for weight, factor in comps:
            proj = label_rng.standard_normal((factor.shape[1], k))
            out += weight * _standardize(factor @ proj)
        return out + cfg.label_noise * label_rng.standard_normal((len(redundant), k))

    if cfg.margin > 0:  # labels first (own generator), then keep the samples with a clear margin
        score = label_scores(np.random.default_rng([cfg.seed, 1]))
        top2 = np.sort(score, axis=1)[:, -2:]
        keep = np.flatnonzero(top2[:, 1] - top2[:, 0] >= cfg.margin)
        if len(keep) < n:
            raise ValueError(f"margin {cfg.margin} keeps {len(keep)} of {pool} candidates, fewer than {n}; lower it")
        keep = keep[:n]
        redundant, score = redundant[keep], score[keep]
        unique = [u[keep] for u in unique]
        nuisance = [z[keep] for z in nuisance]
        syn = {i: v[keep] for i, v in syn.items()}

    clusters = None
    if cfg.cluster_std > 0:  # balanced clusters of the redundant factor (own generator: other draws unchanged)
        crng = np.random.default_rng([cfg.seed, 2])
        clusters = crng.permutation(np.arange(n) % k)
        centres = crng.standard_normal((k, cfg.redundant_dim))
        centres *= 2.0 / np.linalg.norm(centres, axis=1, keepdims=True)
        redundant = centres[clusters] + cfg.cluster_std * crng.standard_normal((n, cfg.redundant_dim))

    inputs: dict[str, np.ndarray] = {}
    for i, d in enumerate(cfg.modality_dims):
        parts = [redundant, unique[i], nuisance[i]] + ([syn[i]] if i in syn else [])
        f = np.concatenate(parts, axis=1)
        width = 2 * d
        w1 = rng.standard_normal((f.shape[1], width)) * (1.5 / np.sqrt(f.shape[1]))
        w2 = rng.standard_normal((width, d)) / np.sqrt(width)
        x = np.tanh(f @ w1) @ w2
        x = _standardize(x) + cfg.noise * rng.standard_normal((n, d))
        inputs[names[i]] = x.astype(np.float32)
    if cfg.margin <= 0:  # the original draw order: inputs, then the label maps from the same generator
        score = label_scores(rng)

    if clusters is not None:
        target = clusters.astype(np.int64)
        task = TaskSpec(kind, num_classes=k)
    elif kind == TaskKind.MULTICLASS:
        target = score.argmax(1).astype(np.int64)
        task = TaskSpec(kind, num_classes=k)
    elif kind == TaskKind.BINARY:
        target = (score[:, 0] > np.median(score[:, 0])).astype(np.float32)
        task = TaskSpec(kind)
    elif kind == TaskKind.MULTILABEL:
        target = (score > np.quantile(score, 0.6, axis=0)).astype(np.float32)
        task = TaskSpec(kind, num_classes=k)
    else:
        s = _standardize(score[:, :1])[:, 0]
        target = (3.0 * np.tanh(s / 1.5)).astype(np.float32)
        task = TaskSpec(kind, target_range=(-3.0, 3.0))

    factors = {"redundant": redundant.astype(np.float32)}
    factors.update({f"unique:{names[i]}": u.astype(np.float32) for i, u in enumerate(unique)})
    factors.update({f"synergy:{names[i]}": s.astype(np.float32) for i, s in syn.items()})
    if cfg.nuisance_dim > 0:
        factors.update({f"nuisance:{names[i]}": z.astype(np.float32) for i, z in enumerate(nuisance)})
    modalities = [ModalitySpec(name, "vector", (d,)) for name, d in zip(names, cfg.modality_dims, strict=True)]
    return SyntheticData(inputs, target, modalities, task, factors, cfg)


def predictive_subsets(config: SyntheticConfig | None = None) -> dict[str, list[str]]:
    """Per subset key, the label components it can see (``redundant``, ``unique:<m>``, ``synergy``)."""
    cfg = config or SyntheticConfig()
    names = cfg.names
    if cfg.cluster_std > 0:  # the label is the cluster of the redundant factor
        return {subset_key(list(subset), names): ["redundant"] for subset in all_subsets(names)}
    uw = cfg.mix.unique_weights(len(names))
    syn_names = {names[i] for i in cfg.synergy_modalities}
    out: dict[str, list[str]] = {}
    for subset in all_subsets(names):
        seen = ["redundant"] if cfg.mix.redundant > 0 else []
        seen += [f"unique:{n}" for i, n in enumerate(names) if n in subset and uw[i] > 0]
        if cfg.mix.synergy > 0 and syn_names and syn_names <= set(subset):
            seen.append("synergy")
        out[subset_key(list(subset), names)] = seen
    return out


def synthetic_bundle(
    config: SyntheticConfig | None = None,
    seed: int = 0,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    name: str = "synthetic",
) -> DatasetBundle:
    """The synthetic data as a :class:`DatasetBundle` with seeded stratified train / val / test splits."""
    data = generate_synthetic(config)
    target = torch.as_tensor(data.target)
    split = train_val_test_split(strata(target, data.task), seed, val_fraction, test_fraction=test_fraction)
    # source_rows: each sample's row in the generated arrays, so a split's rows find their factors (data.factors)
    full = MultimodalDataset(data.modalities, data.task, data.inputs, target, source_rows=torch.arange(len(target)))
    return DatasetBundle(
        name=name,
        modalities=data.modalities,
        task=data.task,
        primary_metric=default_metric(data.task),
        train=full.subset(split.train),
        val=full.subset(split.val),
        test=full.subset(split.test),
        source="generated",
        notes={
            "generator": "robult.data.synthetic",
            "config": repr(data.config),
            "split": split.rule,
            "predictive_subsets": predictive_subsets(data.config),
        },
    )


_CONFIG_KEYS = {f for f in SyntheticConfig.__dataclass_fields__ if f != "mix"}

# The cluster-structured preset (``synthetic_clusters``): 10 balanced classes that are clusters of the redundant
# factor (present in every modality), no nuisance factors; the unique and synergistic factors vary but the label
# never reads them. The cluster assumption holds, so unlabeled data can help: at 5% labels (~10 per class) a
# labeled-only model stays far below one trained on all labels.
CLUSTERS = SyntheticConfig(num_classes=10, redundant_dim=3, nuisance_dim=0, cluster_std=0.4)


def _check_option_type(key: str, value: Any, default: Any) -> None:
    """A registry option must have the type of the field's default (e.g. ``n_samples=abc`` is an error naming it)."""

    def is_int(v: Any) -> bool:
        return isinstance(v, int) and not isinstance(v, bool)

    if isinstance(default, bool):
        ok, expected = isinstance(value, bool), "true or false"
    elif isinstance(default, int):
        ok, expected = is_int(value), "an integer"
    elif isinstance(default, float):
        ok, expected = is_int(value) or isinstance(value, float), "a number"
    elif isinstance(default, str):
        ok, expected = isinstance(value, str), "a string"
    elif isinstance(default, tuple):
        ok, expected = isinstance(value, list | tuple) and all(is_int(v) for v in value), "a list of integers"
    else:
        return
    if not ok:
        raise ValueError(f"dataset option {key!r}: expected {expected}, got {value!r}")


def _config_from_options(base: SyntheticConfig, options: dict) -> SyntheticConfig:
    """``base`` with the registry options (any :class:`SyntheticConfig` field; ``mix`` as a dict) applied."""
    extra = dict(options)
    unknown = sorted(set(extra) - _CONFIG_KEYS - {"mix"})
    if unknown:
        raise ValueError(f"unknown synthetic dataset option {unknown[0]!r}; known: {sorted(_CONFIG_KEYS | {'mix'})}")
    mix = extra.pop("mix", None)
    for key, value in extra.items():
        _check_option_type(key, value, getattr(base, key))
        for kind, bound in field_bounds(SyntheticConfig.__dataclass_fields__[key]).items():
            test, symbol = BOUNDS[kind]
            if not test(value, bound):
                raise ValueError(f"dataset option {key!r}: must be {symbol} {bound}, got {value!r}")
    for key in ("modality_dims", "synergy_modalities"):
        if key in extra:
            extra[key] = tuple(extra[key])
    if mix is not None and not isinstance(mix, dict):
        raise ValueError(f"dataset option 'mix': expected a mapping of LabelMix weights, got {mix!r}")
    if isinstance(mix, dict):
        unknown = sorted(set(mix) - set(LabelMix.__dataclass_fields__))
        if unknown:
            raise ValueError(
                f"dataset option 'mix': unknown key {unknown[0]!r}; known: {sorted(LabelMix.__dataclass_fields__)}"
            )
        if "unique" in mix and isinstance(mix["unique"], list):
            mix = {**mix, "unique": tuple(mix["unique"])}
        mix = LabelMix(**mix)
    return replace(base, **extra, **({"mix": mix} if mix is not None else {}))


@register_dataset(
    "synthetic",
    "3 modalities from redundant, unique and synergistic latent factors (generated, no files; the default)",
    group="generated",
)
def load_synthetic(opts: LoadOptions) -> DatasetBundle:
    """Registry loader: ``opts.extra`` may set any :class:`SyntheticConfig` field and ``mix`` (a dict)."""
    cfg = _config_from_options(SyntheticConfig(), opts.extra)
    return synthetic_bundle(cfg, seed=opts.seed, val_fraction=opts.val_fraction)


@register_dataset(
    "synthetic_clusters",
    "10 balanced classes, clusters of a factor all 3 modalities share: unlabeled data can help (generated)",
    group="generated",
)
def load_synthetic_clusters(opts: LoadOptions) -> DatasetBundle:
    """Registry loader of the :data:`CLUSTERS` preset; ``opts.extra`` overrides its fields like ``synthetic``."""
    cfg = _config_from_options(CLUSTERS, opts.extra)
    return synthetic_bundle(cfg, seed=opts.seed, val_fraction=opts.val_fraction, name="synthetic_clusters")


# the generator options behind each registered synthetic dataset (before its registry options are applied)
PRESETS: dict[str, SyntheticConfig] = {"synthetic": SyntheticConfig(), "synthetic_clusters": CLUSTERS}


def split_factors(dataset: MultimodalDataset, name: str, options: dict | None = None) -> dict[str, np.ndarray]:
    """The known latent factors of a split of a registered synthetic dataset, row-aligned with ``dataset``.

    Args:
        dataset: a split of the bundle that ``load_dataset(name, **options)`` returned (its ``source_rows`` say which
            generated row each sample is).
        name: the registered dataset, a key of :data:`PRESETS`.
        options: the registry options the dataset was loaded with (``dataset.options`` of a run config).

    Returns:
        factor name (``redundant``, ``unique:<m>``, ``synergy:<m>``, ``nuisance:<m>``) -> ``[len(dataset), width]``.
    """
    if name not in PRESETS:
        raise ValueError(f"dataset {name!r} has no known factors; only the generated sets do: {sorted(PRESETS)}")
    if dataset.source_rows is None:
        raise ValueError(f"this split of {name!r} does not say which generated rows it holds (no source_rows)")
    data = generate_synthetic(_config_from_options(PRESETS[name], dict(options or {})))
    rows = dataset.source_rows.numpy()
    return {key: value[rows] for key, value in data.factors.items()}
