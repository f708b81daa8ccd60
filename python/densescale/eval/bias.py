"""The seen-passage bias: do test queries score passages higher because they were training
positives, rather than because they are relevant?

A dual encoder trained from scratch on a small collection can learn "this passage was a training
positive" (e.g. by giving those passages larger vectors) instead of relevance. Its test CE then
looks worse than chance, since the metric's negatives (SPEC 1.1: the corpus minus the test
positives) include the training positives. This module measures that bias from embeddings the
evaluation computed anyway.
"""

from __future__ import annotations

import numpy as np
import torch

from .entropy import contrastive_entropy

# passages sampled from each side to estimate mean scores: enough for a stable mean, cheap to score
_SAMPLE = 2000
# nats by which seen negatives must hurt more than unseen ones before the bias is called decisive
# (an untrained model scores both alike, so the flag does not fire on noise)
_CE_GAP = 0.5


def seen_passage_bias(
    q_emb: torch.Tensor,
    pair_q: torch.Tensor,
    pos_emb: torch.Tensor,
    corpus_emb: torch.Tensor,
    seen: np.ndarray,
    eligible: np.ndarray,
    top10_rows: np.ndarray | None = None,
    *,
    num_negatives: int = 256,
    seed: int = 0,
) -> dict:
    """Scores of test queries against passages that were training positives ("seen") and against
    passages that never were ("unseen").

    Args:
        q_emb: (Q, d) test query embeddings; ``pair_q`` (P,) the query of each test pair;
            ``pos_emb`` (P, d) each pair's positive.
        corpus_emb: (C, d) corpus embeddings; ``seen`` (C,) bool, True for training positives;
            ``eligible`` (C,) bool, True for passages that may serve as negatives (not a test
            positive).
        top10_rows: (Q, <=10) corpus rows each query retrieved first, or None.
        num_negatives, seed: K and seed of the per-side contrastive entropies.

    Returns ``{"mean_score_positive", "mean_score_seen", "mean_score_unseen", "ce_seen_pool",
    "ce_unseen_pool", "top10_seen_fraction", "corpus_seen_fraction", "decides_ranking"}``.
    ``ce_*_pool`` is the contrastive entropy with negatives drawn only from one side (None when
    that side has fewer than ``num_negatives`` passages). ``decides_ranking`` is True when a random
    training positive outscores the average test positive (``mean_score_seen >
    mean_score_positive``) and seen negatives cost more than 0.5 nats over unseen ones
    (``ce_seen_pool - ce_unseen_pool``): being seen in training then lifts a passage more than
    being relevant does, and the ranking follows seen / unseen, not relevance.
    """
    rng = np.random.default_rng(seed)
    seen_rows = np.flatnonzero(seen & eligible)
    unseen_rows = np.flatnonzero(~seen & eligible)
    q = q_emb.float()
    out: dict = {
        "mean_score_positive": float((q[pair_q] * pos_emb.float()).sum(-1).mean()),
        "corpus_seen_fraction": float(seen.mean()) if len(seen) else 0.0,
    }
    for name, rows in (("seen", seen_rows), ("unseen", unseen_rows)):
        if len(rows) == 0:
            out[f"mean_score_{name}"] = None
            out[f"ce_{name}_pool"] = None
            continue
        sample = rng.choice(rows, min(_SAMPLE, len(rows)), replace=False)
        out[f"mean_score_{name}"] = float(
            (q @ corpus_emb[torch.from_numpy(sample)].float().T).mean()
        )
        out[f"ce_{name}_pool"] = (
            float(
                contrastive_entropy(
                    q[pair_q],
                    pos_emb,
                    corpus_emb,
                    pool_rows=torch.from_numpy(rows),
                    num_negatives=num_negatives,
                    repeats=1,
                    seed=seed,
                ).mean
            )
            if len(rows) >= num_negatives
            else None
        )
    out["top10_seen_fraction"] = (
        float(seen[top10_rows[top10_rows >= 0]].mean()) if top10_rows is not None else None
    )
    s, p = out["mean_score_seen"], out["mean_score_positive"]
    cs, cu = out["ce_seen_pool"], out["ce_unseen_pool"]
    out["decides_ranking"] = bool(
        s is not None and s > p and cs is not None and cu is not None and cs - cu > _CE_GAP
    )
    return out
