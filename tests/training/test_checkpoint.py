"""Loading a checkpoint's weights (``robult.training.checkpoint.load_weights``): its keys and shapes are compared with
the module's before anything is loaded, and a misfit is one line naming the file and the key; the older layouts a
model reads itself (RobultModel without ``modality_weights``, a shared ``[d]`` norm) still load."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import torch
from torch import nn

from robult.models import RobultConfig, RobultModel
from robult.modules.layers import GroupedMLP
from robult.training.checkpoint import load_weights, state_dict_misfit, write_checksummed


class _Small(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.Linear(4, 3)
        self.head = nn.Linear(3, 2)
        self.register_buffer("scale", torch.ones(2))


def _checkpoint(path: Path, state: dict[str, torch.Tensor], epoch: int = 5) -> Path:
    buf = io.BytesIO()
    torch.save({"state_dict": state, "epoch": epoch}, buf)
    write_checksummed(path, buf.getvalue())
    return path


def _saved(seed: int = 1) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return {k: v.clone() for k, v in _Small().state_dict().items()}


def _refused(tmp_path: Path, state: dict[str, torch.Tensor]) -> str:
    """The error of loading ``state`` into a fresh module, which must keep its weights."""
    torch.manual_seed(0)
    module = _Small()
    before = {k: v.clone() for k, v in module.state_dict().items()}
    path = _checkpoint(tmp_path / "last.ckpt", state)
    with pytest.raises(ValueError) as err:
        load_weights(module, path)
    assert all(torch.equal(before[k], v) for k, v in module.state_dict().items())  # nothing loaded
    line = str(err.value)
    assert "\n" not in line and line.startswith(f"{path}: does not fit this run's model"), line
    return line


def test_a_fitting_checkpoint_loads_and_gives_its_epoch(tmp_path: Path) -> None:
    state = _saved()
    module = _Small()
    assert load_weights(module, _checkpoint(tmp_path / "best.ckpt", state, epoch=7)) == 7
    assert all(torch.equal(state[k], v) for k, v in module.state_dict().items())


def test_a_missing_key_is_named(tmp_path: Path) -> None:
    state = _saved()
    del state["head.bias"]
    assert _refused(tmp_path, state).endswith(": it lacks 'head.bias'")


def test_an_extra_key_is_named(tmp_path: Path) -> None:
    state = {**_saved(), "decoder.weight": torch.zeros(4, 3)}
    assert _refused(tmp_path, state).endswith(": it holds 'decoder.weight', which the model has not")


def test_a_wrong_shape_is_named_with_both_shapes(tmp_path: Path) -> None:
    state = _saved()
    state["encoder.weight"] = torch.zeros(5, 4)  # a checkpoint of another input width
    line = _refused(tmp_path, state)
    assert line.endswith(": it holds 'encoder.weight' with shape [5, 4], the model's is [3, 4]")


def test_the_first_misfit_is_named_and_the_others_counted(tmp_path: Path) -> None:
    state = _saved()
    state["head.weight"] = torch.zeros(9, 3)
    del state["scale"]
    state["extra"] = torch.zeros(1)
    line = _refused(tmp_path, state)  # in the module's order: its own buffer before its children's parameters
    assert line.endswith(": it lacks 'scale' (and 2 more key(s) that do not fit)")


def test_a_checkpoint_without_state_dict_is_named(tmp_path: Path) -> None:
    buf = io.BytesIO()
    torch.save({"epoch": 1}, buf)
    write_checksummed(tmp_path / "x.ckpt", buf.getvalue())
    with pytest.raises(ValueError, match=r"x\.ckpt: no 'state_dict' key; is it a robult checkpoint\?"):
        load_weights(_Small(), tmp_path / "x.ckpt")


def test_the_layouts_a_model_reads_itself_still_fit(specs, task) -> None:
    """The comparison sees the state as the module loads it: RobultModel fills in ``modality_weights`` that older
    checkpoints lack, and GroupedLayerNorm expands one shared ``[d]`` weight; neither is a misfit, and checking
    changes nothing."""
    torch.manual_seed(0)
    model = RobultModel(specs, task, RobultConfig(hidden_dim=16))
    state = {k: v.clone() for k, v in model.state_dict().items()}
    del state["modality_weights"]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert state_dict_misfit(model, state) is None
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    state.pop("encoders.encoders.a.net.0.weight")
    assert state_dict_misfit(model, state) == "it lacks 'encoders.encoders.a.net.0.weight'"

    mlp = GroupedMLP(2, 5, (8,), 3)
    old = {k: v.clone() for k, v in mlp.state_dict().items()}
    old["1.weight"] = torch.randn(8)  # the single nn.LayerNorm of older models
    assert state_dict_misfit(mlp, old) is None
    old["1.bias"] = torch.randn(7)  # neither the old layout nor the new one
    assert state_dict_misfit(mlp, old) == "it holds '1.bias' with shape [7], the model's is [2, 8]"
