"""Training dual encoders with the fused contrastive loss (resumable, DDP-ready)."""

from densescale.train.config import TrainConfig
from densescale.train.result import TrainResult
from densescale.train.trainer import train

__all__ = ["TrainConfig", "TrainResult", "train"]
