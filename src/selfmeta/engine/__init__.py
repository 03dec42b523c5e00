"""Engine: configuration, optimizers and schedule, checkpoints, the training loop."""

from selfmeta.engine.config import TrainConfig
from selfmeta.engine.model import embed, load_backbone
from selfmeta.engine.trainer import TrainResult, train

__all__ = ["TrainConfig", "TrainResult", "embed", "load_backbone", "train"]
