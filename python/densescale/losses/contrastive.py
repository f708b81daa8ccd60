"""``ContrastiveLoss``: the nn.Module around ``densescale.contrastive_loss``.

Adds a learnable temperature (stored as a log-scale parameter, clamped like CLIP's logit scale)
and ``gather=True`` for data-parallel training (candidates of every rank are negatives, see
``densescale.losses.distributed``).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from densescale import _validation as V
from densescale.losses.distributed import distributed_world_size, gathered_contrastive_loss
from densescale.ops.contrastive_loss import REDUCTIONS, contrastive_loss

__all__ = ["ContrastiveLoss"]


class ContrastiveLoss(nn.Module):
    """InfoNCE loss module: ``forward(q (B, D), p (B*G, D), negatives=(K, D), doc_ids=...)``.

    Args:
        scale: multiplies scores (1/temperature); with ``learnable_scale`` its initial value.
        learnable_scale: learn the scale as ``exp(log_scale)`` (parameter ``log_scale``), clamped
            to at most ``max_scale`` (CLIP clamps its logit scale at 100 the same way; past the
            clamp the scale gets no gradient).
        max_scale: upper bound of the learnable scale.
        in_batch, symmetric, reduction, backend: as in ``densescale.contrastive_loss``.
        gather: under an initialised ``torch.distributed`` with more than one rank, score this
            rank's queries against the candidates of every rank (each rank returns the loss of its
            own rows; with DDP's gradient averaging and reduction="mean" the gradient is that of
            the global mean over all ranks' queries). Without distributed it is a no-op.
        process_group: the group to gather over (default: the world).

    The loss is ``densescale.contrastive_loss(q, p, negatives=..., scale=self.current_scale(), ...)``.
    """

    def __init__(
        self,
        scale: float = 1.0,
        *,
        learnable_scale: bool = False,
        max_scale: float = 100.0,
        in_batch: bool = True,
        symmetric: bool = False,
        reduction: str = "mean",
        backend: str = "auto",
        gather: bool = False,
        process_group: Any = None,
    ) -> None:
        super().__init__()
        if (
            isinstance(scale, bool)
            or not isinstance(scale, (int, float))
            or not math.isfinite(scale)
        ):
            raise TypeError(f"scale must be a finite float, got {scale!r}")
        V.check_choice("reduction", reduction, REDUCTIONS)
        V.check_choice("backend", backend, V.BACKENDS)
        if symmetric and not in_batch:
            raise ValueError("symmetric=True needs in_batch=True")
        if learnable_scale:
            if not scale > 0:
                raise ValueError(f"a learnable scale must start positive, got scale={scale}")
            if not (math.isfinite(max_scale) and max_scale >= scale):
                raise ValueError(f"max_scale must be finite and >= scale={scale}, got {max_scale}")
            self.log_scale = nn.Parameter(torch.tensor(math.log(scale), dtype=torch.float32))
        else:
            self.register_parameter("log_scale", None)
        self.init_scale = float(scale)
        self.max_scale = float(max_scale)
        self.learnable_scale = learnable_scale
        self.in_batch = in_batch
        self.symmetric = symmetric
        self.reduction = reduction
        self.backend = backend
        self.gather = gather
        self.process_group = process_group

    def current_scale(self) -> float | torch.Tensor:
        """The scale used now: a float, or the 0-d tensor ``exp(min(log_scale, log(max_scale)))``."""
        if self.log_scale is None:
            return self.init_scale
        return self.log_scale.clamp(max=math.log(self.max_scale)).exp()

    @property
    def scale(self) -> float:
        """Current scale as a plain float (for logging)."""
        scale = self.current_scale()
        return float(scale.detach()) if isinstance(scale, torch.Tensor) else scale

    def forward(
        self,
        q: torch.Tensor,
        p: torch.Tensor,
        negatives: torch.Tensor | None = None,
        doc_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Loss of queries q (B, D) against candidates p (B*G, D) (+ negatives (K, D))."""
        kwargs = {
            "negatives": negatives,
            "in_batch": self.in_batch,
            "scale": self.current_scale(),
            "symmetric": self.symmetric,
            "doc_ids": doc_ids,
            "reduction": self.reduction,
            "backend": self.backend,
        }
        if self.gather and distributed_world_size(self.process_group) > 1:
            return gathered_contrastive_loss(q, p, group=self.process_group, **kwargs)
        return contrastive_loss(q, p, **kwargs)

    def extra_repr(self) -> str:
        scale = (
            f"learnable, init={self.init_scale}, max={self.max_scale}"
            if self.learnable_scale
            else self.init_scale
        )
        return (
            f"scale={scale}, in_batch={self.in_batch}, symmetric={self.symmetric}, "
            f"reduction={self.reduction!r}, backend={self.backend!r}, gather={self.gather}"
        )
