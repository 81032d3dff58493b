"""The built-in encoder of ``tokens`` modalities: an embedding of the ids (hashed into ``model.token_buckets`` rows)
followed by the configured sequence encoder; padding is never read, negative ids are an error."""

from __future__ import annotations

import pytest
import torch

from robult import Batch, ModalitySpec, TaskSpec
from robult.config import ConfigError, load_config
from robult.models import RobultConfig, RobultModel
from robult.models.late_fusion import LateFusionConfig, LateFusionModel
from robult.modules import (
    ConvSequenceEncoder,
    GRUEncoder,
    TokenEncoder,
    TransformerSequenceEncoder,
    build_encoder,
)

ENCODERS = {"gru": GRUEncoder, "transformer": TransformerSequenceEncoder, "conv": ConvSequenceEncoder}
LENGTHS = torch.tensor([1, 2, 5, 9, 16, 17])


def _ids(seed: int = 0, b: int = 6, t: int = 17, high: int = 40) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, high, (b, t), generator=g)


def _encoder(kind: str, buckets: int = 40, out_dim: int = 12, seed: int = 0) -> TokenEncoder:
    torch.manual_seed(seed)
    spec = ModalitySpec("words", "tokens", (None,))
    encoder = build_encoder(spec, out_dim, kind, token_buckets=buckets)
    assert isinstance(encoder, TokenEncoder)
    return encoder.eval()


@pytest.mark.parametrize("kind", sorted(ENCODERS))
def test_build_encoder_gives_an_embedding_then_the_configured_sequence_encoder(kind: str) -> None:
    encoder = _encoder(kind, buckets=40, out_dim=12)
    assert isinstance(encoder.sequence, ENCODERS[kind])
    # the embedding width is the output width (d_h in a model): 40 rows of 12
    assert tuple(encoder.embedding.weight.shape) == (40, 12)
    assert encoder.out_dim == 12 and encoder.name == "words"
    out = encoder(_ids(), LENGTHS)
    assert out.shape == (6, 12) and torch.isfinite(out).all()


@pytest.mark.parametrize("kind", sorted(ENCODERS))
def test_padding_of_any_value_changes_no_output(kind: str) -> None:
    encoder = _encoder(kind)
    ids = _ids(seed=1)
    g = torch.Generator().manual_seed(2)
    # steps beyond each length hold garbage (huge, negative), then 23 more garbage steps are appended
    padded = torch.cat([ids, torch.randint(-(10**9), 10**9, (6, 23), generator=g)], dim=1)
    beyond = torch.arange(padded.shape[1])[None, :] >= LENGTHS[:, None]
    padded[beyond] = torch.randint(-(10**9), 10**9, (int(beyond.sum()),), generator=g)
    with torch.no_grad():
        a = encoder(ids, LENGTHS)
        b = encoder(padded, LENGTHS)
        alone = torch.cat([encoder(ids[i : i + 1, : LENGTHS[i]], LENGTHS[i : i + 1]) for i in range(6)])
    torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
    torch.testing.assert_close(a, alone, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", sorted(ENCODERS))
def test_ids_beyond_the_buckets_share_rows_by_modulo(kind: str) -> None:
    encoder = _encoder(kind, buckets=40)
    ids = _ids(seed=3, high=40)
    with torch.no_grad():
        base = encoder(ids, LENGTHS)
        multiples = torch.randint(1, 1000, ids.shape, generator=torch.Generator().manual_seed(4))
        wrapped = encoder(ids + 40 * multiples, LENGTHS)
        wrapped_bert = encoder(ids + 30480, LENGTHS)  # 30480 = 762 * 40
        shifted = encoder((ids + 1) % 40, LENGTHS)  # other rows: other outputs
    torch.testing.assert_close(wrapped, base, rtol=0, atol=0)
    torch.testing.assert_close(wrapped_bert, base, rtol=0, atol=0)
    assert (shifted - base).abs().amax(dim=1).min() > 1e-4


def test_default_buckets_give_every_bert_id_its_own_row() -> None:
    assert RobultConfig().token_buckets == 32768 > 30522
    model = RobultModel([ModalitySpec("text", "tokens", (8,))], TaskSpec("regression"), RobultConfig(hidden_dim=8))
    encoder = model.encoders.encoders["text"]
    assert isinstance(encoder, TokenEncoder) and tuple(encoder.embedding.weight.shape) == (32768, 8)
    assert isinstance(encoder.sequence, GRUEncoder)


def test_a_negative_id_within_the_length_is_an_error_naming_the_modality() -> None:
    encoder = _encoder("gru")
    ids = _ids(seed=5)
    ids[3, 4] = -7  # row 3 has length 9: step 4 is read
    with pytest.raises(ValueError, match=r"modality 'words': negative token id -7 at step 4"):
        encoder(ids, LENGTHS)
    ids[3, 4] = 1
    ids[3, 12] = -7  # beyond its length: padding, never read
    torch.testing.assert_close(encoder(ids, LENGTHS), encoder(ids.clamp(min=0), LENGTHS))
    with pytest.raises(ValueError, match=r"modality 'words': token ids must be integers, got torch.float32"):
        encoder(ids.float(), LENGTHS)


def test_bucket_count_is_checked() -> None:
    with pytest.raises(ValueError, match=r"modality 'words': token_buckets must be >= 1, got 0"):
        TokenEncoder(8, 0, name="words")
    with pytest.raises(ConfigError, match=r"key 'model.token_buckets'"):
        load_config(None, ["model.token_buckets=0"])
    assert load_config(None, ["model.token_buckets=100"]).model.token_buckets == 100


def test_gradient_reaches_the_embedding_rows_of_the_read_ids_only() -> None:
    encoder = _encoder("gru", buckets=40).train()
    ids = _ids(seed=6, high=30)  # ids 0..29 within the lengths
    beyond = torch.arange(ids.shape[1])[None, :] >= LENGTHS[:, None]
    ids[beyond] = 35  # padding: ids 35 (and 0 after masking), never read
    ids[~beyond & (ids == 0)] = 1
    encoder(ids, LENGTHS).pow(2).sum().backward()
    grad = encoder.embedding.weight.grad
    assert grad is not None
    norms = grad.norm(dim=1)
    read = torch.zeros(40, dtype=torch.bool)
    read[ids[~beyond].unique()] = True
    assert (norms[read] > 0).all()
    assert torch.count_nonzero(norms[~read]) == 0  # rows 0 (masked padding), 35 and the unused ones get nothing
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in encoder.sequence.parameters())


@pytest.mark.parametrize("model_cls", [RobultModel, LateFusionModel])
@pytest.mark.parametrize("kind", ["gru", "conv"])
def test_models_take_a_tokens_modality(model_cls: type, kind: str) -> None:
    """A tokens modality next to a vector one: absent rows may hold anything (even negative ids), padding is never
    read, and the loss's gradient reaches the embedding."""
    specs = [ModalitySpec("words", "tokens", (None,)), ModalitySpec("v", "vector", (5,))]
    torch.manual_seed(0)
    cfg = RobultConfig(hidden_dim=16, shared_dim=8, specific_dim=8, sequence_encoder=kind, token_buckets=64)
    config = cfg if model_cls is RobultModel else LateFusionConfig.of(cfg)
    model = model_cls.from_config(specs, TaskSpec("multiclass", num_classes=3), config).eval()
    ids = _ids(seed=7, high=64)
    present = torch.ones(6, 2, dtype=torch.bool)
    present[2, 0] = False
    ids[2] = -5  # absent: never encoded
    g = torch.Generator().manual_seed(8)
    batch = Batch(
        inputs={"words": ids, "v": torch.randn(6, 5, generator=g)},
        present=present,
        target=torch.tensor([0, 1, 2, 0, 1, 2]),
        labeled=torch.ones(6, dtype=torch.bool),
        lengths={"words": LENGTHS},
    )
    longer = torch.cat([ids, torch.full((6, 4), -1)], dim=1)
    with torch.no_grad():
        out = model(batch)
        longer_batch = Batch({**batch.inputs, "words": longer}, present, batch.target, batch.labeled, batch.lengths)
        out_padded = model(longer_batch)
    assert torch.isfinite(out.logits).all()
    torch.testing.assert_close(out.logits, out_padded.logits, rtol=0, atol=1e-6)
    assert (out.hidden[2, 0] == 0).all() and out.hidden[~present].abs().sum() == 0
    model.train()
    torch.nn.functional.cross_entropy(model(batch).logits[:, 0], batch.target).backward()
    grad = model.encoders.encoders["words"].embedding.weight.grad
    assert grad is not None and grad.abs().sum() > 0


def _token_predictor(kind: str):
    from robult.inference import Predictor

    specs = [ModalitySpec("words", "tokens", (None,)), ModalitySpec("v", "vector", (5,))]
    task = TaskSpec("multiclass", num_classes=3)
    torch.manual_seed(0)
    cfg = RobultConfig(hidden_dim=16, shared_dim=8, specific_dim=8, sequence_encoder=kind, token_buckets=64)
    return Predictor(RobultModel(specs, task, cfg).eval(), specs, task, cfg)


@pytest.mark.parametrize("kind", ["gru", "conv"])
def test_torchscript_export_of_a_free_length_token_modality(kind: str, tmp_path) -> None:
    """Traced on 5 steps, the exported module serves 17 (and ignores padding garbage) as the predictor does."""
    import warnings

    from robult.inference.export import export_torchscript

    predictor = _token_predictor(kind)
    out = export_torchscript(predictor, tmp_path / "m.pt")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        module = torch.jit.load(str(out))
    ids, v = _ids(seed=9, high=200), torch.randn(6, 5, generator=torch.Generator().manual_seed(10))
    present = torch.tensor([[1, 1], [1, 0], [0, 1], [1, 1], [1, 1], [1, 0]], dtype=torch.bool)
    ids[~present[:, 0]] = -3  # absent: never read
    expected = predictor.predict({"words": ids.numpy(), "v": v.numpy()}, present.numpy(), lengths={"words": LENGTHS})
    beyond = torch.arange(17)[None, :] >= LENGTHS[:, None]
    with torch.no_grad():
        got = module(present, ids, LENGTHS, v)
        got_garbage = module(present, ids.masked_fill(beyond, 10**6), LENGTHS, v)
    np_expected = torch.from_numpy(expected.probabilities)
    torch.testing.assert_close(got, np_expected, rtol=0, atol=1e-5)
    torch.testing.assert_close(got_garbage, got, rtol=0, atol=1e-6)


def test_onnx_export_of_a_free_length_gru_token_modality_is_refused(tmp_path) -> None:
    pytest.importorskip("onnx", reason="onnx (robult[onnx]) is not installed")
    from robult.inference.export import export_onnx

    with pytest.raises(ValueError, match=r"modality 'words': ONNX export unrolls its GRU .* length is free"):
        export_onnx(_token_predictor("gru"), tmp_path / "m.onnx")


def test_onnx_export_of_a_free_length_conv_token_modality_matches_the_predictor(tmp_path) -> None:
    pytest.importorskip("onnx", reason="onnx (robult[onnx]) is not installed")
    ort = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed")
    from robult.inference.export import export_onnx

    predictor = _token_predictor("conv")
    session = ort.InferenceSession(str(export_onnx(predictor, tmp_path / "m.onnx")), providers=["CPUExecutionProvider"])
    ids, v = _ids(seed=11, high=200), torch.randn(6, 5, generator=torch.Generator().manual_seed(12))
    present = torch.tensor([[1, 1], [1, 0], [0, 1], [1, 1], [1, 1], [1, 0]], dtype=torch.bool)
    expected = predictor.predict({"words": ids.numpy(), "v": v.numpy()}, present.numpy(), lengths={"words": LENGTHS})
    feed = {"present": present.numpy(), "words": ids.numpy(), "words_lengths": LENGTHS.numpy(), "v": v.numpy()}
    torch.testing.assert_close(
        torch.from_numpy(session.run(None, feed)[0]), torch.from_numpy(expected.probabilities), rtol=0, atol=1e-5
    )


def test_train_run_learns_from_an_in_memory_tokens_modality(tmp_path) -> None:
    """A class told by one token (ids up to 10^6, so hashed into 512 rows; noise elsewhere), next to a noise vector:
    two epochs of `train_run` with the built-in token encoder learn it from the tokens alone (0.87 accuracy)."""
    from robult.config import load_config
    from robult.data.arrays import bundle_from_arrays
    from robult.training import train_run

    from ..conftest import TINY_TWO_EPOCHS

    g = torch.Generator().manual_seed(0)
    n, t = 300, 10
    labels = torch.randint(0, 3, (n,), generator=g)
    lengths = torch.randint(3, t + 1, (n,), generator=g)
    ids = torch.randint(1000, 10**6, (n, t), generator=g)
    ids[torch.arange(n), (torch.rand(n, generator=g) * lengths).long()] = torch.tensor([7, 500_011, 999_999])[labels]
    ids[torch.arange(t)[None, :] >= lengths[:, None]] = -1  # padding: never read
    specs = [ModalitySpec("words", "tokens", (t,)), ModalitySpec("noise", "vector", (4,))]
    data = bundle_from_arrays(
        {"words": ids, "noise": torch.randn(n, 4, generator=g)},
        labels,
        TaskSpec("multiclass", num_classes=3),
        modalities=specs,
        lengths={"words": lengths},
        name="tokens",
    )
    cfg = load_config(
        None,
        [*TINY_TWO_EPOCHS, "train.label_ratio=1.0", "train.lr=0.01", "model.token_buckets=512", f"out_dir={tmp_path}"],
    )
    result = train_run(cfg, bundle=data, overwrite=True)
    accuracy = {k: v["accuracy"] for k, v in result.evaluation.subsets.items()}
    assert accuracy["words"] >= 0.8 and accuracy["noise"] < 0.6, accuracy  # chance: 1/3
