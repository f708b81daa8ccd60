"""Training dual encoders with the fused contrastive loss (resumable, DDP-ready)."""

from densescale.train.config import TrainConfig
from densescale.train.trainer import TrainResult, train

__all__ = ["TrainConfig", "TrainResult", "train"]
