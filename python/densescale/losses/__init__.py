"""Loss modules and trainer adapters built on ``densescale.contrastive_loss``.

``ContrastiveLoss`` is always here; the adapters import their framework lazily:
``FusedMultipleNegativesRankingLoss`` (sentence-transformers) and ``ContrastiveTrainer`` /
``ContrastiveDataCollator`` (Hugging Face ``transformers.Trainer``).
"""

from __future__ import annotations

from densescale._lazy import lazy_attributes
from densescale.losses.contrastive import ContrastiveLoss

_LAZY = {
    "FusedMultipleNegativesRankingLoss": "densescale.losses.sentence_transformers",
    "ContrastiveTrainer": "densescale.losses.hf_trainer",
    "ContrastiveDataCollator": "densescale.losses.hf_trainer",
    "gathered_contrastive_loss": "densescale.losses.distributed",
    "all_gather_with_grad": "densescale.losses.distributed",
}

__all__ = [
    "ContrastiveDataCollator",
    "ContrastiveLoss",
    "ContrastiveTrainer",
    "FusedMultipleNegativesRankingLoss",
    "all_gather_with_grad",
    "gathered_contrastive_loss",
]


__getattr__, __dir__ = lazy_attributes(__name__, _LAZY, globals())
