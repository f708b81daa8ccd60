"""Ranking metrics with trec_eval conventions (SPEC 3.3), computed by ``ir-measures``.

``ir-measures`` (MacAvaney, Macdonald, Ounis, "Streamlining Evaluation with ir-measures",
ECIR 2022) routes each measure to a provider; the ones named here go to ``pytrec_eval``
(trec_eval 9 underneath; ``RR@k`` as trec_eval's ``recip_rank`` of the run cut to its top k),
except ``Judged@k``, which ir-measures computes itself. This module adds what the providers do
not agree on:

- **ties** are broken as trec_eval does, for every provider: a query's run is ordered by score
  descending, then document id descending (byte order), and the providers are handed strictly
  decreasing scores in that order (a rank-preserving relabelling, so rank-based measures are
  unchanged). The caller's rank order is ignored.
- **averaging** is over every query of ``qrels``; one absent from the run (or with an empty run)
  scores 0 on every measure; run queries absent from ``qrels`` are ignored (``trec_eval -c``).
- **ids** are compared as strings: ``int`` and ``numpy`` integer query and document ids are
  written as ``str(int(id))`` in both ``qrels`` and ``run`` (pandas gives ints, TREC files give
  strings); any other id type is a ``TypeError`` naming the argument. ``1`` and ``"1"`` in one
  mapping are the same id, so both at once is a ``ValueError``.
- **relevance_level** becomes the ``rel=`` parameter of every measure that has one (RR, P, R, AP,
  SetR, Success, ...) unless the name sets it (``AP(rel=2)``). nDCG has no such parameter: it uses
  the grades themselves as linear gains (grades <= 0 gain nothing), as trec_eval does whatever
  its ``-l``.

Per query, with rel(i) = 1 when the document at rank i has grade >= relevance_level and
R = number of such documents (trec_eval's definitions):
    mrr@k  (RR@k)   = 1 / (first relevant rank) if it is <= k, else 0
    precision@k (P@k) = sum_{i<=k} rel(i) / k
    recall@k (R@k)  = sum_{i<=k} rel(i) / R;     recall (SetR): the same over the whole run
    map@k (AP@k)    = sum_{i<=k, rel(i)} precision@i / R           (map: no cut)
    ndcg@k (nDCG@k) = sum_{i<=k} g(i) / log2(i + 1)  /  the same over the ideal order of all judged
                      gains (Jarvelin & Kekalainen 2002, linear gain g = grade)
"""

from __future__ import annotations

import heapq
import math
import numbers
import operator
import re
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

import numpy as np

_NAME_RE = re.compile(r"^(mrr|ndcg|recall|map|precision|p)(?:@(\d+))?$")
DEFAULT_METRICS = ("mrr@10", "ndcg@10", "recall@100", "map")
_score = operator.itemgetter(1)

# densescale family -> (ir-measures name with a cutoff, name without one)
_FAMILY = {
    "mrr": ("RR@{k}", "RR"),
    "ndcg": ("nDCG@{k}", "nDCG"),
    "recall": ("R@{k}", "SetR"),
    "map": ("AP@{k}", "AP"),
    "precision": ("P@{k}", None),
    "p": ("P@{k}", None),
}


class ParsedMetric(NamedTuple):
    """One requested metric: ``name`` as the caller gave it, ``measure`` the ir-measures measure
    that computes it (with ``rel=`` already set from ``relevance_level``)."""

    name: str
    measure: Any


def _ir_measures():
    try:
        import ir_measures
    except ImportError:  # pragma: no cover - a declared dependency
        raise ImportError(
            "densescale.ranking_metrics needs the ir-measures package: pip install ir-measures"
        ) from None
    return ir_measures


def _expected() -> str:
    return (
        "expected mrr, ndcg, recall, map, precision (each optionally @k, e.g. 'ndcg@10') or an "
        "ir-measures name such as 'nDCG@10', 'RR@10', 'R@1000', 'P@5', 'AP', 'Judged@10', "
        "'AP(rel=2)'"
    )


def parse_metrics(metrics: Iterable[str], relevance_level: int = 1) -> list[ParsedMetric]:
    """Resolve metric names to ir-measures measures, before any work starts.

    Names are densescale's (``mrr@10``, ``ndcg@10``, ``recall@100``, ``map``, ``map@k``,
    ``precision@k``/``p@k``, case-insensitive; ``mrr``, ``ndcg``, ``recall`` without a cutoff use the
    whole run) or any ir-measures name that an installed provider computes (``nDCG@10``,
    ``RR@10``, ``R@1000``, ``P@5``, ``AP``, ``Judged@10``, ``AP(rel=2)``, ...).

    Returns ``[ParsedMetric(name, measure)]`` in the given order. Raises ``TypeError`` for a name
    that is not a ``str`` and ``ValueError`` (naming ``metrics``) for an unknown name, a cutoff
    < 1, precision without a cutoff, a measure no installed provider computes, or no name at all.
    """
    ir_measures = _ir_measures()
    if isinstance(metrics, str):
        metrics = (metrics,)
    if not isinstance(relevance_level, numbers.Integral) or isinstance(relevance_level, bool):
        raise TypeError(f"relevance_level must be an int >= 1, got {relevance_level!r}")
    if relevance_level < 1:
        raise ValueError(f"relevance_level must be an int >= 1, got {relevance_level!r}")
    parsed: list[ParsedMetric] = []
    for m in metrics:
        if not isinstance(m, str):
            raise TypeError(f"metrics must be names (str), got {type(m).__name__}")
        text = m.strip()
        match = _NAME_RE.match(text.lower())
        if match is not None:
            family, cut = match.group(1), match.group(2)
            with_cut, without_cut = _FAMILY[family]
            if cut is None and without_cut is None:
                raise ValueError(
                    f"metrics: precision needs a cutoff such as 'precision@10', got {m!r}"
                )
            if cut is not None and int(cut) < 1:
                raise ValueError(f"metrics: cutoff must be >= 1, got {m!r}")
            text = without_cut if cut is None else with_cut.format(k=int(cut))
        try:
            measure = ir_measures.parse_measure(text)
        except (NameError, ValueError, AssertionError, TypeError, SyntaxError) as e:
            raise ValueError(f"metrics: unknown metric {m!r} ({e}); {_expected()}") from None
        cutoff = measure.params.get("cutoff")
        if cutoff is not None and (not isinstance(cutoff, int) or cutoff < 1):
            raise ValueError(f"metrics: cutoff must be an integer >= 1, got {m!r}")
        if "rel" in measure.SUPPORTED_PARAMS and "rel" not in measure.params:
            measure = measure(rel=int(relevance_level))
        if not ir_measures.DefaultPipeline.supports(measure):
            raise ValueError(
                f"metrics: no installed ir-measures provider computes {m!r} ({measure}); "
                f"{_expected()}"
            )
        parsed.append(ParsedMetric(m, measure))
    if not parsed:
        raise ValueError("metrics must name at least one metric, got none")
    return parsed


def _id(name: str, where: str, value: object) -> str:
    """A query or document id as ``str``: ``str`` as is, ``int``/``np.integer`` as ``str(int)``."""
    if isinstance(value, str):
        return value
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return str(int(value))
    raise TypeError(
        f"{name}: {where} ids must be str or int (ints are compared as their decimal strings), "
        f"got {type(value).__name__} {value!r}"
    )


_PLAIN_NUMBERS = (int, float, np.float64, np.float32, np.int64, np.int32)


def _check_values(name: str, raw_qid: object, docs: Mapping, *, grades: bool) -> None:
    """Raise the precise error for the first bad value of one query (the slow path)."""
    for raw_docid, v in docs.items():
        where = f"{name}[{raw_qid!r}][{raw_docid!r}]"
        if grades:
            if isinstance(v, bool) or not isinstance(v, numbers.Integral):
                raise TypeError(f"{where} must be an integer grade, got {type(v).__name__} {v!r}")
        else:
            if isinstance(v, bool) or not isinstance(v, numbers.Real):
                raise TypeError(f"{where} must be a number, got {type(v).__name__} {v!r}")
            if math.isnan(float(v)):
                raise ValueError(f"{where} is NaN")


def _normalise(name: str, d: object, *, grades: bool) -> dict[str, dict[str, Any]]:
    """Validate ``{qid: {docid: value}}`` and return it with ``str`` ids.

    ``grades``: values must be integers (qrels) and are returned as ``int``; otherwise values
    must be real numbers (run scores), NaN is refused, and a query whose scores tie gets strictly
    decreasing float scores in trec_eval order (score descending, docid descending), so every
    ir-measures provider ranks it the same way (untied scores are kept: every provider orders
    them alike). Empty run queries are dropped. Checks run per query on the set of value and id
    types (C loops); the per-item Python path runs only for ids that need coercion.
    """
    if not isinstance(d, Mapping):
        raise TypeError(
            f"{name} must be a mapping {{qid: {{docid: value}}}}, got {type(d).__name__}"
        )
    out: dict[str, dict[str, Any]] = {}
    for raw_qid, docs in d.items():
        qid = _id(name, "query", raw_qid)
        if qid in out:
            raise ValueError(
                f"{name} holds query id {qid!r} twice (as an int and as a str); ids are compared "
                f"as strings"
            )
        if not isinstance(docs, Mapping):
            raise TypeError(
                f"{name}[{raw_qid!r}] must be a mapping {{docid: value}}, got {type(docs).__name__}"
            )
        if not docs:
            if grades:
                out[qid] = {}
            continue
        keys = list(docs)
        if set(map(type, keys)) != {str}:
            keys = [_id(name, "document", k) for k in keys]
            if len(set(keys)) != len(keys):
                raise ValueError(
                    f"{name}[{raw_qid!r}] holds a document id twice (as an int and as a str); ids "
                    f"are compared as strings"
                )
        vals = list(docs.values())
        types = set(map(type, vals))
        if grades:
            if not all(
                issubclass(t, numbers.Integral) and not issubclass(t, (bool, np.bool_))
                for t in types
            ):
                _check_values(name, raw_qid, docs, grades=True)
            out[qid] = dict(zip(keys, map(int, vals)))
            continue
        if not types.issubset(_PLAIN_NUMBERS) and not all(
            issubclass(t, numbers.Real) and not issubclass(t, (bool, np.bool_)) for t in types
        ):
            _check_values(name, raw_qid, docs, grades=False)
        scores = list(map(float, vals))
        if any(map(math.isnan, scores)):
            _check_values(name, raw_qid, docs, grades=False)
        if len(set(scores)) == len(scores):
            out[qid] = dict(zip(keys, scores))
        else:
            order = sorted(zip(scores, keys), reverse=True)
            n = len(order)
            out[qid] = {doc: float(n - i) for i, (_, doc) in enumerate(order)}
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
    """trec_eval-equal ranking metrics through ir-measures (see the module docstring).

    qrels: ``{qid: {docid: grade (int)}}``; run: ``{qid: {docid: score}}``; ids ``str`` or
    ``int``/``np.integer`` (compared as strings). metrics: densescale names (``mrr@10``,
    ``ndcg@10``, ``recall@100``, ``map``, ``map@k``, ``precision@k``) or ir-measures names
    (``nDCG@10``, ``RR@10``, ``R@1000``, ``P@5``, ``AP``, ``Judged@10``, ...), see
    ``parse_metrics``. relevance_level: the smallest grade that counts as relevant.

    Returns ``{name as given: mean over the queries of qrels}`` (``NumQ``-style counting measures
    are summed, as ir-measures aggregates them), or ``(means, {qid (str): {name: value}})`` when
    ``per_query``. Raises ``TypeError``/``ValueError`` naming ``qrels``, ``run``, ``metrics`` or
    ``relevance_level`` for bad input, before any computation.
    """
    ir_measures = _ir_measures()
    parsed = parse_metrics(metrics, relevance_level)
    qrels_s = _normalise("qrels", qrels, grades=True)
    run_s = _normalise("run", run, grades=False)
    if not qrels_s:
        raise ValueError("qrels must hold at least one query, got an empty mapping")

    names: dict[Any, list[str]] = {}
    for p in parsed:
        names.setdefault(p.measure, []).append(p.name)
    measures = list(names)
    values: dict[Any, dict[str, float]] = {m: {} for m in measures}
    judged = {q: docs for q, docs in qrels_s.items() if docs}
    shared = {q: docs for q, docs in run_s.items() if q in judged}
    if judged and shared:
        # RR@k is trec_eval's recip_rank of the run cut to its top k (in trec_eval order; scores
        # are untied by now): pytrec_eval computes it on the cut run, with no sort of the whole
        # run in Python (ir-measures would send RR@k to its MS MARCO provider, which does one).
        by_cut: dict[int, dict[Any, Any]] = {}
        rest = []
        for m in measures:
            cut = m.params.get("cutoff")
            if m.NAME == "RR" and cut is not None and not m["judged_only"]:
                by_cut.setdefault(int(cut), {})[ir_measures.RR(rel=m["rel"])] = m
            else:
                rest.append(m)
        jobs = [(rest, shared, None)] if rest else []
        for cut, base in by_cut.items():
            top = {q: dict(heapq.nlargest(cut, d.items(), key=_score)) for q, d in shared.items()}
            jobs.append((list(base), top, base))
        for job_measures, job_run, back in jobs:
            evaluator = ir_measures.evaluator(job_measures, judged)
            for metric in evaluator.iter_calc(job_run):
                if metric.query_id in shared:  # queries absent from the run score 0 below
                    m = metric.measure if back is None else back[metric.measure]
                    values[m][metric.query_id] = float(metric.value)

    per: dict[str, dict[str, float]] = {q: {} for q in qrels_s}
    means: dict[str, float] = {}
    for m in measures:
        agg = m.aggregator()
        for q in qrels_s:
            v = values[m].get(q, 0.0)
            agg.add(v)
            for name in names[m]:
                per[q][name] = v
        mean = float(agg.result())
        for name in names[m]:
            means[name] = mean
    means = {p.name: means[p.name] for p in parsed}
    per = {q: {p.name: vals[p.name] for p in parsed} for q, vals in per.items()}
    return (means, per) if per_query else means
