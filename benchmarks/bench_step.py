"""Training-step cost of Robult vs a plain late-fusion model with the same encoders, and the soft PU loss alone.

    python benchmarks/bench_step.py [--threads 2] [--repeats 30] [--dense-loss] [--skip-loss] [--breakdown] [--flops]

Prints (1) the time of one training step (forward + all losses + backward + AdamW step) for Robult and for the
late-fusion baseline (M = 3 MLP encoders, batch 256, the library's default widths d_h = 128, d_z = d_u = 64 unless
``--hidden-dim/--shared-dim/--specific-dim`` say otherwise) and their ratio; (2) the soft PU contrastive loss
(forward + backward) at batch 256, 1024 and 4096 with d = 128, M = 3, and its share of a Robult step at that batch.
``--dense-loss`` runs everything with the dense soft PU loss that the chunked one replaced (to compare the two in one
session); ``--skip-loss`` prints (1) only. ``--breakdown`` adds Robult steps with one part switched off at a time
(the soft PU loss, the reconstruction branch, the self-training term, the diagnostics), timed interleaved with the
whole step, so each difference is what that part costs (forward and backward). ``--flops`` counts the floating-point
operations of one step of each (``torch.utils.flop_counter``), Robult's forward by module, and a lower bound for any
implementation of the method's modules at these sizes (see :func:`flops`).
"""

from __future__ import annotations

import argparse
import dataclasses

import torch
from timing import interleaved_medians, median_time  # benchmarks/timing.py

from robult import Batch, ModalitySpec, TaskSpec
from robult.losses import RobultLoss, RobultLossConfig, contrastive, contrastive_keys
from robult.losses import robult as robult_loss
from robult.losses.baselines import SupervisedOnlyLoss
from robult.models import RobultConfig, RobultModel
from robult.models.late_fusion import LateFusionConfig, LateFusionModel


def make_batch(b: int, dims: tuple[int, ...], num_classes: int, labeled_share: float = 0.25) -> Batch:
    g = torch.Generator().manual_seed(0)
    inputs = {f"m{i}": torch.randn(b, d, generator=g) for i, d in enumerate(dims)}
    present = torch.ones(b, len(dims), dtype=torch.bool)
    target = torch.randint(0, num_classes, (b,), generator=g)
    labeled = torch.rand(b, generator=g) < labeled_share
    return Batch(inputs, present, target, labeled)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--dims", type=str, default="256,256,256", help="input width per modality")
    ap.add_argument("--encoder-hidden", type=str, default="256", help="hidden widths of the MLP encoders")
    ap.add_argument("--dense-loss", action="store_true", help="use the dense soft PU loss (the pre-chunking one)")
    ap.add_argument("--skip-loss", action="store_true", help="only the training-step comparison")
    ap.add_argument("--breakdown", action="store_true", help="also time Robult steps with one part off at a time")
    ap.add_argument("--flops", action="store_true", help="count the floating-point operations of both steps")
    defaults = RobultConfig()
    ap.add_argument("--hidden-dim", type=int, default=defaults.hidden_dim, help="d_h")
    ap.add_argument("--shared-dim", type=int, default=defaults.shared_dim, help="d_z")
    ap.add_argument("--specific-dim", type=int, default=defaults.specific_dim, help="d_u")
    args = ap.parse_args()
    if args.dense_loss:
        from robult.losses.contrastive_dense import soft_pu_contrastive_loss_dense

        contrastive.soft_pu_contrastive_loss = soft_pu_contrastive_loss_dense
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    dims = tuple(int(d) for d in args.dims.split(","))
    specs = [ModalitySpec(f"m{i}", "vector", (d,)) for i, d in enumerate(dims)]
    task = TaskSpec("multiclass", num_classes=10)
    hidden = tuple(int(h) for h in args.encoder_hidden.split(",") if h)
    cfg = RobultConfig(
        hidden_dim=args.hidden_dim, shared_dim=args.shared_dim, specific_dim=args.specific_dim, encoder_hidden=hidden
    )

    def step_fn(model, loss):
        opt = torch.optim.AdamW([*model.parameters(), *loss.parameters()], lr=1e-3)
        batch = make_batch(256, dims, 10)

        def step() -> None:
            opt.zero_grad(set_to_none=True)
            out = model(batch, with_reconstruction=True)
            loss(out, batch, epoch=10.0).total.backward()
            opt.step()

        return step

    robult = step_fn(RobultModel(specs, task, cfg), RobultLoss(task, len(dims)))
    late = step_fn(LateFusionModel.from_config(specs, task, LateFusionConfig.of(cfg)), SupervisedOnlyLoss(task))
    # interleaved rounds: load changes on a shared machine fall on both alike
    med = interleaved_medians({"robult": robult, "late": late}, args.repeats, warmup=5)
    t_r, t_l = med["robult"], med["late"]
    print(
        f"threads={args.threads} M={len(dims)} dims={dims} encoder_hidden={hidden} batch=256 "
        f"d_h={cfg.hidden_dim} d_z={cfg.shared_dim} d_u={cfg.specific_dim}"
    )
    loss_kind = "dense" if args.dense_loss else "chunked"
    print(
        f"training step ({loss_kind} soft PU loss): robult {t_r * 1e3:.2f} ms, "
        f"late fusion {t_l * 1e3:.2f} ms, ratio {t_r / t_l:.2f}x"
    )
    if args.flops:
        flops(specs, task, cfg, dims)
    if args.breakdown:
        breakdown(specs, task, cfg, dims, args.repeats, t_r, t_l)
    if args.skip_loss:
        return

    print("soft PU contrastive loss (forward + backward), d=128, M=3:")
    for b in (256, 1024, 4096):
        t_c, t_f = contrastive_share(b, specs, task, cfg, dims, max(3, args.repeats // (b // 256)))
        print(f"  batch {b:5d}: loss {t_c * 1e3:8.2f} ms, robult step {t_f * 1e3:8.2f} ms, share {t_c / t_f:.0%}")


def flops(specs, task, cfg, dims) -> None:
    """Floating-point operations of one training step (forward + losses + backward) of each model, Robult's forward
    by module, and a lower bound on what the method's own modules cost at these sizes in any implementation.

    The bound counts, besides the encoders both models share: each linear map of ``g_0``, ``g_m`` (once), the
    fusion and ``r_m`` at least twice its forward (forward and the weight gradient), and the soft PU loss at least
    its logits ``Z·S`` and their gradient with respect to ``Z`` (``S`` under stop-gradient), ``2 × 2·B·M·B·d_z``.
    """
    from torch.utils.flop_counter import FlopCounterMode

    batch = make_batch(256, dims, 10)
    models = {
        "robult": (RobultModel(specs, task, cfg), RobultLoss(task, len(dims))),
        "late fusion": (LateFusionModel.from_config(specs, task, LateFusionConfig.of(cfg)), SupervisedOnlyLoss(task)),
    }
    totals, forward = {}, {}
    for name, (model, loss) in models.items():
        with FlopCounterMode(display=False, depth=2) as counter:
            out = model(batch, with_reconstruction=True)
            value = loss(out, batch, epoch=10.0).total
            forward[name] = {k: sum(v.values()) for k, v in counter.get_flop_counts().items()}
            value.backward()
        totals[name] = counter.get_total_flops()
    late, robult = totals["late fusion"], totals["robult"]
    print(
        f"FLOPs of one step (forward + backward): robult {robult / 1e6:.0f} M, late fusion {late / 1e6:.0f} M, "
        f"ratio {robult / late:.2f}x"
    )
    parts = {k.removeprefix("RobultModel.").removeprefix("RobultLoss."): v for k, v in forward["robult"].items()}
    print(
        "  robult forward by module (M): "
        + ", ".join(
            f"{k} {v / 1e6:.1f}"
            for k, v in parts.items()
            if "." not in k and k not in ("Global", "RobultModel", "RobultLoss")
        )
    )
    b, m = batch.size, len(dims)
    own = ("shared_projector", "specific_projectors", "fusion", "reconstructors")
    bound = 2 * sum(parts.get(k, 0.0) for k in own)
    if "specific_projectors" in parts:  # run on B rows for prediction and on B rows of sg(H): count one
        bound -= parts["specific_projectors"]
    bound += 2 * 2 * b * m * b * cfg.shared_dim
    print(
        f"  lower bound for the method's own modules: {bound / 1e6:.0f} M, so a Robult step is at least "
        f"{(late + bound) / late:.2f}x a late-fusion step at these sizes"
    )


def breakdown(specs, task, cfg, dims, repeats, t_full: float, t_late: float) -> None:
    """Robult steps with one part off at a time, interleaved with the whole step (rounds of one call each)."""
    batch = make_batch(256, dims, 10)
    base = RobultLossConfig()
    variants = {
        "whole step": (base, True, False),
        "without the soft PU loss": (dataclasses.replace(base, lambda_lb=0.0, lambda_ulb=0.0), True, False),
        "without reconstruction": (dataclasses.replace(base, lambda_rec=0.0), False, False),
        "without self-training": (dataclasses.replace(base, lambda_pseudo=0.0), True, False),
        "without diagnostics": (base, True, True),
    }
    steps = {}
    for name, (loss_cfg, with_rec, no_diag) in variants.items():
        torch.manual_seed(0)
        model, loss = RobultModel(specs, task, cfg), RobultLoss(task, len(dims), loss_cfg)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)

        def step(model=model, loss=loss, opt=opt, with_rec=with_rec, no_diag=no_diag) -> None:
            opt.zero_grad(set_to_none=True)
            saved = robult_loss.representation_diagnostics
            if no_diag:
                robult_loss.representation_diagnostics = lambda *a, **k: {}
            try:
                loss(model(batch, with_reconstruction=with_rec), batch, epoch=10.0).total.backward()
            finally:
                robult_loss.representation_diagnostics = saved
            opt.step()

        steps[name] = step
    med = interleaved_medians(steps, repeats, warmup=3)
    whole = med["whole step"]
    print(f"breakdown (interleaved medians; late fusion step {t_late * 1e3:.2f} ms):")
    for name, t in med.items():
        extra = "" if name == "whole step" else f", part costs {1e3 * (whole - t):6.2f} ms"
        print(f"  {name:26s} {t * 1e3:7.2f} ms ({t / t_late:.2f}x late fusion){extra}")


def contrastive_share(b, specs, task, cfg, dims, repeats) -> tuple[float, float]:
    """Median times of the soft PU loss alone and of a whole Robult step at batch ``b``."""
    g = torch.Generator().manual_seed(1)
    z = torch.randn(b, 3, 128, generator=g, requires_grad=True)
    s = torch.randn(b, 128, generator=g, requires_grad=True)
    present = torch.ones(b, 3, dtype=torch.bool)
    labeled = torch.rand(b, generator=g) < 0.25
    target = torch.randint(0, 10, (b,), generator=g)
    keys = contrastive_keys(target, labeled, torch.randn(b, 10, generator=g), task)
    mu, sigma = torch.zeros(3), torch.ones(3)

    def loss_only() -> None:
        out = contrastive.soft_pu_contrastive_loss(z, s, present, keys, labeled, mu, sigma)
        (out.labeled + out.unlabeled).backward()

    model, loss = RobultModel(specs, task, cfg), RobultLoss(task, len(dims))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    batch = make_batch(b, dims, 10)

    def full() -> None:
        opt.zero_grad(set_to_none=True)
        loss(model(batch), batch, epoch=10.0).total.backward()
        opt.step()

    return median_time(loss_only, repeats, warmup=2), median_time(full, repeats, warmup=2)


if __name__ == "__main__":
    main()
