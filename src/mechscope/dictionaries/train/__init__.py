"""Dictionary training: one trainer for every variant (``Trainer``, ``TrainerConfig``)."""

from mechscope.dictionaries.train.config import TrainerConfig
from mechscope.dictionaries.train.trainer import Trainer

__all__ = ["Trainer", "TrainerConfig"]
