"""Loss modules and trainer adapters built on ``densescale.contrastive_loss``.

``ContrastiveLoss`` is always here; the adapters import their framework lazily:
``FusedMultipleNegativesRankingLoss`` (sentence-transformers) and ``ContrastiveTrainer`` /
``ContrastiveDataCollator`` (Hugging Face ``transformers.Trainer``).
"""

from __future__ import annotations

import importlib

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


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'densescale.losses' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
