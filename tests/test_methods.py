"""Method registry: every method builds, trains one step, and predicts every subset from one pass."""

from __future__ import annotations

import dataclasses
from dataclasses import replace

import pytest
import torch
from torch import nn

from robult import Batch, TaskSpec, all_subsets
from robult.losses.robult import RobultLossConfig
from robult.methods import COMMON_SEARCH, METHODS, build_method, get_method
from robult.modules.encoders import ModalityEncoders

from .conftest import make_batch

MODEL = {"hidden_dim": 16, "shared_dim": 8, "specific_dim": 8, "encoder_hidden": (12,)}


def model_of(name: str) -> dict:
    """The keys of :data:`MODEL` that method ``name``'s model reads (the late-fusion models have no Z or U)."""
    return {k: v for k, v in MODEL.items() if k in get_method(name).keys()["model"]}


BASELINES = ("supervised", "moddrop", "pseudolabel", "contrastive", "shared_private", "tmc", "fixmatch")
# modules a method freezes because its loss never uses them (DDP then needs no find_unused_parameters)
FROZEN = {"robult_no_rec": ("reconstructors.",), "contrastive": ("reconstructors.",)}


def test_registry_holds_the_baselines_and_the_robult_variants() -> None:
    expected = {
        "robult",
        "robult_paper",
        "robult_no_st",
        "robult_labeled_only",
        "robult_no_rec",
        "robult_supcon",
        "robult_v2",
    }
    assert set(METHODS) == expected | set(BASELINES)
    with pytest.raises(ValueError, match="unknown method 'nope'"):
        get_method("nope")


def test_uses_unlabeled_flags() -> None:
    labeled_only = {"robult_labeled_only", "supervised", "moddrop", "tmc"}
    for name, method in METHODS.items():
        assert method.uses_unlabeled == (name not in labeled_only), name


def test_defaults_name_real_config_keys() -> None:
    from robult.config import TrainSection

    loss_keys = {f.name for f in dataclasses.fields(RobultLossConfig)}
    for method in METHODS.values():
        assert set(method.fixed_loss or {}) <= loss_keys, method.name
        for key in method.train_fallbacks or {}:  # a train default needs a config key that can be left unset
            assert key in TrainSection.model_fields and TrainSection.model_fields[key].default is None, key
        for key, value in (method.train_fallbacks or {}).items():  # values pass the section's validation
            TrainSection(**{key: value})
    assert get_method("moddrop").train_fallbacks == {"modality_dropout": 0.5}
    assert get_method("pseudolabel").train_fallbacks == {"modality_dropout": 0.5}
    assert get_method("supervised").train_fallbacks is None and get_method("robult").train_fallbacks is None


def test_train_fallbacks_apply_only_where_the_config_is_silent() -> None:
    from robult.config import validate_config
    from robult.training.run import _train_option

    moddrop, supervised = get_method("moddrop"), get_method("supervised")
    silent = validate_config({"train": {"method": "moddrop"}})
    assert _train_option(silent, moddrop, "modality_dropout", 0.0) == 0.5
    assert _train_option(silent, supervised, "modality_dropout", 0.0) == 0.0
    explicit = validate_config({"train": {"method": "moddrop", "modality_dropout": 0.0}})
    assert _train_option(explicit, moddrop, "modality_dropout", 0.0) == 0.0


def _encoder_signature(model: nn.Module) -> list[tuple[str, tuple[int, ...]]]:
    encoders = next(m for m in model.modules() if isinstance(m, ModalityEncoders))
    return [(n, tuple(p.shape)) for n, p in encoders.named_parameters()]


def test_every_method_gets_identical_encoders(specs, task) -> None:
    signatures = {}
    for name in METHODS:
        torch.manual_seed(0)
        model, _ = build_method(name, specs, task, model_of(name))
        signatures[name] = _encoder_signature(model)
    assert len({tuple(s) for s in signatures.values()}) == 1


@pytest.mark.filterwarnings("ignore:method '(pseudolabel|fixmatch)' has no confident pseudo-labels")
@pytest.mark.parametrize("name", sorted(METHODS))
@pytest.mark.parametrize(
    "task", [TaskSpec("multiclass", num_classes=4), TaskSpec("regression"), TaskSpec("multilabel", num_classes=4)]
)
def test_train_step_all_parameters_learn(specs, task, name: str) -> None:
    """Every trainable parameter gets a non-zero gradient from one step (multi-process training relies on it: DDP
    runs without find_unused_parameters when no batch can lack a modality); modules a method's loss never uses are
    frozen."""
    torch.manual_seed(0)
    ramped = "warmup_epochs" in {f.name for f in dataclasses.fields(METHODS[name].loss_config)}
    if name == "tmc" and task.kind.value in ("regression", "multilabel"):  # evidence over classes only
        with pytest.raises(ValueError, match=f"method 'tmc' needs a classification task .*not {task.kind.value}"):
            build_method(name, specs, task, model_of(name))
        return
    model, loss = build_method(name, specs, task, model_of(name), {"warmup_epochs": 0.0} if ramped else {})
    batch = make_batch(b=16, seed=7)
    batch = replace(batch, present=torch.ones_like(batch.present))  # complete: what DDP's choice relies on
    g = torch.Generator().manual_seed(1)
    if task.kind.value == "regression":
        batch = replace(batch, target=torch.randn(16, generator=g) * 2)
    elif task.kind.value == "multilabel":
        batch = replace(batch, target=(torch.rand(16, 4, generator=g) < 0.5).float())
    # as the training step calls it
    result = loss(model(batch, with_reconstruction=getattr(loss, "needs_reconstruction", True)), batch, epoch=3.0)
    result.total.backward()
    logged = result.log_dict("train/")
    assert torch.isfinite(result.total) and result.total > 0
    assert logged["train/total"] == pytest.approx(result.total.item())
    assert all(isinstance(v, float) and v == v for v in logged.values())
    # each loss reports its own per-batch diagnostics (the trainer logs them as given, probing nothing)
    diag = result.diagnostics
    assert all(isinstance(v, float) and v == v for v in diag.values())
    if hasattr(model, "fusion"):  # a RobultModel: representation diagnostics, keyed by the modality names
        assert {"diag/alignment_zs", "diag/uniformity_s", *(f"diag/u_norm/{s.name}" for s in specs)} <= set(diag)
    if name.startswith("robult") and name != "robult_labeled_only":
        assert "diag/pu_weight_mean" in diag
    frozen = FROZEN.get(name, ())
    for pname, p in model.named_parameters():
        assert p.requires_grad != pname.startswith(frozen), f"{name}: {pname}"
        if p.requires_grad:  # in the graph (what DDP needs); non-zero but the absent-modality placeholder
            assert p.grad is not None, f"{name}: {pname}"
            assert bool(p.grad.abs().sum() > 0) or pname == "fusion.missing", f"{name}: {pname}"
            assert torch.isfinite(p.grad).all(), f"{name}: {pname}"


@pytest.mark.parametrize(("name", "key"), [("robult", "lambda_rec"), ("shared_private", "lambda_rec_mean")])
def test_a_method_without_reconstruction_loss_freezes_its_reconstructors_and_uses_the_rest(
    specs, task, name: str, key: str
) -> None:
    torch.manual_seed(0)
    model, loss = build_method(name, specs, task, model_of(name), {key: 0.0})
    assert not any(p.requires_grad for p in model.reconstructors.parameters())
    batch = replace(make_batch(b=16, seed=7), present=torch.ones(16, 3, dtype=torch.bool))
    loss(model(batch, with_reconstruction=loss.needs_reconstruction), batch, epoch=3.0).total.backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    model, _ = build_method(name, specs, task, model_of(name), {key: 0.1})
    assert all(p.requires_grad for p in model.reconstructors.parameters())


@pytest.mark.parametrize("name", sorted(METHODS))
def test_one_pass_subsets_equal_masked_forward(specs, task, name: str) -> None:
    torch.manual_seed(0)
    model, _ = build_method(name, specs, task, model_of(name))
    model.eval()
    batch = make_batch(seed=1)
    batch = replace(batch, present=torch.ones_like(batch.present))
    subsets = all_subsets(["a", "b", "c"])
    with torch.no_grad():
        out = model(batch, with_reconstruction=False)
        preds = model.predict_subsets(out, subsets)
        for i, subset in enumerate(subsets):
            present = torch.tensor([[n in subset for n in "abc"]] * batch.size)
            single = model.predict_subsets(model(batch.with_present(present), with_reconstruction=False), [subset])
            torch.testing.assert_close(preds.predictions[i], single.predictions[0], rtol=1e-5, atol=1e-6)
            idx = [("a", "b", "c").index(n) for n in subset]
            if name != "tmc":  # tmc combines opinions (tests/models/test_tmc.py), the others average logits
                torch.testing.assert_close(preds.predictions[i], out.logits[:, idx].mean(1), rtol=1e-5, atol=1e-6)
    assert preds.valid.all()


def test_parameters_are_shared_not_copied(specs, task) -> None:
    # shared_private's loss holds the model's reconstructors: a module holding both sees each parameter once
    model, loss = build_method("shared_private", specs, task, MODEL)
    both = nn.ModuleDict({"model": model, "criterion": loss})
    assert sum(p.numel() for p in both.parameters()) == sum(p.numel() for p in model.parameters())
    assert loss.reconstructors is model.reconstructors
    # contrastive has no reconstruction: its reconstructors are frozen, everything else trains
    model, _ = build_method("contrastive", specs, task, MODEL)
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert frozen and all(n.startswith("reconstructors.") for n in frozen)


def test_pseudolabel_on_regression_warns_and_skips(specs) -> None:
    task = TaskSpec("regression")
    with pytest.warns(UserWarning, match="no confident pseudo-labels for a regression"):
        model, loss = build_method("pseudolabel", specs, task, model_of("pseudolabel"))
    batch = make_batch(seed=2)
    batch = Batch(batch.inputs, batch.present, batch.target.float() - 1.5, batch.labeled, batch.lengths)
    out = loss(model(batch), batch, epoch=10.0)
    assert out.pseudo_label.item() == 0.0 and out.total.item() == pytest.approx(out.supervised.item())


def test_unknown_options_are_named(specs, task) -> None:
    for name in BASELINES:
        with pytest.raises(ValueError, match="unknown loss option 'threshold'"):
            build_method(name, specs, task, model_of(name), {"threshold": 0.9})
        with pytest.raises(ValueError, match="unknown model option 'width'"):
            build_method(name, specs, task, {"width": 3})


def test_registry_entries_carry_search_space_and_colour() -> None:
    """The registry is the only method table: every entry has its own search keys (real config keys) and a colour
    no other method shares; ``robult`` is METHOD.md v2 (sg(S)) and ``robult_paper`` the live-S ablation."""
    from robult.config import validate_config

    colours = [m.color for m in METHODS.values()]
    assert len(set(colours)) == len(colours)
    for method in METHODS.values():
        space = method.search_space()
        assert set(COMMON_SEARCH) <= set(space)
        validate_config({k.split(".")[0]: {k.split(".")[1]: v[0]} for k, v in space.items() if "." in k})
    assert RobultLossConfig().contrastive_grad_to_fusion is False
    assert get_method("robult_paper").fixed_loss == {"contrastive_grad_to_fusion": True, "lambda_pseudo": 0.0}
    assert RobultLossConfig().lambda_pseudo == 1.0 and RobultLossConfig().pseudo_source == "fused"
    assert get_method("robult_no_st").fixed_loss == {"lambda_pseudo": 0.0}
    assert {"loss.lambda_pseudo", "loss.pseudo_confidence"} <= set(get_method("robult").search)
    assert "loss.lambda_rec" in get_method("robult").search
    assert "loss.sigma_min" not in get_method("robult_supcon").search  # no soft weights: σ_min is dead there


# ------------------------------------------------------------------------------------------ one config per loss
def test_every_method_declares_its_configs_and_searches_only_its_keys() -> None:
    from robult.config import RunConfig

    for method in METHODS.values():
        own = {s: set(keys) for s, keys in method.keys().items()}
        for section in ("model", "loss"):
            assert dataclasses.is_dataclass(method.config_class(section)), (method.name, section)
            assert own[section] <= set(RunConfig.model_fields[section].annotation.model_fields), method.name
            assert set(method.fixed(section)) <= own[section], method.name
        for key in method.search_space():
            section, _, name = key.partition(".")
            assert name in RunConfig.model_fields[section].annotation.model_fields, key
            if section in own:
                assert name in own[section], f"{method.name} searches {key}, which its {section} does not use"
    assert get_method("pseudolabel").search["loss.lambda_pl"] == [0.3, 1.0]
    assert get_method("contrastive").search["loss.lambda_nce"] == [0.3, 1.0]
    shared_private = get_method("shared_private").search
    assert shared_private["loss.lambda_sim"] == [0.3, 1.0] and shared_private["loss.lambda_rec_mean"] == [0.3, 1.0]
    assert shared_private["loss.lambda_diff"] == [0.09, 0.3]
    assert not any(
        k in m.search
        for m in METHODS.values()
        for k in ("loss.lambda_ulb", "loss.lambda_lb")
        if not m.name.startswith("robult")
    )


@pytest.mark.parametrize(
    ("name", "cls", "values"),
    [
        ("robult", RobultLossConfig, {"lambda_lb": 0.7, "temperature": 0.2, "lambda_pseudo": 0.4}),
        ("supervised", "SupervisedLossConfig", {"regression_loss": "mse"}),
        ("moddrop", "SupervisedLossConfig", {"regression_loss": "mse"}),
        ("pseudolabel", "PseudoLabelLossConfig", {"lambda_pl": 0.3, "pseudo_confidence": 0.8, "warmup_epochs": 2.0}),
        ("contrastive", "InstanceContrastiveLossConfig", {"lambda_nce": 0.3, "temperature": 0.2}),
        ("shared_private", "SharedPrivateLossConfig", {"lambda_sim": 0.3, "lambda_diff": 0.09, "lambda_rec_mean": 0.3}),
        ("tmc", "TMCLossConfig", {"annealing_epochs": 10.0, "pseudo_view": True}),
        ("fixmatch", "FixMatchLossConfig", {"lambda_consistency": 0.3, "pseudo_confidence": 0.8, "weak_noise": 0.1}),
    ],
)
def test_each_builder_gets_its_own_config(specs, task, name: str, cls, values: dict) -> None:
    """From a whole ``loss`` section (every key, as a run config holds it) each loss gets its own config with the
    section's values for its keys."""
    import warnings

    from robult.config import validate_config
    from robult.losses import baselines, evidential, fixmatch, supervised

    if isinstance(cls, str):
        cls = next(getattr(m, cls) for m in (baselines, supervised, evidential, fixmatch) if hasattr(m, cls))
    section = validate_config({"loss": values}).loss.model_dump()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the section's other keys are at their defaults: nothing to warn about
        _, loss = build_method(name, specs, task, model_of(name), section)
    assert type(loss.config) is cls
    assert loss.config == cls(**{k: section[k] for k in (f.name for f in dataclasses.fields(cls))})
    for key, value in values.items():
        assert getattr(loss.config, key) == value


@pytest.mark.parametrize(
    ("name", "key", "value"),
    [
        ("shared_private", "lambda_lb", 0.3),
        ("shared_private", "lambda_ulb", 0.3),
        ("pseudolabel", "lambda_ulb", 0.3),
        ("pseudolabel", "lambda_pseudo", 0.3),
        ("contrastive", "lambda_ulb", 0.3),
        ("supervised", "lambda_rec", 0.0),
        ("robult", "lambda_sim", 0.3),
        ("tmc", "lambda_pl", 0.3),
        ("fixmatch", "lambda_pl", 0.3),
        ("pseudolabel", "lambda_consistency", 0.3),
    ],
)
def test_a_foreign_non_default_key_warns_naming_it_and_the_method(specs, task, name: str, key: str, value) -> None:
    import warnings

    with pytest.warns(UserWarning, match=rf"loss\.{key} = {value!r} is ignored: method '{name}' does not use it"):
        _, loss = build_method(name, specs, task, model_of(name), {key: value})
    assert not hasattr(loss.config, key)
    assert type(loss.config)() == loss.config  # ignored: the method runs with its defaults
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        build_method(name, specs, task, model_of(name), {key: get_loss_default(key)})  # at its default: silent


def get_loss_default(key: str):
    from robult.config import LossSection

    return LossSection.model_fields[key].default


def _old_baseline_total(name: str, parts, old: dict, epoch: float) -> float:
    """The baselines' totals as the code computed them before each loss had its own config (from the old
    ``RobultLossConfig`` keys: ``lambda_ulb`` weighed the pseudo-label and InfoNCE terms, ramped over
    ``warmup_epochs``; MISA's 1.0 / 0.3 / 1.0 were scaled by ``lambda_lb`` / ``lambda_rec`` / ``lambda_rec``)."""
    from robult.losses.robult import ramp_weight

    if name == "pseudolabel":
        return parts.supervised + ramp_weight(old["lambda_ulb"], epoch, old["warmup_epochs"]) * parts.pseudo_label
    if name == "contrastive":
        return parts.supervised + ramp_weight(old["lambda_ulb"], epoch, old["warmup_epochs"]) * parts.infonce
    assert name == "shared_private"
    lb, rec = old["lambda_lb"], old["lambda_rec"]
    return (
        parts.supervised + 1.0 * lb * parts.similarity + 0.3 * rec * parts.difference + 1.0 * rec * parts.reconstruction
    )


@pytest.mark.parametrize(
    ("name", "old", "new"),
    [
        ("pseudolabel", {"lambda_ulb": 1.0, "warmup_epochs": 5.0}, {"pseudo_confidence": 0.3}),
        (
            "pseudolabel",
            {"lambda_ulb": 0.3, "warmup_epochs": 2.0, "pseudo_confidence": 0.3},
            {"lambda_pl": 0.3, "warmup_epochs": 2.0, "pseudo_confidence": 0.3},
        ),
        ("contrastive", {"lambda_ulb": 1.0, "warmup_epochs": 5.0}, {}),
        (
            "contrastive",
            {"lambda_ulb": 0.3, "warmup_epochs": 5.0, "temperature": 0.2},
            {"lambda_nce": 0.3, "temperature": 0.2},
        ),
        ("shared_private", {"lambda_lb": 1.0, "lambda_rec": 1.0}, {}),
        (
            "shared_private",
            {"lambda_lb": 0.3, "lambda_rec": 0.3},
            {"lambda_sim": 0.3, "lambda_rec_mean": 0.3, "lambda_diff": 0.09},
        ),
        (
            "shared_private",
            {"lambda_lb": 1.0, "lambda_rec": 0.1},
            {"lambda_sim": 1.0, "lambda_rec_mean": 0.1, "lambda_diff": 0.3 * 0.1},
        ),
    ],
)
def test_baseline_losses_equal_the_old_keys_computation(specs, task, name: str, old: dict, new: dict) -> None:
    """Converted keys (as configs/tuned/ was converted) give the loss the old keys gave, on a fixed seeded batch."""
    torch.manual_seed(0)
    model, loss = build_method(name, specs, task, model_of(name), new)
    batch = make_batch(seed=3)
    torch.manual_seed(1)
    epoch = 1.0
    parts = loss(model(batch), batch, epoch=epoch)
    expected = _old_baseline_total(name, parts, old, epoch).detach()
    assert parts.total.item() == pytest.approx(expected.item(), rel=1e-6)
    assert parts.total.item() > parts.supervised.item()  # the unlabeled / auxiliary terms take part


@pytest.mark.parametrize("name", ["tmc", "fixmatch"])
def test_the_new_baselines_train_end_to_end_through_the_trainer(tmp_path, name: str) -> None:
    """tmc and fixmatch train, select and score every subset through the one trainer (tiny synthetic data)."""
    from robult.config import load_config
    from robult.training.run import train_run

    from .conftest import TINY_SYNTHETIC

    cfg = load_config(None, [*TINY_SYNTHETIC, f"out_dir={tmp_path}", f"train.method={name}"])
    result = train_run(cfg)
    scores = result.evaluation.subsets
    assert len(scores) == 2**3 - 1  # the synthetic set's three modalities: every non-empty subset
    assert all(0.0 <= s["accuracy"] <= 1.0 for s in scores.values())
    assert result.best_score == result.best_score and result.evaluation.random_rate  # selected and scored
    assert (result.run_dir / "result.json").exists()


# ------------------------------------------------------------------------------- a method owns its configuration
# sha256 (first 16 hex digits) of every method's initial state dict (key names and weight bytes) at seed 0, recorded
# when the baselines were still built from RobultConfig inside the model: building the parts in the registry draws
# the same weights in the same order, and a saved model's key names are unchanged
INITIAL_STATE = {"robult": "58a45a7f707f7e21", "supervised": "6daaca3fd16591f4", "tmc+pseudo_view": "0a9665d01d693bba"}
_FAMILY = {"robult": ("robult", "robult_v2", "robult_paper", "robult_no_st", "robult_labeled_only", "robult_no_rec",
                      "robult_supcon", "contrastive", "shared_private"),
           "supervised": ("supervised", "moddrop", "pseudolabel", "tmc", "fixmatch")}  # fmt: skip


def _state_digest(model: nn.Module) -> str:
    import hashlib

    h = hashlib.sha256()
    for key, value in model.state_dict().items():
        h.update(key.encode())
        h.update(value.detach().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


@pytest.mark.parametrize("name", [*METHODS, "tmc+pseudo_view"])
def test_initial_weights_and_key_names_are_those_of_the_old_layout(specs, task, name: str) -> None:
    method, _, view = name.partition("+")
    torch.manual_seed(0)
    model, _ = build_method(method, specs, task, model_of(method), {"pseudo_view": True} if view else {})
    family = name if view else next(k for k, members in _FAMILY.items() if method in members)
    assert _state_digest(model) == INITIAL_STATE[family]


def test_each_method_owns_a_model_and_a_loss_config() -> None:
    from robult.losses.evidential import TMCLossConfig
    from robult.models import LateFusionConfig, RobultConfig

    assert get_method("tmc").model_config is LateFusionConfig and get_method("tmc").loss_config is TMCLossConfig
    assert get_method("robult").model_config is RobultConfig
    keys = get_method("tmc").keys()
    assert keys["model"] == [
        "hidden_dim",
        "encoder_hidden",
        "sequence_encoder",
        "token_buckets",
        "dropout",
        "head_hidden",
    ]
    assert keys["loss"] == ["annealing_epochs", "pseudo_view"]
    assert {"shared_dim", "subset_weights"} <= set(get_method("contrastive").keys()["model"])
    model_cfg, loss_cfg = get_method("robult_paper").configs({"hidden_dim": 32}, {"lambda_pseudo": 0.5})
    assert model_cfg == RobultConfig(hidden_dim=32, subset_weights="uniform")  # fixed_model over the config
    assert loss_cfg.lambda_pseudo == 0.0 and loss_cfg.contrastive_grad_to_fusion  # fixed_loss over the config


@pytest.mark.parametrize(("name", "key", "value"), [("tmc", "shared_dim", 32), ("supervised", "fusion", "attention")])
def test_a_foreign_non_default_model_key_warns_naming_it_and_the_method(specs, task, name: str, key: str, value):
    import warnings

    with pytest.warns(UserWarning, match=rf"model\.{key} = {value!r} is ignored: method '{name}' does not use it"):
        model, _ = build_method(name, specs, task, {"hidden_dim": 16, key: value})
    assert model.encoders.hidden_dim == 16
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a whole model section at its defaults (and lists for tuples): silent
        from robult.config import RunConfig

        build_method(name, specs, task, RunConfig().model.model_dump(mode="json"))
