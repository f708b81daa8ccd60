"""Ranking metrics of a random ranking: the chance level a retriever's MRR@10 or NDCG@10 is judged
against (contrastive entropy has its own, ln(K+1)).

For one query with R relevant passages (grade >= ``relevance_level``) in a corpus of n, ranked
uniformly at random and cut at depth c = min(k, depth, n), the expectations are exact:

    recall@k     = c / n
    precision@k  = R c / (n k)
    mrr@k        = sum_{r<=c} (1/r) P(first relevant at r),
                   P(first at r) = prod_{j<r-1} (n-R-j)/(n-j) * R/(n-r+1)
    map@k (AP)   = H_c / n + (R-1)(c - H_c) / (n (n-1))        (H_c: the c-th harmonic number;
                   each relevant passage at rank p adds (1 + relevant ones above it) / p / R)
    ndcg@k       = (sum of gains / n) * sum_{r<=c} 1/log2(r+1)  /  ideal DCG@k

with trec_eval's conventions as in :mod:`densescale.eval.metrics`: a query with no relevant
passage scores 0, the mean is over every query of ``qrels``, and nDCG uses the grades themselves
as linear gains whatever ``relevance_level``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import numpy as np

from .metrics import _NAME_RE, DEFAULT_METRICS


def _first_relevant_rr(n: int, r: int, cut: int) -> float:
    """E[1/rank of the first relevant passage, 0 past ``cut``] for r relevant among n."""
    total, p_none_before = 0.0, 1.0
    for rank in range(1, cut + 1):
        p_here = p_none_before * r / (n - rank + 1)
        total += p_here / rank
        p_none_before *= (n - r - rank + 1) / (n - rank + 1)
        if p_none_before <= 0.0:
            break
    return total


def _harmonic(c: int) -> float:
    return float(np.sum(1.0 / np.arange(1, c + 1))) if c > 0 else 0.0


def _one_query(family: str, k: int | None, grades: list[int], n: int, depth: int, level: int):
    cut = min(n, depth if k is None else min(k, depth))
    r = sum(1 for g in grades if g >= level)
    if family == "ndcg":
        gains = sorted((g for g in grades if g > 0), reverse=True)
        if not gains:
            return 0.0
        top = gains if k is None else gains[:k]
        ideal = sum(g / math.log2(i + 2) for i, g in enumerate(top))
        discount = sum(1.0 / math.log2(i + 2) for i in range(cut))
        return sum(gains) / n * discount / ideal
    if r == 0:
        return 0.0
    if family == "recall":
        return cut / n
    if family in ("precision", "p"):
        return r * cut / (n * k)
    if family == "mrr":
        return _first_relevant_rr(n, r, cut)
    if family == "map":
        h = _harmonic(cut)
        return h / n + ((r - 1) * (cut - h) / (n * (n - 1)) if n > 1 else 0.0)
    raise AssertionError(family)


def random_ranking_metrics(
    qrels: Mapping,
    corpus_size: int,
    metrics: Iterable[str] = DEFAULT_METRICS,
    *,
    relevance_level: int = 1,
    depth: int | None = None,
) -> dict[str, float]:
    """Expected value of each metric when every query's ranking is a uniform random permutation
    of ``corpus_size`` passages, cut at ``depth`` (the run depth; ``None``: the whole corpus).

    ``qrels``: ``{qid: {docid: grade}}`` as for :func:`densescale.ranking_metrics`; only the
    grades are used. ``metrics``: densescale names (``mrr@10``, ``ndcg@10``, ``recall@100``,
    ``map``, ``map@k``, ``precision@k``). Returns ``{metric: mean over queries}``.

    Raises ``ValueError`` for an empty ``qrels``, ``corpus_size`` < 1, a query with more judged
    passages than the corpus holds, or a metric name outside those families.
    """
    if not isinstance(corpus_size, (int, np.integer)) or corpus_size < 1:
        raise ValueError(f"corpus_size must be an int >= 1, got {corpus_size!r}")
    if depth is not None and (not isinstance(depth, (int, np.integer)) or depth < 1):
        raise ValueError(f"depth must be an int >= 1 or None, got {depth!r}")
    if not isinstance(qrels, Mapping) or not qrels:
        raise ValueError("qrels must be a non-empty mapping {qid: {docid: grade}}")
    n, d = int(corpus_size), int(depth or corpus_size)
    parsed = []
    for name in metrics:
        m = _NAME_RE.match(str(name).strip().lower())
        if m is None or (m.group(1) in ("precision", "p") and m.group(2) is None):
            raise ValueError(
                f"metrics: {name!r} has no random-ranking expectation here; expected mrr, ndcg, "
                "recall, map (each optionally @k) or precision@k"
            )
        parsed.append((name, m.group(1), int(m.group(2)) if m.group(2) else None))
    out = {name: 0.0 for name, _, _ in parsed}
    for qid, docs in qrels.items():
        grades = [int(g) for g in docs.values()]
        if len(grades) > n:
            raise ValueError(
                f"qrels[{qid!r}] judges {len(grades)} passages, more than corpus_size={n}"
            )
        for name, family, k in parsed:
            out[name] += _one_query(family, k, grades, n, d, relevance_level)
    return {name: v / len(qrels) for name, v in out.items()}


def above_chance(
    metrics: Mapping[str, float],
    stderr: Mapping[str, float | None],
    chance: Mapping[str, float],
    *,
    z: float = 3.0,
) -> dict[str, bool]:
    """``{metric: True}`` where the mean is clearly above its random-ranking level: at least ``z``
    standard errors (over queries) above it. A metric without a chance level or a standard error
    is left out. This is what tells signal from noise in a cell whose CE is near ln(K+1)."""
    out = {}
    for name, value in metrics.items():
        se, level = stderr.get(name), chance.get(name)
        if se is None or level is None:
            continue
        out[name] = bool(value - level >= z * max(se, 1e-12))
    return out
