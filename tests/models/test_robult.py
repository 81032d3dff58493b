"""RobultModel: one-pass subset predictions, absent inputs never read, gradient routing, user encoders."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from torch import nn

from robult import Batch, ModalitySpec, TaskSpec, all_subsets
from robult.losses import RobultLoss, RobultLossConfig, reconstruction_loss
from robult.losses.pseudo_label import pseudo_label_loss
from robult.models import RobultConfig, RobultModel

from ..conftest import make_batch


def _complete(batch: Batch) -> Batch:
    return replace(batch, present=torch.ones_like(batch.present))


@pytest.mark.parametrize("aggregate", ["logit_mean", "feature_mean"])
@pytest.mark.parametrize("fusion", ["concat", "attention"])
def test_one_pass_subsets_equal_masked_forward(specs, task, aggregate: str, fusion: str) -> None:
    torch.manual_seed(0)
    model = RobultModel(specs, task, RobultConfig(fusion=fusion, hidden_dim=32, aggregate=aggregate)).eval()
    batch = _complete(make_batch(seed=1))
    subsets = all_subsets(["a", "b", "c"])
    assert len(subsets) == 7
    with torch.no_grad():
        preds = model.predict_subsets(model(batch, with_reconstruction=False), subsets)
        for i, subset in enumerate(subsets):
            present = torch.tensor([[n in subset for n in "abc"]] * batch.size)
            single = model.predict_subsets(model(batch.with_present(present), with_reconstruction=False), [subset])
            torch.testing.assert_close(preds.predictions[i], single.predictions[0], rtol=1e-5, atol=1e-6)
            # and by hand: mean of the per-modality head outputs of the subset
            out = model(batch, with_reconstruction=False)
            idx = [("a", "b", "c").index(n) for n in subset]
            if aggregate == "logit_mean":
                manual = out.logits[:, idx].mean(1)
            else:
                manual = model.head(torch.cat([out.specific, out.shared], -1)[:, idx].mean(1))
            torch.testing.assert_close(preds.predictions[i], manual, rtol=1e-5, atol=1e-6)
    assert preds.keys == ["a", "b", "c", "a+b", "a+c", "b+c", "a+b+c"]
    assert preds.valid.all()


@pytest.mark.parametrize("fill", ["nan", "random", "inf"])
def test_absent_inputs_are_never_read(specs, task, fill: str) -> None:
    torch.manual_seed(0)
    model = RobultModel(specs, task, RobultConfig(hidden_dim=32, fusion="attention")).eval()
    batch = make_batch(seed=2)
    g = torch.Generator().manual_seed(9)
    inputs = {}
    for m, name in enumerate("abc"):
        x = batch.inputs[name].clone()
        absent = ~batch.present[:, m]
        if fill == "nan":
            x[absent] = float("nan")
        elif fill == "inf":
            x[absent] = float("inf")
        else:
            x[absent] = torch.randn(x[absent].shape, generator=g) * 100
        inputs[name] = x
    dirty = replace(batch, inputs=inputs)
    subsets = all_subsets(["a", "b", "c"])
    with torch.no_grad():
        clean_out, dirty_out = model(batch), model(dirty)
        p1 = model.predict_subsets(clean_out, subsets)
        p2 = model.predict_subsets(dirty_out, subsets)
    torch.testing.assert_close(p1.predictions, p2.predictions, equal_nan=True)
    torch.testing.assert_close(clean_out.fused, dirty_out.fused)
    torch.testing.assert_close(clean_out.reconstruction, dirty_out.reconstruction)
    assert torch.isfinite(dirty_out.fused).all()
    # a subset none of whose modalities a sample has: NaN and invalid, never a silent number
    only_c = p2["c"]
    missing_c = ~batch.present[:, 2]
    assert torch.isnan(only_c[missing_c]).all() and torch.isfinite(only_c[~missing_c]).all()


def test_loss_gradients_ignore_absent_rows(specs, task) -> None:
    torch.manual_seed(0)
    model = RobultModel(specs, task, RobultConfig(hidden_dim=32))
    loss = RobultLoss(task, 3)
    batch = make_batch(seed=3)
    x = batch.inputs["a"].clone().requires_grad_(True)
    batch = replace(batch, inputs={**batch.inputs, "a": x})
    loss(model(batch), batch, epoch=10).total.backward()
    assert (x.grad[~batch.present[:, 0]] == 0).all()
    assert (x.grad[batch.present[:, 0]].abs().sum(1) > 0).all()


def _grads(model: nn.Module) -> dict[str, float]:
    return {n: (0.0 if p.grad is None else float(p.grad.abs().sum())) for n, p in model.named_parameters()}


def test_reconstruction_gradient_routing(specs, task) -> None:
    torch.manual_seed(0)
    model = RobultModel(specs, task, RobultConfig(hidden_dim=32, fusion="attention"))
    batch = make_batch(seed=4)
    out = model(batch)
    reconstruction_loss(out.reconstruction, out.reconstruction_target, out.present).backward()
    grads = _grads(model)
    touched = {n for n, g in grads.items() if g > 0}
    # every modality's own slice of the grouped specific projector and reconstructor gets gradient
    for module in (model.specific_projectors, model.reconstructors):
        weights = [p for n, p in module.named_parameters() if n.endswith("weight") and p.ndim == 3]
        assert weights
        for w in weights:
            assert (w.grad.abs().sum(dim=(1, 2)) > 0).all()
    forbidden = ("shared_projector.", "fusion.", "fused_head.", "head.", "encoders.")
    assert not [n for n in touched if n.startswith(forbidden)]
    assert all(grads[n] == 0 for n in grads if n.startswith(forbidden))
    # option: the reconstruction may reach the encoders
    model2 = RobultModel(specs, task, RobultConfig(hidden_dim=32, rec_grad_to_encoder=True))
    out2 = model2(batch)
    reconstruction_loss(out2.reconstruction, out2.reconstruction_target, out2.present).backward()
    g2 = _grads(model2)
    assert any(g > 0 for n, g in g2.items() if n.startswith("encoders."))
    assert all(g == 0 for n, g in g2.items() if n.startswith(("shared_projector.", "fusion.", "head.")))


def test_fusion_grad_to_encoder_off_keeps_the_fused_branch_off_the_encoders(specs, task) -> None:
    batch = make_batch(seed=3)
    for flag in (True, False):
        torch.manual_seed(0)
        model = RobultModel(specs, task, RobultConfig(hidden_dim=32, fusion_grad_to_encoder=flag))
        out = model(batch)
        (out.fused.square().sum() + out.fused_logits.square().sum()).backward()
        grads = _grads(model)
        assert any(g > 0 for n, g in grads.items() if n.startswith("fusion."))
        assert any(g > 0 for n, g in grads.items() if n.startswith("encoders.")) is flag
        torch.manual_seed(0)
        ref = RobultModel(specs, task, RobultConfig(hidden_dim=32)).eval()
        model.eval()
        torch.testing.assert_close(model(batch).fused, ref(batch).fused)  # the values do not depend on it


class _MeanPool(nn.Module):
    """A user sequence encoder without an `out_dim` attribute (width inferred)."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(3, 10)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        mask = (torch.arange(x.shape[1])[None] < lengths[:, None]).float()[..., None]
        return self.lin((x * mask).sum(1) / lengths[:, None])


def test_user_encoders_get_an_adapter(specs, task) -> None:
    model = RobultModel(specs, task, RobultConfig(hidden_dim=16), encoders={"c": _MeanPool()})
    assert isinstance(model.encoders.adapters["c"], nn.Linear) and model.encoders.adapters["c"].in_features == 10
    out = model(make_batch(seed=5))
    assert out.hidden.shape == (12, 3, 16)
    with pytest.raises(ValueError, match="unknown modality 'd'"):
        RobultModel(specs, task, encoders={"d": _MeanPool()})


def test_the_model_takes_built_encoders(specs, task) -> None:
    """``encoders`` may be the built :class:`ModalityEncoders` (what the registry passes): the same weights, in the
    same order, as the model building them from its config; a width other than ``hidden_dim`` is refused."""
    from robult.modules.encoders import EncoderConfig, ModalityEncoders

    cfg = RobultConfig(hidden_dim=16, encoder_hidden=(12,))
    torch.manual_seed(0)
    built = RobultModel(specs, task, cfg, ModalityEncoders.from_config(specs, EncoderConfig.of(cfg)))
    torch.manual_seed(0)
    plain = RobultModel(specs, task, cfg)
    torch.manual_seed(0)
    alias = RobultModel.from_config(specs, task, cfg)
    for other in (plain, alias):
        assert other.state_dict().keys() == built.state_dict().keys()
        assert all(torch.equal(v, other.state_dict()[k]) for k, v in built.state_dict().items())
    with pytest.raises(ValueError, match=r"the encoders' width 8 differs from config\.hidden_dim 16"):
        RobultModel(specs, task, cfg, ModalityEncoders.from_config(specs, EncoderConfig(hidden_dim=8)))


def test_transformer_sequence_encoder_ignores_padding(specs, task) -> None:
    torch.manual_seed(0)
    model = RobultModel(specs, task, RobultConfig(hidden_dim=32, sequence_encoder="transformer")).eval()
    batch = _complete(make_batch(seed=6))
    c = batch.inputs["c"].clone()
    steps = torch.arange(c.shape[1])[None, :] >= batch.lengths["c"][:, None]
    c[steps] = float("nan")
    with torch.no_grad():
        a = model(batch).hidden[:, 2]
        b = model(replace(batch, inputs={**batch.inputs, "c": c})).hidden[:, 2]
    torch.testing.assert_close(a, b)


def test_fused_when_complete_option(specs, task) -> None:
    torch.manual_seed(0)
    model = RobultModel(specs, task, RobultConfig(hidden_dim=32, use_fused_when_complete=True)).eval()
    batch = make_batch(seed=7)
    with torch.no_grad():
        out = model(batch)
        p = model.predict_subsets(out, [["a", "b", "c"], ["a"]])
    complete = batch.present.all(1)
    torch.testing.assert_close(p.predictions[0][complete], out.fused_logits[complete])
    assert not torch.allclose(p.predictions[0][~complete], out.fused_logits[~complete])
    torch.testing.assert_close(p.predictions[1][batch.present[:, 0]], out.logits[batch.present[:, 0], 0])


def test_bad_input_errors_name_the_culprit(specs, task) -> None:
    model = RobultModel(specs, task, RobultConfig(hidden_dim=16))
    batch = make_batch(seed=8)
    with pytest.raises(ValueError, match="unknown modality 'd'"):
        model(replace(batch, inputs={**batch.inputs, "d": torch.zeros(12, 2)}))
    with pytest.raises(ValueError, match=r"modality 'b' has per-sample shape \(6,\), expected \(7\)"):
        model(replace(batch, inputs={**batch.inputs, "b": torch.zeros(12, 6)}))
    empty = batch.present.clone()
    empty[3] = False
    with pytest.raises(ValueError, match="sample 3 of the batch has no modality present"):
        model(batch.with_present(empty))
    a = batch.inputs["a"].clone()
    row = int(batch.present[:, 0].nonzero()[0])
    a[row, 2] = float("nan")
    with pytest.raises(ValueError, match=f"modality 'a' holds NaN or Inf in sample {row}"):
        model(replace(batch, inputs={**batch.inputs, "a": a}))
    with pytest.raises(ValueError, match="lengths of modality 'c'"):
        model(replace(batch, lengths={"c": torch.full((12,), 99)}))
    with pytest.raises(ValueError, match="unknown modality 'z' in subset"):
        model.predict(batch, [["a", "z"]])


def test_label_range_errors(task) -> None:
    from robult.batch import validate_batch

    specs = [ModalitySpec("a", "vector", (2,))]
    b = Batch(
        {"a": torch.zeros(3, 2)},
        torch.ones(3, 1, dtype=torch.bool),
        torch.tensor([0, 4, 1]),
        torch.ones(3, dtype=torch.bool),
    )
    with pytest.raises(ValueError, match=r"label 4 is outside the task's range \[0, 3\]"):
        validate_batch(b, specs, task)
    # unlabeled rows are not checked: their targets are never read
    validate_batch(replace(b, labeled=torch.tensor([True, False, True])), specs, task)
    reg = TaskSpec("regression", target_range=(-3, 3))
    with pytest.raises(ValueError, match=r"regression target 3.5 is outside the task's range \[-3, 3\]"):
        validate_batch(replace(b, target=torch.tensor([0.0, 3.5, 1.0])), specs, reg)
    with pytest.raises(ValueError, match="binary target holds 2"):
        validate_batch(replace(b, target=torch.tensor([0.0, 2.0, 1.0])), specs, TaskSpec("binary"))
    with pytest.raises(ValueError, match=r"multilabel target has shape \(3,\), expected \(N, 4\)"):
        validate_batch(b, specs, TaskSpec("multilabel", num_classes=4))


@pytest.mark.parametrize("kind", ["binary", "multilabel", "regression"])
def test_all_task_kinds_train_step(kind: str) -> None:
    torch.manual_seed(0)
    specs = [ModalitySpec("a", "vector", (4,)), ModalitySpec("b", "vector", (3,))]
    task = TaskSpec(kind, num_classes=3 if kind == "multilabel" else 0)
    b = 16
    target = {
        "binary": torch.randint(0, 2, (b,)).float(),
        "multilabel": torch.randint(0, 2, (b, 3)).float(),
        "regression": torch.rand(b) * 6 - 3,
    }[kind]
    batch = Batch(
        {"a": torch.randn(b, 4), "b": torch.randn(b, 3)},
        torch.ones(b, 2, dtype=torch.bool),
        target,
        torch.arange(b) % 2 == 0,
    )
    model = RobultModel(specs, task, RobultConfig(hidden_dim=16))
    loss = RobultLoss(task, 2)
    out = loss(model(batch), batch, epoch=1)
    out.total.backward()
    assert torch.isfinite(out.total)
    assert out.contrastive_labeled > 0 and out.contrastive_unlabeled > 0 and out.reconstruction > 0


@pytest.mark.parametrize("aggregate", ["logit_mean", "feature_mean"])
def test_huge_values_of_one_modality_never_reach_other_subsets(specs, task, aggregate: str) -> None:
    """A modality outside a subset is selected away, not multiplied by 0: inf logits (here from a 1e38 input that
    overflows) in one modality leave every subset without it finite and unchanged."""
    from robult.models.subsets import aggregate_subsets

    torch.manual_seed(0)
    model = RobultModel(specs, task, RobultConfig(hidden_dim=32, aggregate=aggregate)).eval()
    batch = make_batch(seed=21)
    subsets = all_subsets(model.names)
    with torch.no_grad():
        out = model(batch, with_reconstruction=False)
        clean = model.predict_subsets(out, subsets)
        big = out.logits.clone()
        big[:, 0] = torch.full_like(big[:, 0], 1e38) * 10  # inf in modality 0
        feats = torch.cat([out.specific, out.shared], -1)
        big_feats = feats.clone()
        big_feats[:, 0] = float("inf")
        keys, masks = clean.keys, clean.masks
        if aggregate == "logit_mean":
            dirty = aggregate_subsets(keys, masks, big, out.present)
        else:
            dirty = aggregate_subsets(keys, masks, big, out.present, features=big_feats, head=model.head)
    for i, key in enumerate(keys):
        if model.names[0] in key.split("+"):
            continue
        valid = clean.valid[i]
        assert torch.isfinite(dirty.predictions[i][valid]).all(), key
        torch.testing.assert_close(dirty.predictions[i][valid], clean.predictions[i][valid])


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("features", [False, True])
def test_shared_prefix_subset_sums_equal_the_sum_over_every_modality_in_order(weighted: bool, features: bool) -> None:
    """Subsets share the sums of their common prefixes, and the result is bit for bit the plain rule: every
    modality's term, selected (not multiplied) when in the subset and present, added in modality order from 0."""
    from robult.models.subsets import aggregate_subsets, subset_masks

    g = torch.Generator().manual_seed(0)
    b, m, k = 33, 4, 3
    values = torch.randn(b, m, k, generator=g) * 10
    present = torch.rand(b, m, generator=g) > 0.4
    values[~present] = float("nan")  # absent rows are never read
    weights = torch.tensor([1.0, 0.3, 0.1, 1.0]) if weighted else None
    names = ["a", "b", "c", "d"]
    keys, masks = subset_masks(all_subsets(names)[::-1], names)
    head = nn.Linear(k, 2)
    out = aggregate_subsets(
        keys, masks, values, present, features=values if features else None, head=head if features else None,
        weights=weights,
    )  # fmt: skip
    for s, mask in enumerate(masks):
        total, norm = torch.zeros(b, k), torch.zeros(b)
        for j in range(m):
            w = 1.0 if weights is None else weights[j]
            eff = mask[j] & present[:, j]
            total = total + torch.where(eff[:, None], w * values[:, j], 0.0)
            norm = norm + eff.float() * w
        valid = (mask[None] & present).any(1)
        expected = total / norm.clamp(min=torch.finfo(torch.float32).tiny)[:, None]
        if features:
            expected = head(expected)
        expected[~valid] = float("nan")
        assert torch.equal(out.valid[s], valid)
        assert torch.equal(out.predictions[s][valid], expected[valid])
        assert out.predictions[s][~valid].isnan().all()


def test_reconstruction_loss_is_a_squared_norm() -> None:
    """``L_rec`` sums the squared error over the d_h features (METHOD.md v2); ``feature_mean`` divides by d_h."""
    rec = torch.tensor([[[1.0, 2.0, 3.0, 4.0], [0.0, 0.0, 0.0, 0.0]]])
    tgt = torch.zeros(1, 2, 4)
    present = torch.tensor([[True, False]])
    assert reconstruction_loss(rec, tgt, present).item() == pytest.approx(30.0)
    assert reconstruction_loss(rec, tgt, present, feature_mean=True).item() == pytest.approx(7.5)


def test_subset_weights_are_saved_and_old_checkpoints_load_as_the_plain_mean(specs, task) -> None:
    torch.manual_seed(0)
    model = RobultModel(specs, task, RobultConfig(hidden_dim=32)).eval()
    assert model.modality_weights.tolist() == [1.0, 1.0, 1.0]
    batch = make_batch(seed=31)
    out = model(batch, with_reconstruction=False)
    plain = model.predict_subsets(out, all_subsets(model.names))
    model.modality_weights.copy_(torch.tensor([1.0, 0.1, 0.3]))
    weighted = model.predict_subsets(out, all_subsets(model.names))
    for i, key in enumerate(plain.keys):  # a single modality is never rescaled; mixed subsets change
        same = torch.allclose(weighted.predictions[i], plain.predictions[i], equal_nan=True)
        assert same == ("+" not in key), key
    state = model.state_dict()
    assert "modality_weights" in state
    fresh = RobultModel(specs, task, RobultConfig(hidden_dim=32))
    fresh.load_state_dict(state)
    assert fresh.modality_weights.tolist() == pytest.approx([1.0, 0.1, 0.3])
    del state["modality_weights"]  # a checkpoint written before the weights existed
    fresh.load_state_dict(state)
    assert fresh.modality_weights.tolist() == [1.0, 1.0, 1.0]


def test_strong_view_is_a_training_only_fused_prediction(specs, task) -> None:
    """``strong_view > 0``: in training the forward adds ``c_S`` on a perturbed copy (modality and feature dropout),
    which the self-training term treats as one more student of the weak teacher; off, and in evaluation, nothing
    is added and no random number is drawn."""
    batch = make_batch(seed=21)
    torch.manual_seed(0)
    model = RobultModel(specs, task, RobultConfig(hidden_dim=32, strong_view=0.5))
    assert model.eval()(batch).strong_fused_logits is None
    torch.manual_seed(0)
    plain = RobultModel(specs, task, RobultConfig(hidden_dim=32)).train()
    torch.manual_seed(1)
    out_plain = plain(batch)
    assert out_plain.strong_fused_logits is None
    model.load_state_dict(plain.state_dict())
    torch.manual_seed(1)
    out = model.train()(batch)
    assert torch.equal(out.fused_logits, out_plain.fused_logits)  # the weak view is drawn first, as without it
    assert out.strong_fused_logits is not None and out.strong_fused_logits.shape == out.fused_logits.shape
    assert not torch.allclose(out.strong_fused_logits, out.fused_logits)
    # the strong prediction is a student: its loss reaches the fused head
    out.strong_fused_logits.sum().backward()
    assert model.fused_head[-1].weight.grad.abs().sum() > 0  # type: ignore[union-attr]
    loss_cfg = RobultLossConfig(lambda_ulb=0.0, lambda_lb=0.0, lambda_rec=0.0, pseudo_confidence=0.01)
    out = model(batch)
    got = RobultLoss(task, 3, loss_cfg)(out, batch, epoch=10.0).pseudo_label
    logits = torch.cat([out.logits, out.strong_fused_logits[:, None]], dim=1)
    present = torch.cat([out.present, torch.ones(len(batch.labeled), 1, dtype=torch.bool)], dim=1)
    want = pseudo_label_loss(logits, present, batch.labeled, task, 0.01, out.fused_logits).loss
    assert got is not None and got.item() == pytest.approx(want.item(), rel=1e-6)
    with pytest.raises(ValueError, match="strong_view"):
        RobultConfig(strong_view=1.0)
