"""Built-in encoders: sequence encoders never read padding; the 1-D CNN is selectable by name."""

from __future__ import annotations

import pytest
import torch

from robult import Batch, ModalitySpec, TaskSpec
from robult.models import RobultConfig, RobultModel
from robult.modules import ConvImageEncoder, ConvSequenceEncoder, GRUEncoder, build_encoder


def _sequences(seed: int = 0, b: int = 6, t: int = 17, d: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, t, d, generator=g)
    lengths = torch.tensor([1, 2, 5, 9, 16, 17])[:b]
    return x, lengths


@pytest.mark.parametrize("encoder_cls", [ConvSequenceEncoder, GRUEncoder])
@pytest.mark.parametrize("fill", ["zeros", "nan", "noise"])
def test_appending_padding_does_not_change_the_output(encoder_cls: type, fill: str) -> None:
    torch.manual_seed(0)
    encoder = encoder_cls(8, 12).eval()
    x, lengths = _sequences()
    # padding beyond each length holds junk, then 23 more padded steps are appended
    junk = {"zeros": torch.zeros, "nan": lambda *s: torch.full(s, float("nan")), "noise": torch.randn}[fill]
    padded = torch.cat([x, junk(6, 23, 8)], dim=1)
    steps = torch.arange(padded.shape[1])[None, :] >= lengths[:, None]
    padded[steps] = junk(int(steps.sum()), 8)
    with torch.no_grad():
        a = encoder(x, lengths)
        b = encoder(padded, lengths)
        # and each sample alone, cut to its length: the same output
        alone = torch.cat([encoder(x[i : i + 1, : lengths[i]], lengths[i : i + 1]) for i in range(len(lengths))])
    assert torch.isfinite(a).all()
    torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
    torch.testing.assert_close(a, alone, rtol=1e-5, atol=1e-5)


def test_conv_sequence_encoder_gradients_do_not_reach_padding() -> None:
    torch.manual_seed(0)
    encoder = ConvSequenceEncoder(8, 12, width=4, num_layers=3)
    x, lengths = _sequences(seed=1)
    x.requires_grad_(True)
    encoder(x, lengths).sum().backward()
    assert x.grad is not None
    pad = torch.arange(x.shape[1])[None, :] >= lengths[:, None]
    assert torch.count_nonzero(x.grad[pad]) == 0
    assert torch.count_nonzero(x.grad[~pad]) > 0


def test_conv_sequence_encoder_lengths_follow_the_strides() -> None:
    encoder = ConvSequenceEncoder(3, 5, width=2, num_layers=3, kernel=5)
    # widths 2, 4, 8; the pooled features are mean and max of the last block: 16 -> out 5
    assert [c.out_channels for c in encoder.convs] == [2, 4, 8]
    assert [c.stride[0] for c in encoder.convs] == [1, 2, 2]
    assert encoder.proj.in_features == 16
    out = encoder(torch.randn(3, 9, 3), torch.tensor([1, 4, 9]))
    assert out.shape == (3, 5)
    with pytest.raises(ValueError, match="kernel must be odd"):
        ConvSequenceEncoder(3, 5, kernel=4)


def test_sequence_encoder_is_chosen_by_name() -> None:
    spec = ModalitySpec("audio", "sequence", (None, 8))
    assert isinstance(build_encoder(spec, 16, "conv"), ConvSequenceEncoder)
    assert isinstance(build_encoder(spec, 16, "gru"), GRUEncoder)
    assert isinstance(build_encoder(ModalitySpec("image", "image", (1, 16, 15)), 16), ConvImageEncoder)
    with pytest.raises(ValueError, match="unknown sequence encoder 'lstm'; use 'gru', 'transformer' or 'conv'"):
        build_encoder(spec, 16, "lstm")


def test_robult_model_with_conv_audio_and_image_encoders() -> None:
    specs = [ModalitySpec("audio", "sequence", (None, 8)), ModalitySpec("image", "image", (1, 16, 15))]
    task = TaskSpec("multiclass", num_classes=10)
    torch.manual_seed(0)
    model = RobultModel(specs, task, RobultConfig(hidden_dim=16, sequence_encoder="conv", dropout=0.0)).eval()
    assert isinstance(model.encoders.encoders["audio"], ConvSequenceEncoder)
    x, lengths = _sequences(seed=2)
    present = torch.ones(6, 2, dtype=torch.bool)
    present[0, 0] = False  # audio absent: its rows may hold NaN
    x[0] = float("nan")
    batch = Batch(
        inputs={"audio": x, "image": torch.randn(6, 1, 16, 15)},
        present=present,
        target=torch.arange(6),
        labeled=torch.ones(6, dtype=torch.bool),
        lengths={"audio": lengths},
    )
    with torch.no_grad():
        out = model(batch)
        longer = torch.cat([x, torch.full((6, 5, 8), float("nan"))], dim=1)
        out_padded = model(
            Batch({**batch.inputs, "audio": longer}, present, batch.target, batch.labeled, {"audio": lengths})
        )
    assert torch.isfinite(out.logits).all()
    torch.testing.assert_close(out.logits, out_padded.logits, rtol=0, atol=1e-6)


def test_conv_sequence_encoder_traced_on_short_inputs_serves_longer_ones() -> None:
    """The exported (traced) encoder keeps every step and no length baked in: traced on T = 5, run on T = 17."""
    torch.manual_seed(0)
    encoder = ConvSequenceEncoder(8, 12, width=4).eval()
    x, lengths = _sequences(seed=3)
    with torch.no_grad():
        traced = torch.jit.trace(encoder, (torch.randn(2, 5, 8), torch.tensor([5, 3])))
        torch.testing.assert_close(traced(x, lengths), encoder(x, lengths), rtol=1e-5, atol=1e-6)
