"""Training that records everything a later view needs: checkpoints, metrics, dynamics."""

from shenjing.training.evaluate import Evaluation, evaluate
from shenjing.training.losses import get_loss, loss_task
from shenjing.training.recorder import Recorder
from shenjing.training.trainer import TrainConfig, resolve_device, train

__all__ = ["Evaluation", "Recorder", "TrainConfig", "evaluate", "get_loss", "loss_task",
           "resolve_device", "train"]
