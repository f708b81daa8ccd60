"""Checks and padding of the non-embedding arguments of the contrastive loss (SPEC 5): the scale,
the doc ids, and the id that pads doc ids over a pool of negatives. Used by
``densescale.ops.contrastive_loss.check_loss_inputs`` and the gathered (multi-rank) loss.
"""

from __future__ import annotations

import math

import torch

_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


def check_scale(scale: object) -> float | torch.Tensor:
    """``scale`` as a float, or as the 0-d / one-element finite floating tensor it is; raises
    TypeError / ValueError naming ``scale`` otherwise."""
    if isinstance(scale, torch.Tensor):
        if not scale.is_floating_point():
            raise TypeError(
                f"scale must be a float or a floating tensor, got a tensor of dtype {scale.dtype}"
            )
        if scale.numel() != 1 or scale.dim() > 1:
            raise ValueError(
                f"scale must be a 0-d (or one-element) tensor, got shape {tuple(scale.shape)}"
            )
        if not bool(torch.isfinite(scale.detach()).all()):
            raise ValueError(f"scale must be finite, got {scale.detach().item()}")
        return scale
    if isinstance(scale, bool) or not isinstance(scale, (int, float)):
        raise TypeError(
            f"scale must be a float or a 0-d floating tensor, got {type(scale).__name__}"
        )
    if not math.isfinite(scale):
        raise ValueError(f"scale must be finite, got {scale}")
    return float(scale)


def check_doc_ids(doc_ids: object, n_cands: int, n_neg: int, device: torch.device) -> torch.Tensor:
    """``doc_ids`` as a contiguous int64 tensor of ``n_cands`` (or ``n_cands + n_neg``) ids on
    ``device``; raises TypeError / ValueError naming ``doc_ids`` otherwise."""
    if not isinstance(doc_ids, torch.Tensor):
        raise TypeError(f"doc_ids must be a torch.Tensor of int64, got {type(doc_ids).__name__}")
    if doc_ids.dtype != torch.int64:
        raise TypeError(
            f"doc_ids must have dtype int64, got {str(doc_ids.dtype).replace('torch.', '')}"
        )
    lengths = (n_cands,) if n_neg == 0 else (n_cands, n_cands + n_neg)
    if doc_ids.dim() != 1 or doc_ids.shape[0] not in lengths:
        expected = " or ".join(str(n) for n in lengths)
        raise ValueError(
            f"doc_ids must be 1-D with {expected} entries (B*G candidates"
            f"{', optionally + K negatives' if n_neg else ''}), got shape {tuple(doc_ids.shape)}"
        )
    if doc_ids.device != device:
        raise ValueError(
            f"doc_ids is on {doc_ids.device} but q is on {device}; all inputs must share one device"
        )
    return doc_ids.contiguous()


def doc_id_padding_value(lo: int, hi: int) -> int:
    """An id outside ``[lo, hi]`` (the range of the given ids), so padding never matches a real id."""
    if lo > _INT64_MIN:
        return lo - 1
    if hi < _INT64_MAX:
        return hi + 1
    raise ValueError(
        "doc_ids spans the whole int64 range, so no padding id is free; pass doc_ids with one id "
        "per candidate and per negative (length B*G+K)"
    )


def pad_doc_ids(doc_ids: torch.Tensor | None, n_total: int) -> torch.Tensor | None:
    """Extend ids of the B*G candidates to all ``n_total`` = B*G + K columns (negatives get an id
    no candidate has, so they are never masked as duplicates)."""
    if doc_ids is None or doc_ids.shape[0] == n_total:
        return doc_ids
    lo, hi = (int(v) for v in torch.aminmax(doc_ids))
    fill = doc_id_padding_value(lo, hi)
    pad = torch.full((n_total - doc_ids.shape[0],), fill, dtype=torch.int64, device=doc_ids.device)
    return torch.cat([doc_ids, pad])
