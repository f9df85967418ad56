"""Segmentation training, evaluation and prediction (``python -m torchsparse_lite train|eval|predict``)."""

from .checkpoint import load_checkpoint, load_model, save_checkpoint
from .metrics import accuracy, chance_miou, confusion_matrix, iou_per_class, mean_iou, summarize

__all__ = [
    "accuracy",
    "chance_miou",
    "confusion_matrix",
    "iou_per_class",
    "load_checkpoint",
    "load_model",
    "mean_iou",
    "save_checkpoint",
    "summarize",
]
