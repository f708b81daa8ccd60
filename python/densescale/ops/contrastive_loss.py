"""Fused contrastive (InfoNCE) loss: public API and backend dispatch. See ``_loss_spec`` for the math.

(Skeleton: only the plain-torch backend is wired so far.)
"""

from __future__ import annotations

import torch

from densescale.ops._loss_spec import LossOptions, reference_loss_per_query


def contrastive_loss(
    q: torch.Tensor,
    p: torch.Tensor,
    *,
    negatives: torch.Tensor | None = None,
    in_batch: bool = True,
    scale: float | torch.Tensor = 1.0,
    symmetric: bool = False,
    doc_ids: torch.Tensor | None = None,
    reduction: str = "mean",
    backend: str = "auto",
) -> torch.Tensor:
    """InfoNCE over q (B, D) and grouped candidates p (B*G, D) (+ shared negatives (K, D))."""
    G = p.shape[0] // q.shape[0]
    opts = LossOptions(group_size=G, in_batch=in_batch, symmetric=symmetric)
    loss = reference_loss_per_query(q, p, negatives, doc_ids, scale, opts)
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    return loss
