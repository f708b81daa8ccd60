"""Loss modules and trainer adapters built on ``densescale.contrastive_loss``."""

from densescale.losses.contrastive import ContrastiveLoss

__all__ = ["ContrastiveLoss"]
