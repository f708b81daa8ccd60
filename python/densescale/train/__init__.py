"""Training dual encoders with the fused contrastive loss (resumable, DDP-ready)."""

from densescale.train.config import TrainConfig
from densescale.train.pretrain import PretrainConfig, PretrainResult  # pretrain(): its module's
from densescale.train.result import TrainResult
from densescale.train.trainer import train

__all__ = ["PretrainConfig", "PretrainResult", "TrainConfig", "TrainResult", "train"]
