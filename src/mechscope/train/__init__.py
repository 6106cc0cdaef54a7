"""mechscope.train: a small, resumable AdamW trainer (see ``trainer.py`` for the API and an example)."""

from mechscope.train.batches import BatchSource, FullBatch, RandomBatches, ReplayIterator
from mechscope.train.checkpoint import Checkpoint, latest_checkpoint, list_checkpoints, read_checkpoint
from mechscope.train.config import TrainConfig
from mechscope.train.progress import read_metrics
from mechscope.train.trainer import TrainResult, load_weights, train

__all__ = ["BatchSource", "Checkpoint", "FullBatch", "RandomBatches", "ReplayIterator", "TrainConfig",
           "TrainResult", "latest_checkpoint", "list_checkpoints", "load_weights", "read_checkpoint",
           "read_metrics", "train"]
