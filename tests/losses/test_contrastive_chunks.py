"""The chunked soft PU loss's autograd function: with the targets under stop-gradient (the default) it forms no
gradient with respect to ``S`` and the gradient with respect to ``Z`` is the one it forms for a live ``S``."""

from __future__ import annotations

import pytest
import torch

from robult.losses import contrastive_chunks
from robult.losses.contrastive import soft_pu_contrastive_loss


def _case(seed: int, b: int = 23, m: int = 3, d: int = 6):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(b, m, d, generator=g, dtype=torch.float64)
    s = torch.randn(b, d, generator=g, dtype=torch.float64)
    present = torch.rand(b, m, generator=g) > 0.25
    present[~present.any(1), 0] = True
    keys = torch.randint(0, 3, (b,), generator=g)
    labeled = torch.rand(b, generator=g) < 0.4
    mu, sigma = torch.tensor([0.1, -0.2, 0.3], dtype=torch.float64), torch.tensor([0.3, 0.4, 0.2])
    return z, s, (present, keys, labeled, mu, sigma, 0.5, "rbf", 0.8, torch.ones(3, dtype=torch.bool), 0.05)


@pytest.mark.parametrize("chunk_rows", [1, 5, None])
def test_stop_gradient_targets_form_no_target_gradient_and_the_same_anchor_gradient(
    chunk_rows: int | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    z0, s0, args = _case(seed=chunk_rows or 0)
    formed: list[int] = []
    inner = contrastive_chunks._soft_pu_chunks

    def spy(z, s, plan, grad_s=True):
        out = inner(z, s, plan, grad_s=grad_s)
        formed.append(len(out[-1]))  # the gradients it formed
        return out

    monkeypatch.setattr(contrastive_chunks, "_soft_pu_chunks", spy)
    results = []
    for live in (True, False):
        z, s = z0.clone().requires_grad_(True), s0.clone().requires_grad_(live)
        out = soft_pu_contrastive_loss(z, s, *args, chunk_rows=chunk_rows)
        (0.7 * out.labeled + 1.3 * out.unlabeled).backward()
        results.append((out.labeled.detach(), out.unlabeled.detach(), z.grad, s.grad))
    assert formed == [4, 2]  # Z's and S's gradients of both parts; then Z's only
    (lb1, ulb1, gz1, gs1), (lb2, ulb2, gz2, gs2) = results
    assert gs1 is not None and gs1.abs().sum() > 0 and gs2 is None
    assert torch.equal(lb1, lb2) and torch.equal(ulb1, ulb2)
    assert torch.equal(gz1, gz2)  # bit for bit: the same products in the same order
    assert gz1.abs().sum() > 0
