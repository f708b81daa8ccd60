"""The contrastive loss over candidates gathered from every rank of ``torch.distributed``.

Each rank keeps its own B queries and scores them against the candidates (and shared negatives,
and doc ids) of all W ranks, gathered with an autograd-aware all-gather. Rank r's queries are rows
``r*B .. r*B+B-1`` of the concatenated batch, so the backends run with
``LossOptions.row_offset = r*B``: their positive is row ``(r*B + i)*G`` of the gathered candidates.

Gradient convention: each rank returns the loss over its own rows only (mean over its B rows, or
their sum). The gather's backward all-reduces (sums) the gradient of the gathered tensor and keeps
the rank's own slice, so every embedding receives the gradient of the sum of all ranks' losses.
Hence, per rank, with W ranks of B queries each:

- ``reduction="sum"``: gradients equal those of one process computing the summed loss on the
  concatenated batch; the losses of the ranks add up to its loss.
- ``reduction="mean"``: gradients are W times those of one process computing the mean over all
  W*B queries; DDP's gradient averaging (division by W) turns them into exactly that global-mean
  gradient. The mean of the ranks' losses is the global mean.

Every rank must make the same calls (same B, G, K, D, dtype, options): collectives run in forward
and in backward.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist

from densescale.ops._loss_spec import LossInputs, LossOptions
from densescale.ops.contrastive_loss import (
    check_loss_inputs,
    compute_loss,
    doc_id_padding_value,
)

__all__ = ["all_gather_with_grad", "distributed_world_size", "gathered_contrastive_loss"]

_DTYPE_CODES = {torch.float32: 0, torch.float16: 1, torch.bfloat16: 2, torch.float64: 3}


def distributed_world_size(group: Any = None) -> int:
    """World size of ``group`` when torch.distributed is initialised, else 1."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size(group)
    return 1


class _AllGatherWithGrad(torch.autograd.Function):
    """(n, ...) per rank -> (W*n, ...) on every rank; backward sums the gradient over ranks and
    returns this rank's slice (its embeddings were used by every rank's loss)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, group: Any) -> torch.Tensor:  # type: ignore[override]
        world = dist.get_world_size(group)
        parts = [torch.empty_like(x) for _ in range(world)]
        dist.all_gather(parts, x.contiguous(), group=group)
        ctx.group, ctx.rank, ctx.n = group, dist.get_rank(group), x.shape[0]
        return torch.cat(parts)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        grad = grad.contiguous().clone()  # all_reduce works in place; autograd may share grad
        dist.all_reduce(grad, op=dist.ReduceOp.SUM, group=ctx.group)
        return grad[ctx.rank * ctx.n : (ctx.rank + 1) * ctx.n], None


def all_gather_with_grad(x: torch.Tensor, group: Any = None) -> torch.Tensor:
    """Concatenate ``x`` (n, ...) of every rank along dim 0, differentiably (same n on every rank)."""
    return _AllGatherWithGrad.apply(x, group)


def _all_gather_plain(x: torch.Tensor, group: Any) -> torch.Tensor:
    parts = [torch.empty_like(x) for _ in range(dist.get_world_size(group))]
    dist.all_gather(parts, x.contiguous(), group=group)
    return torch.cat(parts)


def _check_same_layout(
    q: torch.Tensor,
    p: torch.Tensor,
    negatives: torch.Tensor | None,
    doc_ids: torch.Tensor | None,
    group: Any,
) -> tuple[int, int]:
    """All-gather each rank's layout; raise the same ValueError on every rank if they differ.

    Returns the global (min, max) of the given doc ids (0, 0 without ids) for the padding id.
    """
    B, D = q.shape
    G = p.shape[0] // B
    K = 0 if negatives is None else negatives.shape[0]
    has_ids = doc_ids is not None
    full_ids = has_ids and doc_ids.shape[0] == B * G + K and K > 0
    lo, hi = (int(v) for v in torch.aminmax(doc_ids)) if has_ids else (0, 0)
    meta = torch.tensor(
        [B, G, K, D, int(has_ids), int(full_ids), _DTYPE_CODES[q.dtype], lo, hi],
        dtype=torch.int64,
        device=q.device,
    )
    rows = _all_gather_plain(meta[None], group).cpu().tolist()
    names = (
        "B (queries)",
        "G (group size)",
        "K (negatives)",
        "D",
        "doc_ids given",
        "doc_ids covering the negatives",
        "dtype",
    )
    for col, name in enumerate(names):
        values = [r[col] for r in rows]
        if len(set(values)) > 1:
            raise ValueError(
                f"gather=True needs the same {name} on every rank, got {values} across ranks "
                f"(rank {dist.get_rank(group)} of {len(rows)})"
            )
    return min(r[7] for r in rows), max(r[8] for r in rows)


def gathered_contrastive_loss(
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
    group: Any = None,
) -> torch.Tensor:
    """``contrastive_loss`` for this rank's queries against every rank's candidates.

    Arguments as ``densescale.contrastive_loss``, all local to this rank: q (B, D), p (B*G, D),
    negatives (K, D), doc_ids (B*G,) or (B*G+K,). Equivalent to one process computing the rows
    ``r*B .. r*B+B-1`` of ``contrastive_loss`` on the concatenation of every rank's q, p, negatives
    and doc_ids (see the module docstring for the gradient convention). With ``symmetric=True`` the
    passage->query direction of the local positives runs as a second call with roles swapped (local
    positives as queries, every rank's queries as candidates) and the two are averaged.
    """
    q, p, negatives, doc_ids, scale, G, resolved = check_loss_inputs(
        q, p, negatives, doc_ids, scale, in_batch, symmetric, reduction, backend
    )
    lo, hi = _check_same_layout(q, p, negatives, doc_ids, group)
    rank = dist.get_rank(group)
    B = q.shape[0]
    K = 0 if negatives is None else negatives.shape[0]

    p_all = all_gather_with_grad(p, group)
    neg_all = None if negatives is None else all_gather_with_grad(negatives, group)
    ids_all = ids_p_all = None
    if doc_ids is not None:
        ids_p_all = _all_gather_plain(doc_ids[: B * G], group)
        ids_all = ids_p_all
        if K:
            if doc_ids.shape[0] == B * G + K:
                ids_neg = doc_ids[B * G :]
            else:
                # One padding id for all ranks: it lies outside every rank's ids.
                fill = doc_id_padding_value(lo, hi)
                ids_neg = torch.full((K,), fill, dtype=torch.int64, device=q.device)
            ids_all = torch.cat([ids_p_all, _all_gather_plain(ids_neg, group)])

    offset = rank * B
    row_opts = LossOptions(group_size=G, in_batch=in_batch, symmetric=False, row_offset=offset)
    loss = compute_loss(
        LossInputs(q, p_all, neg_all, ids_all, scale, row_opts), reduction, resolved
    )
    if not symmetric:
        return loss

    # passage->query: local positives score every rank's queries; query k carries the id of its
    # positive, so duplicate positives are masked as in the single-process symmetric loss.
    q_all = all_gather_with_grad(q, group)
    positives = p[::G].contiguous() if G > 1 else p
    col_ids = None if ids_p_all is None else ids_p_all[::G].contiguous()
    col_opts = LossOptions(group_size=1, in_batch=True, symmetric=False, row_offset=offset)
    col_inputs = LossInputs(positives, q_all, None, col_ids, scale, col_opts)
    col = compute_loss(col_inputs, reduction, resolved)
    return 0.5 * (loss + col)
