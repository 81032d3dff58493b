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
BASELINES = ("supervised", "moddrop", "pseudolabel", "contrastive", "shared_private")
# parameters a method's loss leaves without gradient, by name prefix
UNUSED = {"robult_no_rec": ("reconstructors.",)}


def test_registry_holds_the_baselines_and_the_robult_variants() -> None:
    expected = {"robult", "robult_paper", "robult_labeled_only", "robult_no_rec", "robult_supcon", "robult_st"}
    assert set(METHODS) == expected | set(BASELINES)
    with pytest.raises(ValueError, match="unknown method 'nope'"):
        get_method("nope")


def test_uses_unlabeled_flags() -> None:
    labeled_only = {"robult_labeled_only", "supervised", "moddrop"}
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
        model, _ = build_method(name, specs, task, MODEL)
        signatures[name] = _encoder_signature(model)
    assert len({tuple(s) for s in signatures.values()}) == 1


@pytest.mark.parametrize("name", sorted(METHODS))
def test_train_step_all_parameters_learn(specs, task, name: str) -> None:
    torch.manual_seed(0)
    model, loss = build_method(name, specs, task, MODEL, {"warmup_epochs": 0.0})
    batch = make_batch(b=16, seed=7)
    result = loss(model(batch, with_reconstruction=True), batch, epoch=3.0)
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
    unused = UNUSED.get(name, ())
    for pname, p in model.named_parameters():
        if not p.requires_grad:
            continue
        got = p.grad is not None and bool(p.grad.abs().sum() > 0)
        assert got != pname.startswith(unused), f"{name}: {pname}"
        if p.grad is not None:
            assert torch.isfinite(p.grad).all(), f"{name}: {pname}"


@pytest.mark.parametrize("name", sorted(METHODS))
def test_one_pass_subsets_equal_masked_forward(specs, task, name: str) -> None:
    torch.manual_seed(0)
    model, _ = build_method(name, specs, task, MODEL)
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
        model, loss = build_method("pseudolabel", specs, task, MODEL)
    batch = make_batch(seed=2)
    batch = Batch(batch.inputs, batch.present, batch.target.float() - 1.5, batch.labeled, batch.lengths)
    out = loss(model(batch), batch, epoch=10.0)
    assert out.pseudo_label.item() == 0.0 and out.total.item() == pytest.approx(out.supervised.item())


def test_unknown_options_are_named(specs, task) -> None:
    for name in BASELINES:
        with pytest.raises(ValueError, match="unknown loss option 'threshold'"):
            build_method(name, specs, task, MODEL, {"threshold": 0.9})
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
    assert get_method("robult_paper").fixed_loss == {"contrastive_grad_to_fusion": True}
    assert "loss.lambda_rec" in get_method("robult").search
    assert "loss.sigma_min" not in get_method("robult_supcon").search  # no soft weights: σ_min is dead there
