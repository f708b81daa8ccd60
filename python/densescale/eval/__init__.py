"""densescale.eval: the paper's contrastive entropy, trec_eval-equal ranking metrics, and the
evaluation pipeline (encode -> search -> run -> metrics -> CE -> record)."""

from __future__ import annotations

from .entropy import CEResult, contrastive_entropy, sample_negatives
from .metrics import DEFAULT_METRICS, rank_run, ranking_metrics
from .pipeline import evaluate, exact_search

__all__ = [
    "DEFAULT_METRICS",
    "CEResult",
    "contrastive_entropy",
    "evaluate",
    "exact_search",
    "rank_run",
    "ranking_metrics",
    "sample_negatives",
]
