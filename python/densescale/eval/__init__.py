"""densescale.eval: the paper's contrastive entropy, trec_eval-equal ranking metrics, and the
evaluation pipeline (encode -> search -> run -> metrics -> CE -> record)."""

from __future__ import annotations

from .bm25 import bm25_baseline, bm25_run
from .chance import above_chance, random_ranking_metrics
from .entropy import CEResult, contrastive_entropy, sample_negatives
from .metrics import DEFAULT_METRICS, ParsedMetric, parse_metrics, rank_run, ranking_metrics
from .pipeline import evaluate, exact_search

__all__ = [
    "DEFAULT_METRICS",
    "CEResult",
    "ParsedMetric",
    "above_chance",
    "bm25_baseline",
    "bm25_run",
    "contrastive_entropy",
    "evaluate",
    "exact_search",
    "parse_metrics",
    "random_ranking_metrics",
    "rank_run",
    "ranking_metrics",
    "sample_negatives",
]
