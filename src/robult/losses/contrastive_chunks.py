"""The soft PU contrastive loss computed in chunks of anchors (the implementation behind
:func:`robult.losses.contrastive.soft_pu_contrastive_loss`): per chunk, the logits and softmax, the kernel weights
on the targets that share the chunk's keys, both parts and their gradients with respect to the normalised ``Z``
and ``S`` (a custom autograd function), so no ``[B, M, N]`` tensor is kept. Read
:mod:`robult.losses.contrastive_dense` for the same loss as one dense computation (the definition it is tested
against).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
from torch import Tensor

from robult.losses.keys import key_similarity

# Elements of one chunk's [rows, M, N] tensors: a handful of them (logits, softmax, weights, masks) live at once,
# so the loss's extra memory is a few times this many floats whatever the batch (2^22 floats = 16 MB in float32).
CHUNK_ELEMENTS = 1 << 22
# At most this many anchors per chunk: a chunk smaller than a key's share of the batch computes the kernel weights
# on that key's targets only (see ChunkPlan.key_columns).
CHUNK_ROWS = 128


@dataclass
class ChunkPlan:
    """What every chunk needs besides ``Z`` and ``S``; anchors are in labeled-first, then key order."""

    keys: Tensor
    target_keys: Tensor
    target_labeled: Tensor
    present: Tensor
    cols: Tensor  # [B] column of each anchor's own target (k = j)
    n_lab: int
    rows: int
    temperature: float
    kernel: str | None = None  # None: no soft weights (every candidate weight 0)
    mu: Tensor | None = None
    sigma: Tensor | None = None  # floored at sigma_min
    weight_scale: Tensor | None = None  # [M] 0/1 per modality (fallback "none")
    keep_weights: bool = False
    need_grad: bool = False
    kept_counts: Tensor | None = None  # [B] kept weights per anchor, in plan order

    def chunks(self, stop: int) -> list[tuple[int, int]]:
        return [(i, min(i + self.rows, stop)) for i in range(0, stop, self.rows)]

    def same_key(self, i0: int, i1: int, dtype: torch.dtype, cols: Tensor | None = None) -> Tensor:
        """``[rows, N]`` (or ``[rows, len(cols)]``) same-key weights of anchors ``i0:i1``, zero at ``k = j``."""
        target_keys = self.target_keys if cols is None else self.target_keys[cols]
        same = key_similarity(self.keys[i0:i1], target_keys).to(dtype)
        own = self.cols[i0:i1]
        if cols is None:
            same[torch.arange(i1 - i0, device=same.device), own] = 0.0
        else:
            same.masked_fill_(own[:, None] == cols[None, :], 0.0)
        return same

    def key_columns(self, i0: int, i1: int, among: Tensor | None = None) -> Tensor | None:
        """The targets that share a key with some anchor of ``i0:i1`` (optionally only those flagged in ``among``)
        when they are few, else ``None`` (all). Class keys only: every positive pair lies among them, so the PU
        and moment work of a chunk scales with its keys' share of the targets instead of with ``N``."""
        if self.keys.ndim != 1:
            return None
        mask = torch.isin(self.target_keys, torch.unique(self.keys[i0:i1]))
        if among is not None:
            mask &= among
        count = int(mask.sum())
        return None if count > 0.75 * len(mask) else mask.nonzero().squeeze(1)


def plan_chunks(
    keys: Tensor,
    labeled: Tensor,
    present: Tensor,
    target_keys: Tensor,
    target_labeled: Tensor,
    temperature: float,
    offset: int,
    chunk_rows: int | None = None,
) -> tuple[Tensor, ChunkPlan]:
    """The anchors' order and the plan: labeled anchors first (``L_lb``, ``μ`` and ``σ`` then touch a prefix of the
    chunks only), then by key (a chunk's candidate positives then lie among the few targets that share its keys).

    ``offset`` is this rank's first column among the gathered targets (:func:`robult.utils.distributed.rank_start`;
    0 in one process); ``chunk_rows`` defaults to ``CHUNK_ROWS``, fewer where a chunk would exceed
    ``CHUNK_ELEMENTS`` elements.
    """
    b, m = present.shape
    n = target_keys.shape[0]
    rows = chunk_rows if chunk_rows is not None else max(1, min(CHUNK_ROWS, CHUNK_ELEMENTS // max(1, m * n)))
    if rows < 1:
        raise ValueError(f"chunk_rows must be positive, got {rows}")
    order = torch.arange(b, device=present.device)
    if keys.ndim == 1:
        order = torch.argsort(keys, stable=True)
    order = order[torch.argsort((~labeled[order]).to(torch.uint8), stable=True)]
    plan = ChunkPlan(
        keys=keys[order],
        target_keys=target_keys,
        target_labeled=target_labeled,
        present=present[order],
        cols=offset + order,
        n_lab=int(labeled.sum()),
        rows=rows,
        temperature=temperature,
    )
    return order, plan


def full_precision(device: torch.device) -> contextlib.AbstractContextManager:
    """Autocast off: the products run in the loss's dtype (at least float32), not in the autocast dtype."""
    if torch.is_autocast_enabled(device.type):
        return torch.autocast(device_type=device.type, enabled=False)
    return contextlib.nullcontext()


def pair_moments(z: Tensor, s: Tensor, plan: ChunkPlan) -> Tensor:
    """``[3, M]`` count, sum and sum of squares of ``π`` over labeled same-key pairs (j ≠ k) of present anchors."""
    m = z.shape[1]
    out = z.new_zeros(3, m)
    for i0, i1 in plan.chunks(plan.n_lab):
        cc = plan.key_columns(i0, i1, among=plan.target_labeled)
        labeled_t = plan.target_labeled if cc is None else plan.target_labeled[cc]
        pair = (plan.same_key(i0, i1, z.dtype, cc) > 0) & labeled_t[None, :]
        pair_f = pair.to(z.dtype)  # [c, N']
        anchor = plan.present[i0:i1].to(z.dtype)  # [c, M]
        cos = torch.einsum("bmd,nd->bmn", z[i0:i1], s if cc is None else s[cc])
        out[0] += (pair_f.sum(-1)[:, None] * anchor).sum(0)
        out[1] += (torch.einsum("bmn,bn->bm", cos, pair_f) * anchor).sum(0)
        out[2] += (torch.einsum("bmn,bn->bm", cos.square_(), pair_f) * anchor).sum(0)
    return out


def _kernel_(t: Tensor, kernel: str) -> Tensor:
    """:func:`kernel_weights` of ``t = (π - μ)/σ``, in place."""
    if kernel == "rbf":
        return t.square_().mul_(-0.5).exp_()
    if kernel == "laplace":
        return t.abs_().neg_().exp_()
    if kernel == "cauchy":
        return t.square_().add_(1.0).reciprocal_()
    return t.clamp_(max=0.0).square_().mul_(-0.5).exp_()  # one_sided: 1 where π ≥ μ, else RBF


class SoftPUChunks(torch.autograd.Function):
    """``(Σ L_lb, Σ L_ulb)`` over the present anchors, diagnostics and kept weights; forward also forms the two
    parts' gradients (they are linear in the incoming gradients), so backward only combines them."""

    @staticmethod
    def forward(ctx, z: Tensor, s: Tensor, plan: ChunkPlan):  # type: ignore[override]
        # targets under stop-gradient (the default): the gradients with respect to S are not formed
        with full_precision(z.device):
            sum_lb, sum_ulb, diag, kept, grads = _soft_pu_chunks(z, s, plan, grad_s=ctx.needs_input_grad[1])
        ctx.save_for_backward(*grads)
        ctx.mark_non_differentiable(diag, kept)
        return sum_lb, sum_ulb, diag, kept

    @staticmethod
    def backward(ctx, g_lb: Tensor, g_ulb: Tensor, _diag: Tensor, _kept: Tensor):  # type: ignore[override]
        gz_lb, gz_ulb, *gs = ctx.saved_tensors
        grad_s = g_lb * gs[0] + g_ulb * gs[1] if gs else None
        return g_lb * gz_lb + g_ulb * gz_ulb, grad_s, None


def _soft_pu_chunks(z: Tensor, s: Tensor, plan: ChunkPlan, grad_s: bool = True):
    """The chunk loop. Per anchor ``(j, m)`` and positive weights ``q`` (``Q = Σ_k q``), the part is
    ``-(Σ_k q_k p_jk - Q·lse_j)/Q`` with logits ``p``, and its gradient with respect to the logits is
    ``softmax - q/Q``; ``q`` is ``pos_lb + δ_j`` for ``L_lb`` and ``w·pu + δ_j`` for ``L_ulb``. The softmax is
    kept unnormalised (``e = exp(p - max)``); its row sums scale the small operands of the products instead.
    With ``grad_s`` false only the gradients with respect to ``Z`` are formed (``grads`` holds two tensors)."""
    b, m, d = z.shape
    n = s.shape[0]
    dtype, device = z.dtype, z.device
    inv_tau = 1.0 / plan.temperature
    st = s * inv_tau  # logits = Z · (S/τ)
    sum_lb, sum_ulb = z.new_zeros(()), z.new_zeros(())
    diag_stats = z.new_zeros(4)  # candidate count, weight sum, weights < 0.05, weights > 0.95 (candidate-weighted)
    kept: list[Tensor] = []
    kept_counts: list[Tensor] = []
    target_lab = plan.target_labeled.to(dtype)
    class_keys = plan.keys.ndim == 1  # same-key weights are 0/1
    grad = plan.need_grad
    grad_s = grad and grad_s
    if grad:
        gz_lb, gz_ulb = torch.zeros_like(z), torch.zeros_like(z)
    if grad_s:
        gs_lb, gs_ulb, gs_lab = (torch.zeros_like(s) for _ in range(3))
    if plan.kernel is not None:
        assert plan.mu is not None and plan.sigma is not None
        scale = (plan.temperature / plan.sigma)[None, :, None]  # t = (π - μ)/σ = logits·τ/σ - μ/σ
        shift = (plan.mu / plan.sigma)[None, :, None]
    for i0, i1 in plan.chunks(b):
        c = i1 - i0
        nl = min(max(plan.n_lab - i0, 0), c)  # labeled anchors of this chunk: rows [0, nl)
        zc, cols = z[i0:i1], plan.cols[i0:i1]
        ar = torch.arange(c, device=device)
        logits = (zc.reshape(c * m, d) @ st.T).view(c, m, n)
        own = logits[ar, :, cols]  # [c, M]: the k = j logit
        anchor = plan.present[i0:i1].to(dtype)  # [c, M]

        # ---- L_lb: labeled anchors (rows < nl), labeled same-key positives plus k = j
        if nl:
            pos_lb = plan.same_key(i0, i0 + nl, dtype) * target_lab[None, :]  # [nl, N]
            q_lb = (pos_lb.sum(-1) + 1.0)[:, None]  # [nl, 1]
            num_lb = torch.einsum("bmn,bn->bm", logits[:nl], pos_lb) + own[:nl]

        # ---- L_ulb: PU candidates (j or k unlabeled) weighted by K(π), plus k = j; only the columns that share
        # a key with the chunk can be candidates
        cc = plan.key_columns(i0, i1)
        pu = plan.same_key(i0, i1, dtype, cc)  # [c, N']
        pu[:nl] *= 1.0 - (target_lab if cc is None else target_lab[cc])[None, :]  # labeled anchors: unlabeled k
        cand = pu.sum(-1)[:, None] * anchor  # [c, M] candidate weight per anchor
        diag_stats[0] += cand.sum()
        qu = None
        if plan.kernel is not None:
            sub = logits if cc is None else logits[:, :, cc]
            w = _kernel_(torch.mul(sub, scale).sub_(shift), plan.kernel)  # [c, M, N'], no gradient
            if plan.weight_scale is not None:
                w.mul_(plan.weight_scale[None, :, None])
            if plan.keep_weights:
                mask = (pu > 0)[:, None, :] & plan.present[i0:i1, :, None]
                kept.append(w[mask])
                kept_counts.append(mask.sum((1, 2)))
            if not class_keys:
                diag_stats[2] += (torch.einsum("bmn,bn->bm", (w < 0.05).to(dtype), pu) * anchor).sum()
                diag_stats[3] += (torch.einsum("bmn,bn->bm", (w > 0.95).to(dtype), pu) * anchor).sum()
            qu = w.mul_(pu[:, None, :])
            if class_keys:  # pu is 0/1: a candidate's weight is qu, a non-candidate's qu is 0
                diag_stats[2] += ((cand - (qu >= 0.05).sum(-1)) * anchor).sum()
                diag_stats[3] += ((qu > 0.95).sum(-1) * anchor).sum()
            q_ulb = qu.sum(-1)  # [c, M]
            diag_stats[1] += (q_ulb * anchor).sum()
            num_ulb = torch.einsum("bmn,bmn->bm", qu, sub) + own
            q_ulb = q_ulb + 1.0
            del sub
        else:
            diag_stats[2] += cand.sum()  # every candidate weight is 0
            if plan.keep_weights:
                counts = (pu > 0).sum(-1)[:, None] * plan.present[i0:i1]
                kept.append(z.new_zeros(int(counts.sum())))
                kept_counts.append(counts.sum(-1))
            num_ulb = own
            q_ulb = torch.ones_like(own)

        # ---- log-sum-exp; the logits become the unnormalised softmax in place
        mx = logits.amax(-1, keepdim=True)
        e = logits.sub_(mx).exp_()
        total = e.sum(-1)  # [c, M]
        lse = mx.squeeze(-1) + total.log()
        sum_ulb = sum_ulb - ((num_ulb - q_ulb * lse) / q_ulb * anchor).sum()
        if nl:
            sum_lb = sum_lb - ((num_lb - q_lb * lse[:nl]) / q_lb * anchor[:nl]).sum()

        if grad:  # d(part)/d(logits) = anchor · (softmax - q/Q); logits = Z·S/τ
            ps = (e.view(c * m, n) @ st).view(c, m, d) / total[..., None]  # Σ_k softmax_k S_k/τ
            own_s = st[cols][:, None, :]  # [c, 1, d]
            st_c = st if cc is None else st[cc]
            qs = own_s if qu is None else (qu.view(c * m, -1) @ st_c).view(c, m, d) + own_s
            gz_ulb[i0:i1] = anchor[..., None] * (ps - qs / q_ulb[..., None])
            if nl:
                pos_s = (pos_lb @ st)[:, None, :] + own_s[:nl]  # Σ_k q_k S_k/τ, [nl, 1, d]
                gz_lb[i0 : i0 + nl] = anchor[:nl, :, None] * (ps[:nl] - pos_s / q_lb[..., None])
        if grad_s:
            za = zc * (anchor / total)[..., None]  # [c, M, d]: the softmax's normalisation moved here
            zu = zc * (anchor / q_ulb)[..., None]
            if qu is not None:
                update = qu.view(c * m, -1).T @ zu.view(c * m, d)
                if cc is None:
                    gs_ulb.sub_(update)
                else:
                    gs_ulb.index_add_(0, cc, update, alpha=-1.0)
            gs_ulb.index_add_(0, cols, zu.sum(1), alpha=-1.0)
            # the softmax term of both parts: Σ_(j,m) softmax_jk z_jm, labeled anchors apart (they are in both)
            gs_ulb.add_(e[nl:].reshape(-1, n).T @ za[nl:].reshape(-1, d))
            if nl:
                gs_lab.add_(e[:nl].reshape(-1, n).T @ za[:nl].reshape(-1, d))
                zl = (zc[:nl] * (anchor[:nl] / q_lb)[..., None]).sum(1)  # [nl, d]
                gs_lb.sub_(pos_lb.T @ zl)
                gs_lb.index_add_(0, cols[:nl], zl, alpha=-1.0)
    plan.kept_counts = torch.cat(kept_counts) if plan.keep_weights else None
    kept_t = torch.cat(kept) if kept else z.new_empty(0)
    grads: tuple[Tensor, ...] = ()
    if grad:
        grads = (gz_lb, gz_ulb)
    if grad_s:
        gs_lb.add_(gs_lab).mul_(inv_tau)
        gs_ulb.add_(gs_lab).mul_(inv_tau)
        grads = (*grads, gs_lb, gs_ulb)
    return sum_lb, sum_ulb, diag_stats, kept_t, grads


def unsort_segments(values: Tensor, counts: Tensor, order: Tensor) -> Tensor:
    """``values`` holds consecutive segments (``counts[i]`` values for sorted anchor ``i = 0..B-1``, anchor
    ``order[i]``); return the segments in anchor order ``0..B-1``."""
    if values.numel() == 0:
        return values
    starts = torch.cumsum(counts, 0) - counts  # segment start of each sorted anchor
    inv = torch.empty_like(order)
    inv[order] = torch.arange(len(order), device=order.device)
    seg_counts, seg_starts = counts[inv], starts[inv]  # per anchor in original order
    out_starts = torch.cumsum(seg_counts, 0) - seg_counts
    within = torch.arange(values.numel(), device=values.device) - torch.repeat_interleave(out_starts, seg_counts)
    return values[torch.repeat_interleave(seg_starts, seg_counts) + within]
