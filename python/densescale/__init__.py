"""densescale: fused contrastive-loss and exact-search kernels, and a scaling-law study engine for
dense retrieval (Fang et al., "Scaling Laws For Dense Retrieval", SIGIR 2024).

Top-level names are resolved lazily, so ``import densescale.scaling`` (pure numpy/scipy) never
pulls in torch.
"""

from __future__ import annotations

from densescale._lazy import lazy_attributes

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS = {
    "contrastive_loss": "densescale.ops.contrastive_loss",
    "ContrastiveLoss": "densescale.losses",
    "search": "densescale.ops.search",
    "score_candidates": "densescale.ops.search",
    "search_engine": "densescale.ops.search",
    "FlatIndex": "densescale.index",
    "contrastive_entropy": "densescale.eval.entropy",
    "ranking_metrics": "densescale.eval.metrics",
    "write_trec_run": "densescale.data.trec",
    "read_trec_run": "densescale.data.trec",
    "read_qrels": "densescale.data.trec",
}

__all__ = [
    "ContrastiveLoss",
    "FlatIndex",
    "contrastive_entropy",
    "contrastive_loss",
    "ranking_metrics",
    "read_qrels",
    "read_trec_run",
    "score_candidates",
    "search",
    "search_engine",
    "write_trec_run",
]


__getattr__, __dir__ = lazy_attributes(__name__, _EXPORTS, globals())
