"""The diagnostics figure reads without the code: every panel has a labelled y axis, a modality has one colour in
every panel, methods differ by line style (seeds averaged), and the figure has one legend."""

from __future__ import annotations

from pathlib import Path

from matplotlib.colors import to_hex

from robult.diagnostics import plot_diagnostics

KEYS = ["diag/u_norm/audio", "diag/u_norm/text", "diag/pu_weight_mean", "diag/pu_weight_low", "diag/pu_weight_high"]
KEYS += ["diag/pseudo_label_acc", "diag/alignment_zs", "diag/alignment_zz", "diag/uniformity_s"]
KEYS += ["diag/uniformity_z/audio", "diag/uniformity_z/text", "val/score"]


def _run(root: Path, name: str, offset: float) -> Path:
    logs = root / name / "logs"
    logs.mkdir(parents=True)
    rows = ["epoch,step," + ",".join(KEYS)]
    rows += [f"{e},{e},{','.join(str(offset + e + i / 10) for i in range(len(KEYS)))}" for e in range(3)]
    (logs / "metrics.csv").write_text("\n".join(rows) + "\n")
    return root / name


def test_labelled_axes_one_colour_per_modality_one_legend(tmp_path: Path) -> None:
    runs = [_run(tmp_path, f"{m}-r0.05-s{s}", s) for m in ("robult", "supervised") for s in (0, 1)]
    fig = plot_diagnostics(runs, tmp_path / "diag.png")
    assert (tmp_path / "diag.png").read_bytes()[:4] == b"\x89PNG"
    axes = fig.axes
    assert len(axes) == 6 and all(ax.get_ylabel() and ax.get_xlabel() == "epoch" for ax in axes)
    assert all(ax.get_legend() is None for ax in axes) and len(fig.legends) == 1
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend == ["modality audio", "modality text", "robult-r0.05", "supervised-r0.05"]
    colours = {h.get_label(): to_hex(h.get_color()) for h in fig.legends[0].legend_handles}
    # the U-norm panel: one line per (method, modality), seeds averaged, in the modality's colour
    u_lines = axes[0].get_lines()
    assert len(u_lines) == 4
    assert {to_hex(line.get_color()) for line in u_lines} == {colours["modality audio"], colours["modality text"]}
    assert {line.get_linestyle() for line in u_lines} == {"-", "--"}
    # seed 0 and seed 1 differ by 1 in every value: the mean is drawn
    audio = next(line for line in u_lines if to_hex(line.get_color()) == colours["modality audio"])
    assert list(audio.get_ydata()) == [0.5, 1.5, 2.5]
    # the uniformity panel holds S in grey and each Z^m in its modality's colour
    uni = {to_hex(line.get_color()) for line in axes[4].get_lines()}
    assert colours["modality audio"] in uni and colours["modality text"] in uni and to_hex("black") in uni
