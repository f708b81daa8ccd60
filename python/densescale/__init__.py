"""densescale: fused contrastive-loss and exact-search kernels, and a scaling-law study engine for
dense retrieval (Fang et al., "Scaling Laws For Dense Retrieval", SIGIR 2024)."""

from densescale.losses import ContrastiveLoss
from densescale.ops.contrastive_loss import contrastive_loss
from densescale.ops.search import score_candidates, search

__version__ = "0.1.0"

__all__ = [
    "ContrastiveLoss",
    "contrastive_loss",
    "score_candidates",
    "search",
]
