"""The contrastive loss, defined once: options shared by every backend and the plain-torch reference.

Notation (SPEC 3.1). ``q`` (B, D) queries; ``p`` (B_total*G, D) candidates grouped per query, row
``(r+i)*G`` the positive of local query i (r = ``row_offset``, non-zero only when candidates were
gathered from other ranks), the next G-1 rows its hard negatives; ``negatives`` (K, D) a pool
shared by every query. Candidate columns are ``c = [p; negatives]`` (N = B_total*G + K).

Row direction, for query i with target column t_i = (r+i)*G::

    loss_i = logsumexp_{j valid} (s * q_i . c_j) - s * q_i . c_{t_i}

where column j is valid unless (a) ``in_batch=False`` and j < B_total*G belongs to another query's
group, or (b) ``doc_ids[j] == doc_ids[t_i]`` and j != t_i (duplicate / false negative).
``symmetric=True`` (needs ``in_batch=True``, r = 0, B_total = B) adds the passage-to-query direction
over positives, with the same doc-id masking among positives, and averages the two::

    loss_i = (row_i + logsumexp_k (s * c_{t_i} . q_k) - s * c_{t_i} . q_i) / 2

Backends receive ``doc_ids`` either None or of length N (the public API pads it).

Backend protocol (``densescale.ops._loss_cpp``, ``densescale.ops._loss_triton``)::

    loss, saved = loss_forward(inputs, need_grad)          # inputs: LossInputs
    dq, dp, dneg, dscale = loss_backward(inputs, saved, weights, uniform)

``loss`` (B,) fp32; ``saved`` whatever the backend needs later; gradients of
``sum_i weights_i * loss_i``, fp32; ``uniform``: every weight is the same (reduction mean or sum).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch


@dataclass(frozen=True)
class LossOptions:
    """Non-tensor options of one loss call (hashable, so launchers can cache per variant)."""

    group_size: int = 1
    in_batch: bool = True
    symmetric: bool = False
    row_offset: int = 0


class LossInputs(NamedTuple):
    """The arguments of one per-query loss evaluation as a backend receives them: checked,
    contiguous, ``doc_ids`` None or of length N, ``scale`` a float (fused backends) or a 0-d
    tensor (the torch reference). Unpacks as ``q, p, negatives, doc_ids, scale, opts``."""

    q: torch.Tensor
    p: torch.Tensor
    negatives: torch.Tensor | None
    doc_ids: torch.Tensor | None
    scale: float | torch.Tensor
    opts: LossOptions

    @property
    def n_pool(self) -> int:
        """K, the rows of the shared pool of negatives (0 without one)."""
        return 0 if self.negatives is None else self.negatives.shape[0]

    @property
    def n_columns(self) -> int:
        """N = rows of p + K, the candidate columns every query is scored against."""
        return self.p.shape[0] + self.n_pool


def reference_loss_per_query(
    q: torch.Tensor,
    p: torch.Tensor,
    negatives: torch.Tensor | None,
    doc_ids: torch.Tensor | None,
    scale: float | torch.Tensor,
    opts: LossOptions,
) -> torch.Tensor:
    """Plain-torch per-query loss (B,): materialised scores, fp32 (fp64 for fp64 inputs).

    Differentiable in q, p, negatives and scale through ordinary autograd; this is both the
    ``"torch"`` backend and the reference every kernel is tested against.
    """
    acc = torch.float64 if q.dtype == torch.float64 else torch.float32
    B, G = q.shape[0], opts.group_size
    qf = q.to(acc)
    pf = p.to(acc)
    cands = pf if negatives is None else torch.cat([pf, negatives.to(acc)])
    n_p = p.shape[0]
    scores = (qf @ cands.T) * scale
    rows = torch.arange(B, device=q.device) + opts.row_offset
    target = rows * G
    excluded = torch.zeros(scores.shape, dtype=torch.bool, device=q.device)
    if not opts.in_batch:
        col_query = torch.arange(n_p, device=q.device) // G
        excluded[:, :n_p] = col_query[None, :] != rows[:, None]
    if doc_ids is not None:
        pos_ids = doc_ids[target]
        dup = doc_ids[None, :] == pos_ids[:, None]
        dup[torch.arange(B, device=q.device), target] = False
        excluded |= dup
    # A NaN/Inf input row makes its scores non-finite; masked, or -inf, they would drop out of
    # the log-sum-exp. Their row sum (detached, times 0) carries them into the loss instead, so
    # the caller's check on the loss sees every bad row without reading the inputs.
    nonfinite = scores.detach().sum(dim=1) * 0.0
    scores = scores.masked_fill(excluded, float("-inf"))
    ar = torch.arange(B, device=q.device)
    loss = torch.logsumexp(scores, dim=1) - scores[ar, target] + nonfinite
    if opts.symmetric:
        pos = pf[target]
        s2 = (pos @ qf.T) * scale
        if doc_ids is not None:
            pos_ids = doc_ids[target]
            dup = pos_ids[:, None] == pos_ids[None, :]
            dup[ar, ar] = False
            s2 = s2.masked_fill(dup, float("-inf"))
        loss = 0.5 * (loss + torch.logsumexp(s2, dim=1) - s2[ar, ar])
    return loss
