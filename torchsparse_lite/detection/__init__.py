"""CenterPoint-style 3D object detection on sparse voxels.

voxelize -> :class:`SparseBackbone8x` (submanifold residual blocks, strided
sparse convs, stride 8) -> ``ToBEV`` -> 2D neck -> one CenterHead per class
group (heatmap, offset, z, log size, sin/cos yaw); decoding by top-k peaks and
rotated (or circle) NMS; KITTI-style AP_R40 in BEV and 3D.
"""

from .config import DEFAULT_CLASSES, DetectorConfig
from .data import DetectionSample, synthetic_sample, toy_sample
from .decode import decode
from .engine import evaluate_detector, load_detector, train_detector
from .iou import bev_iou, iou_3d
from .metrics import average_precision, evaluate
from .model import CenterPointDetector
from .nms import circle_nms, rotated_nms

__all__ = [
    "DEFAULT_CLASSES",
    "CenterPointDetector",
    "DetectionSample",
    "DetectorConfig",
    "average_precision",
    "bev_iou",
    "circle_nms",
    "decode",
    "evaluate",
    "evaluate_detector",
    "iou_3d",
    "load_detector",
    "rotated_nms",
    "synthetic_sample",
    "toy_sample",
    "train_detector",
]
