"""``ContrastiveLoss``: the nn.Module around ``densescale.contrastive_loss`` (skeleton)."""

from __future__ import annotations

import torch
from torch import nn

from densescale.ops.contrastive_loss import contrastive_loss


class ContrastiveLoss(nn.Module):
    def __init__(self, scale: float = 1.0, **kwargs) -> None:
        super().__init__()
        self.scale = scale
        self.kwargs = kwargs

    def forward(self, q: torch.Tensor, p: torch.Tensor, **kwargs) -> torch.Tensor:
        return contrastive_loss(q, p, scale=self.scale, **{**self.kwargs, **kwargs})
