"""Exact top-k search and candidate scoring: public API and backend dispatch.

(Skeleton: plain-torch implementations only so far.)
"""

from __future__ import annotations

import torch


def search(queries, corpus, k: int, *, metric: str = "ip", backend: str = "auto"):
    """Exact top-k by inner product: (scores (M, k) fp32, ids (M, k) int64), best first."""
    q = torch.as_tensor(queries).float()
    c = torch.as_tensor(corpus).float()
    if metric == "cos":
        q = torch.nn.functional.normalize(q, dim=1)
        c = torch.nn.functional.normalize(c, dim=1)
    scores, ids = torch.topk(q @ c.T, k, dim=1)
    return scores, ids


def score_candidates(queries, corpus, candidate_ids):
    """Scores of given candidates: (M, D), (Ncorpus, D), (M, C) int64 ids (-1 = padding) -> (M, C)."""
    q = torch.as_tensor(queries).float()
    c = torch.as_tensor(corpus).float()
    ids = torch.as_tensor(candidate_ids)
    pad = ids < 0
    gathered = c[ids.clamp_min(0)]
    scores = torch.einsum("md,mcd->mc", q, gathered)
    return scores.masked_fill(pad, float("-inf"))
