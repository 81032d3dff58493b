"""Export a trained model: a TorchScript file that predicts from raw inputs and a presence mask, and the model
artefact of a run trained before runs wrote one.

The TorchScript module's inputs, in order, are ``present`` (``bool [B, M]``, columns in modality order) and, per
modality, its raw input ``[B, *shape]`` (float32; int64 for tokens) followed, for sequence / tokens modalities, by
its lengths ``int64 [B]``. It returns the predictions aggregated over each row's present modalities, exactly what
:meth:`robult.inference.Predictor.predict` returns: probabilities ``[B, K]`` (multiclass), ``[B]`` (binary,
probability of class 1), ``[B, L]`` (multilabel) or values ``[B]`` (regression). The training split's
normalisation is inside; non-finite values of absent entries are ignored; a row with no modality present gives NaN.
The input layout is saved in the file as the extra file ``robult.json`` (``torch.jit.load(path, _extra_files=...)``).
"""

from __future__ import annotations

import io
import json
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from robult.batch import Batch
from robult.inference.artefact import MODEL_DIR, model_dir
from robult.inference.inputs import normalize
from robult.inference.prediction import outputs_from_scores
from robult.inference.predictor import Predictor, load
from robult.specs import ModalityKind, TaskKind
from robult.utils.io import atomic_open

TORCHSCRIPT_NAME = "model.torchscript.pt"
ONNX_NAME = "model.onnx"
ONNX_OPSET = 17
EXTRA_FILE = "robult.json"


def _dense_encoders(encoders: Any, unroll_gru: bool = False) -> Any:
    """A replacement for ``ModalityEncoders.forward`` that encodes every row and zeroes the absent ones (a traced
    graph cannot select the present rows by a data-dependent branch; present rows get the same features). With
    ``unroll_gru`` (for the ONNX exporter) GRU encoders run unrolled (:func:`_encode_unrolled`)."""

    def forward(batch: Batch) -> Tensor:
        out = []
        for m, spec in enumerate(encoders.modalities):
            x = batch.inputs[spec.name]
            enc = encoders.encoders[spec.name]
            if unroll_gru:
                h = _encode_unrolled(enc, spec.is_sequential, x, batch.lengths.get(spec.name))
            else:
                h = enc(x, batch.lengths[spec.name]) if spec.is_sequential else enc(x)
            h = encoders.adapters[spec.name](h)
            out.append(torch.where(batch.present[:, m, None], h, torch.zeros_like(h)))
        return torch.stack(out, dim=1)

    return forward


def _unrolled_gru(gru: nn.GRU, x: Tensor, lengths: Tensor) -> Tensor:
    """The final hidden states ``[layers * dirs, B, H]`` of ``gru`` over the packed ``x`` (``[B, T, d]``, batch
    first) computed step by step with masks instead of packing (which torch's ONNX exporter cannot export unsorted):
    a row's state stops changing after its length (forward) or starts changing at its last valid step (backward)."""
    dirs = 2 if gru.bidirectional else 1
    steps = x.shape[1]
    finals: list[Tensor] = []
    layer_in = x
    for layer in range(gru.num_layers):
        outs = []
        for d in range(dirs):
            sfx = f"_l{layer}" + ("_reverse" if d else "")
            w_ih, w_hh = getattr(gru, f"weight_ih{sfx}"), getattr(gru, f"weight_hh{sfx}")
            b_ih, b_hh = getattr(gru, f"bias_ih{sfx}", None), getattr(gru, f"bias_hh{sfx}", None)
            gi_all = nn.functional.linear(layer_in, w_ih, b_ih)  # [B, T, 3H]
            h = x.new_zeros(x.shape[0], gru.hidden_size)
            seq: list[Tensor] = [h] * steps
            for t in range(steps - 1, -1, -1) if d else range(steps):
                gi = gi_all[:, t]
                gh = nn.functional.linear(h, w_hh, b_hh)
                i_r, i_z, i_n = gi.chunk(3, dim=1)
                h_r, h_z, h_n = gh.chunk(3, dim=1)
                r, z = torch.sigmoid(i_r + h_r), torch.sigmoid(i_z + h_z)
                new = (1 - z) * torch.tanh(i_n + r * h_n) + z * h
                h = torch.where((lengths > t)[:, None], new, h)
                seq[t] = h
            finals.append(h)
            outs.append(torch.stack(seq, dim=1))
        layer_in = torch.cat(outs, dim=2)
    return torch.stack(finals, dim=0)


def _encode_unrolled(enc: nn.Module, sequential: bool, x: Tensor, lengths: Tensor | None) -> Tensor:
    """One modality's encoder with a GRU unrolled (:func:`_unrolled_gru`), for the ONNX exporter (a token encoder's
    embedding runs first, then its sequence encoder is treated as a sequence modality's)."""
    from robult.modules.encoders import GRUEncoder, TokenEncoder

    if isinstance(enc, TokenEncoder):
        x, enc = enc.embed(x, lengths), enc.sequence
    if isinstance(enc, GRUEncoder):
        assert lengths is not None
        h = _unrolled_gru(enc.gru, x, lengths.clamp(min=1))
        dirs = 2 if enc.gru.bidirectional else 1
        return enc.proj(h[-dirs:].transpose(0, 1).reshape(x.shape[0], -1))
    return enc(x, lengths) if sequential else enc(x)


class ExportedModel(nn.Module):
    """Raw inputs + presence mask -> predictions (see the module docstring); traced by :func:`export_torchscript`."""

    def __init__(self, predictor: Predictor) -> None:
        super().__init__()
        self.model = predictor.model
        self.specs = list(predictor.modalities)
        self.kind = predictor.task.kind
        self.stats = nn.ParameterDict()
        for name, (mean, std) in predictor.normalization.items():
            self.stats[f"{name}__mean"] = nn.Parameter(mean.clone(), requires_grad=False)
            self.stats[f"{name}__std"] = nn.Parameter(std.clone(), requires_grad=False)

    def forward(self, present: Tensor, *args: Tensor) -> Tensor:
        inputs: dict[str, Tensor] = {}
        lengths: dict[str, Tensor] = {}
        i = 0
        present = present.bool()
        for m, spec in enumerate(self.specs):
            x = args[i]
            i += 1
            if spec.is_sequential:
                lengths[spec.name] = torch.where(present[:, m], args[i].long(), torch.ones_like(args[i].long()))
                i += 1
            if spec.kind != ModalityKind.TOKENS:
                x = x.float()
                x = torch.where(torch.isfinite(x), x, torch.zeros_like(x))
                if f"{spec.name}__mean" in self.stats:
                    x = normalize(x, self.stats[f"{spec.name}__mean"], self.stats[f"{spec.name}__std"])
            else:
                x = torch.where(present[:, m].reshape(-1, *([1] * (x.ndim - 1))), x.long(), torch.zeros_like(x.long()))
            inputs[spec.name] = x
        b = present.shape[0]
        batch = Batch(inputs, present, torch.zeros(b), torch.zeros(b, dtype=torch.bool), lengths)
        output = self.model(batch, with_reconstruction=False, validate=False)
        all_mask = torch.ones(1, len(self.specs), dtype=torch.bool)
        return outputs_from_scores(self.model.predict_subsets(output, all_mask).predictions[0], self.kind)


def example_inputs(predictor: Predictor, batch: int = 4, seq_len: int = 5) -> tuple[Tensor, ...]:
    """Inputs in the exported module's order (all present), for tracing and as a usage example."""
    g = torch.Generator().manual_seed(0)
    args: list[Tensor] = [torch.ones(batch, len(predictor.modalities), dtype=torch.bool)]
    for spec in predictor.modalities:
        shape = [seq_len if s is None else int(s) for s in spec.shape]
        if spec.kind == ModalityKind.TOKENS:
            args.append(torch.zeros(batch, *shape, dtype=torch.long))
        else:
            args.append(torch.randn(batch, *shape, generator=g))
        if spec.is_sequential:
            args.append(torch.full((batch,), shape[0], dtype=torch.long))
    return tuple(args)


def input_layout(predictor: Predictor) -> list[dict[str, Any]]:
    """The exported module's inputs: name, shape (``B`` the batch) and dtype, in order."""
    layout: list[dict[str, Any]] = [
        {"name": "present", "shape": ["B", len(predictor.modalities)], "dtype": "bool", "columns": []}
    ]
    layout[0]["columns"] = predictor.modality_names
    for spec in predictor.modalities:
        dtype = "int64" if spec.kind == ModalityKind.TOKENS else "float32"
        shape = ["B", *("T" if s is None else int(s) for s in spec.shape)]
        layout.append({"name": spec.name, "shape": shape, "dtype": dtype})
        if spec.is_sequential:
            layout.append({"name": f"{spec.name}_lengths", "shape": ["B"], "dtype": "int64"})
    return layout


def _prepare_export(
    model: str | Path | Predictor, out: str | Path | None, default_name: str, what: str
) -> tuple[Predictor, Path, ExportedModel, nn.Module]:
    """The predictor (loaded from a path, or given), the output file (default ``<model dir>/<default_name>``), the
    eval-mode wrapper to trace, and the model's encoders (robult's ``ModalityEncoders``, required)."""
    if isinstance(model, Predictor):
        predictor = model
        if out is None:
            raise ValueError(f"{what}(predictor): give the output path")
    else:
        predictor = load(model)
        if out is None:
            out = model_dir(Path(model)) / default_name
    predictor.model.eval()
    wrapper = ExportedModel(predictor).eval()
    encoders = getattr(predictor.model, "encoders", None)
    if encoders is None or not hasattr(encoders, "adapters"):
        raise ValueError(f"{type(predictor.model).__name__}: export needs robult's ModalityEncoders")
    return predictor, Path(out), wrapper, encoders


def export_torchscript(model: str | Path | Predictor, out: str | Path | None = None) -> Path:
    """Trace the predictor's model into one TorchScript file (default ``<model dir>/model.torchscript.pt``)."""
    predictor, out, wrapper, encoders = _prepare_export(model, out, TORCHSCRIPT_NAME, "export_torchscript")
    encoders.forward = _dense_encoders(encoders)  # instance attribute: only while tracing
    # saved without requires_grad, so the file's outputs need no torch.no_grad() before .numpy()
    trainable = [p for p in wrapper.parameters() if p.requires_grad]
    for p in trainable:
        p.requires_grad_(False)
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            traced = torch.jit.trace(wrapper, example_inputs(predictor), check_trace=False)
        meta = _metadata(predictor, "robult-torchscript")
        with atomic_open(out, "wb") as fh, warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # TorchScript is deprecated in torch 2.13, still works
            torch.jit.save(traced, fh, _extra_files={EXTRA_FILE: json.dumps(meta)})
    finally:
        del encoders.forward
        for p in trainable:
            p.requires_grad_(True)
    return out


def _metadata(predictor: Predictor, fmt: str) -> dict[str, Any]:
    """What an exported file carries about itself: format, the model's info, the input layout and the output."""
    return {
        "format": fmt,
        "info": {k: predictor.info.get(k) for k in ("robult_version", "method", "dataset", "task", "modalities")},
        "inputs": input_layout(predictor),
        "output": {
            TaskKind.MULTICLASS: "probabilities [B, K]",
            TaskKind.BINARY: "probability of class 1 [B]",
            TaskKind.MULTILABEL: "probabilities [B, L]",
            TaskKind.REGRESSION: "values [B]",
        }[predictor.task.kind],
    }


def export_onnx(model: str | Path | Predictor, out: str | Path | None = None) -> Path:
    """Export the predictor's model as ONNX (default ``<model dir>/model.onnx``; needs the ``onnx`` extra).

    The graph is the TorchScript export's (same inputs, named as in :func:`input_layout`, ``present`` first; the
    batch and free sequence lengths are dynamic axes; one output ``output``), traced by torch's TorchScript-based
    ONNX exporter at opset :data:`ONNX_OPSET`, checked with ``onnx.checker``; the layout is stored in the model's
    metadata under ``robult.json``.
    """
    try:
        import onnx
    except ImportError:
        raise ValueError("ONNX export needs the onnx package: pip install 'robult[onnx]'") from None
    predictor, out, wrapper, encoders = _prepare_export(model, out, ONNX_NAME, "export_onnx")
    layout = input_layout(predictor)
    names = [entry["name"] for entry in layout]
    axes = {
        e["name"]: {
            i: ("batch" if d == "B" else f"{e['name']}_T") for i, d in enumerate(e["shape"]) if isinstance(d, str)
        }
        for e in layout
    }
    axes["output"] = {0: "batch"}
    from robult.modules.encoders import GRUEncoder, TokenEncoder

    for spec in predictor.modalities:
        enc = encoders.encoders[spec.name]
        if isinstance(enc, TokenEncoder):
            enc = enc.sequence
        if isinstance(enc, GRUEncoder) and spec.shape[0] is None:
            raise ValueError(
                f"modality {spec.name!r}: ONNX export unrolls its GRU over a fixed number of steps, but its length is "
                "free; use --format torchscript"
            )
    buffer = io.BytesIO()
    encoders.forward = _dense_encoders(encoders, unroll_gru=True)  # instance attribute: only while tracing
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                wrapper,
                example_inputs(predictor),
                buffer,
                input_names=names,
                output_names=["output"],
                dynamic_axes=axes,
                opset_version=ONNX_OPSET,
                dynamo=False,  # the traced graph (no data-dependent branches, see _dense_encoders); no onnxscript
            )
    finally:
        del encoders.forward
    proto = onnx.load_from_string(buffer.getvalue())
    onnx.checker.check_model(proto)
    entry = proto.metadata_props.add()
    entry.key, entry.value = EXTRA_FILE, json.dumps(_metadata(predictor, "robult-onnx"))
    with atomic_open(out, "wb") as fh:
        fh.write(proto.SerializeToString())
    return out


__all__ = [
    "MODEL_DIR",
    "ExportedModel",
    "export_onnx",
    "export_torchscript",
    "input_layout",
]
