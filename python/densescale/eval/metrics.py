"""Ranking metrics with trec_eval conventions (SPEC 3.3), equal to pytrec_eval on the same inputs.

Conventions (trec_eval 9):
- a run is ordered by score descending, ties by document id descending (byte order), as trec_eval
  sorts; the caller's rank order is ignored;
- a document is relevant when its grade >= ``relevance_level`` (1); NDCG uses the grade itself as a
  linear gain (grades <= 0 gain nothing) and discount 1 / log2(rank + 1);
- every query of ``qrels`` is averaged; one absent from the run (or with no relevant document)
  scores 0 on every metric; run queries absent from ``qrels`` are ignored.

Per query, with rel(i) = 1 when the document at rank i is relevant, R = number of relevant docs:
    mrr@k       = 1 / (first relevant rank) if it is <= k, else 0
    precision@k = sum_{i<=k} rel(i) / k
    recall@k    = sum_{i<=k} rel(i) / R
    map@k       = sum_{i<=k, rel(i)} precision@i / R           (map: no cut)
    ndcg@k      = sum_{i<=k} g(i) / log2(i + 1)  /  the same over the ideal order of all judged gains
"""

from __future__ import annotations

import math
import numbers
import re
from collections.abc import Iterable, Mapping

_NAME_RE = re.compile(r"^(mrr|ndcg|recall|map|precision|p)(?:@(\d+))?$")
_CANONICAL = {"p": "precision"}
DEFAULT_METRICS = ("mrr@10", "ndcg@10", "recall@100", "map")


def parse_metrics(metrics: Iterable[str]) -> list[tuple[str, str, int | None]]:
    """[(name as given, family, cutoff or None)]; raises ValueError on an unknown name."""
    if isinstance(metrics, str):
        metrics = (metrics,)
    parsed = []
    for m in metrics:
        if not isinstance(m, str):
            raise TypeError(f"metrics must be names (str), got {type(m).__name__}")
        match = _NAME_RE.match(m.strip().lower())
        if match is None:
            raise ValueError(
                f"metrics: unknown metric {m!r}; expected mrr, ndcg, recall, map, precision, each "
                f"optionally with @k (e.g. 'ndcg@10')"
            )
        family = _CANONICAL.get(match.group(1), match.group(1))
        cut = int(match.group(2)) if match.group(2) is not None else None
        if cut is not None and cut < 1:
            raise ValueError(f"metrics: cutoff must be >= 1, got {m!r}")
        if family == "precision" and cut is None:
            raise ValueError(f"metrics: precision needs a cutoff such as 'precision@10', got {m!r}")
        parsed.append((m, family, cut))
    if not parsed:
        raise ValueError("metrics must name at least one metric, got none")
    return parsed


def _check_nested(name: str, d: object, numeric: type | tuple[type, ...]) -> None:
    if not isinstance(d, Mapping):
        raise TypeError(
            f"{name} must be a mapping {{qid: {{docid: value}}}}, got {type(d).__name__}"
        )
    for qid, docs in d.items():
        if not isinstance(docs, Mapping):
            raise TypeError(
                f"{name}[{qid!r}] must be a mapping {{docid: value}}, got {type(docs).__name__}"
            )
        for docid, v in docs.items():
            if isinstance(v, bool) or not isinstance(v, numeric):
                raise TypeError(
                    f"{name}[{qid!r}][{docid!r}] must be a number, got {type(v).__name__}"
                )
            if math.isnan(float(v)):
                raise ValueError(f"{name}[{qid!r}][{docid!r}] is NaN")


def _query_metrics(rels: Mapping, ranked: list, parsed, relevance_level: int) -> dict[str, float]:
    num_rel = sum(1 for g in rels.values() if g >= relevance_level)
    is_rel = [rels.get(d, 0) >= relevance_level for d in ranked]
    gains = [max(float(rels.get(d, 0)), 0.0) for d in ranked]
    ideal = sorted((float(g) for g in rels.values() if g > 0), reverse=True)
    out: dict[str, float] = {}
    for given, family, cut in parsed:
        n = len(ranked) if cut is None else min(cut, len(ranked))
        if family == "mrr":
            out[given] = next((1.0 / (i + 1) for i in range(n) if is_rel[i]), 0.0)
        elif family == "precision":
            out[given] = sum(is_rel[:n]) / cut
        elif family == "recall":
            out[given] = sum(is_rel[:n]) / num_rel if num_rel else 0.0
        elif family == "map":
            hits, total = 0, 0.0
            for i in range(n):
                if is_rel[i]:
                    hits += 1
                    total += hits / (i + 1)
            out[given] = total / num_rel if num_rel else 0.0
        else:  # ndcg
            dcg = sum(gains[i] / math.log2(i + 2) for i in range(n) if gains[i] > 0)
            m = len(ideal) if cut is None else min(cut, len(ideal))
            idcg = sum(ideal[i] / math.log2(i + 2) for i in range(m))
            out[given] = dcg / idcg if idcg > 0 else 0.0
    return out


def rank_run(docs: Mapping) -> list:
    """Document ids of one query's run in trec_eval order: score descending, then id descending."""
    return [
        d for d, _ in sorted(docs.items(), key=lambda x: (float(x[1]), str(x[0])), reverse=True)
    ]


def ranking_metrics(
    qrels: Mapping,
    run: Mapping,
    metrics: Iterable[str] = DEFAULT_METRICS,
    *,
    relevance_level: int = 1,
    per_query: bool = False,
):
    """trec_eval-equal ranking metrics.

    qrels: ``{qid: {docid: grade (int)}}``; run: ``{qid: {docid: score}}``.
    metrics: names ``mrr@k``, ``ndcg@k``, ``recall@k``, ``map``, ``map@k``, ``precision@k``
    (``mrr``, ``ndcg``, ``recall`` without a cutoff use the whole run).
    Returns ``{metric: mean over qrels queries}``, or ``(means, {qid: {metric: value}})`` when
    ``per_query``.
    """
    parsed = parse_metrics(metrics)
    _check_nested("qrels", qrels, numbers.Integral)
    _check_nested("run", run, numbers.Real)
    if len(qrels) == 0:
        raise ValueError("qrels must hold at least one query, got an empty mapping")
    if not isinstance(relevance_level, int) or relevance_level < 1:
        raise ValueError(f"relevance_level must be an int >= 1, got {relevance_level!r}")

    zero = {given: 0.0 for given, _, _ in parsed}
    per: dict = {}
    for qid, rels in qrels.items():
        docs = run.get(qid)
        if not docs:
            per[qid] = dict(zero)
            continue
        per[qid] = _query_metrics(rels, rank_run(docs), parsed, relevance_level)
    means = {given: sum(v[given] for v in per.values()) / len(per) for given, _, _ in parsed}
    return (means, per) if per_query else means
