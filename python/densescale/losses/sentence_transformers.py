"""``FusedMultipleNegativesRankingLoss``: sentence-transformers' MultipleNegativesRankingLoss on
densescale's fused loss (same constructor style, ``forward(sentence_features, labels)``,
``get_config_dict``; equal in value and gradients).

Columns follow sentence-transformers: (anchor, positive, negative_1, ..., negative_n). Anchors are
the queries ``q`` (B, D), positives ``p`` (B, D) (G = 1, in-batch), and the negative columns are
concatenated into the shared pool ``negatives`` (n*B, D): sentence-transformers scores every anchor
against every positive and every negative of the batch, which is exactly that layout. Cosine
similarity is computed by normalising the embeddings first, then taking dot products.

Requires the ``sentence-transformers`` package (imported when this module is).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch
import torch.nn.functional as F
from sentence_transformers import util as st_util
from torch import Tensor, nn

from densescale import _validation as V
from densescale.losses.distributed import distributed_world_size, gathered_contrastive_loss
from densescale.ops.contrastive_loss import contrastive_loss

try:  # sentence-transformers >= 5: one merged forward for like-width columns
    from sentence_transformers.base.losses.merged_forward import embed_columns as _embed_columns
except ImportError:  # older releases: one forward per column
    _embed_columns = None

__all__ = ["FusedMultipleNegativesRankingLoss"]

_COSINE = {"cos_sim", "cosine"}
_DOT = {"dot_score", "dot"}
_SUPPORTED_DIRECTIONS = {("query_to_doc",): False, ("query_to_doc", "doc_to_query"): True}


def _similarity_kind(fct: Callable) -> str:
    """Return "cosine" or "dot" for the similarity functions a fused dot-product loss can reproduce."""
    name = getattr(fct, "__name__", type(fct).__name__)
    if name == "similarity" and hasattr(getattr(fct, "__self__", None), "similarity_fn_name"):
        name = str(fct.__self__.similarity_fn_name)  # model.similarity: resolve to its function
    if name in _COSINE:
        return "cosine"
    if name in _DOT:
        return "dot"
    raise ValueError(
        f"similarity_fct must be cosine (sentence_transformers.util.cos_sim) or dot product "
        f"(util.dot_score) for the fused loss, got {name}"
    )


class FusedMultipleNegativesRankingLoss(nn.Module):
    """Drop-in for ``sentence_transformers.losses.MultipleNegativesRankingLoss`` (InfoNCE with
    in-batch negatives and optional hard-negative columns) on densescale's fused kernels.

    Args:
        model: the SentenceTransformer being trained.
        scale: multiplies similarities (1/temperature); 20 like sentence-transformers.
        similarity_fct: ``util.cos_sim`` (default) or ``util.dot_score``.
        gather_across_devices: under torch.distributed, every rank's positives and negatives are
            candidates for every anchor (``densescale.losses.distributed``).
        directions: ``("query_to_doc",)`` (default) or ``("query_to_doc", "doc_to_query")`` with
            ``partition_mode="per_direction"`` (the symmetric loss).
        partition_mode: "joint" or "per_direction", as sentence-transformers.
        backend: densescale backend ("auto", "cpp", "triton", "torch").

    Loss (mean over anchors i, columns c = [positives; negatives], s = scale * sim)::

        loss_i = logsumexp_j s(a_i, c_j) - s(a_i, p_i)
    """

    def __init__(
        self,
        model: nn.Module,
        scale: float = 20.0,
        similarity_fct: Callable[[Tensor, Tensor], Tensor] = st_util.cos_sim,
        gather_across_devices: bool = False,
        directions: tuple[str, ...] = ("query_to_doc",),
        partition_mode: str = "joint",
        backend: str = "auto",
    ) -> None:
        super().__init__()
        if isinstance(scale, bool) or not isinstance(scale, (int, float)):
            raise TypeError(f"scale must be a float, got {type(scale).__name__}")
        if not (math.isfinite(scale) and scale > 0):
            raise ValueError(f"scale must be a positive finite value, got {scale}")
        V.check_choice("partition_mode", partition_mode, ("joint", "per_direction"))
        V.check_choice("backend", backend, V.BACKENDS)
        directions = tuple(directions)
        symmetric = _SUPPORTED_DIRECTIONS.get(directions)
        if symmetric is None or (symmetric and partition_mode != "per_direction"):
            raise ValueError(
                "directions must be ('query_to_doc',) or ('query_to_doc', 'doc_to_query') with "
                f"partition_mode='per_direction' for the fused loss, got {directions} with "
                f"partition_mode={partition_mode!r}; use sentence-transformers' own "
                "MultipleNegativesRankingLoss for the other variants"
            )
        self.model = model
        self.scale = float(scale)
        self.similarity_fct = similarity_fct
        self._normalize = _similarity_kind(similarity_fct) == "cosine"
        self.gather_across_devices = gather_across_devices
        self.directions = directions
        self.partition_mode = partition_mode
        self.symmetric = symmetric
        self.backend = backend

    def embed(self, sentence_features: Iterable[dict[str, Tensor]]) -> list[Tensor]:
        """One (B, D) embedding per input column, computed as sentence-transformers does."""
        features = list(sentence_features)
        if _embed_columns is not None:
            return _embed_columns(self.model, features)
        return [self.model(f)["sentence_embedding"] for f in features]

    def forward(
        self, sentence_features: Iterable[dict[str, Tensor]], labels: Tensor | None
    ) -> Tensor:
        """Mean loss over the anchors of the batch (``labels`` are unused, as in sentence-transformers)."""
        return self.compute_loss_from_embeddings(self.embed(sentence_features), labels)

    def compute_loss_from_embeddings(
        self, embeddings: list[Tensor], labels: Tensor | None = None
    ) -> Tensor:
        """embeddings: [anchors (B, D), positives (B, D), negatives_1 (B, D), ...]."""
        if len(embeddings) < 2:
            raise ValueError(
                f"expected at least 2 columns (anchor, positive), got {len(embeddings)}"
            )
        q, p = embeddings[0], embeddings[1]
        negatives = torch.cat(embeddings[2:]) if len(embeddings) > 2 else None
        if self._normalize:
            q, p = F.normalize(q, dim=-1), F.normalize(p, dim=-1)
            negatives = None if negatives is None else F.normalize(negatives, dim=-1)
        kwargs = {
            "negatives": negatives,
            "scale": self.scale,
            "symmetric": self.symmetric,
            "reduction": "mean",
            "backend": self.backend,
        }
        if self.gather_across_devices and distributed_world_size() > 1:
            return gathered_contrastive_loss(q, p, **kwargs)
        return contrastive_loss(q, p, **kwargs)

    def get_config_dict(self) -> dict[str, Any]:
        return {
            "scale": self.scale,
            "similarity_fct": getattr(
                self.similarity_fct, "__name__", type(self.similarity_fct).__name__
            ),
            "gather_across_devices": self.gather_across_devices,
            "directions": self.directions,
            "partition_mode": self.partition_mode,
            "backend": self.backend,
        }

    @property
    def temperature(self) -> float:
        return 1.0 / self.scale

    @property
    def citation(self) -> str:
        # InfoNCE, the objective this loss computes (as sentence-transformers cites for MNRL).
        return """
@misc{oord2018cpc,
      title={Representation Learning with Contrastive Predictive Coding},
      author={Aaron van den Oord and Yazhe Li and Oriol Vinyals},
      year={2018},
      eprint={1807.03748},
      archivePrefix={arXiv},
      primaryClass={cs.LG},
      url={https://arxiv.org/abs/1807.03748},
}
"""
