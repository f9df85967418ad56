"""Point-cloud loaders and generators (installed as ``torchsparse_lite.datasets``).

* ``synthetic``: procedural street / room scenes ray-cast by simulated sensors (the embedded default data);
* ``semantickitti``, ``kitti``, ``nuscenes``, ``open3d_io``: real-file readers with corrupt-file checks;
* ``augment``: rotations, flips, scaling, jitter that move boxes with the points;
* ``segmentation``: ``SegmentationDataset`` and ``collate_segmentation``.
"""

from .augment import Compose, RandomFlip, RandomJitter, RandomRotateZ, RandomScale, default_augmentation
from .kitti import load_kitti_bin
from .nuscenes import load_nuscenes_bin
from .open3d_io import load_point_file
from .segmentation import SegmentationDataset, collate_segmentation
from .semantickitti import LEARNING_MAP, SEMANTICKITTI_CLASSES, load_semantickitti
from .synthetic import DETECTION_CLASSES, INDOOR_CLASSES, OUTDOOR_CLASSES, Scan, generate_scan

__all__ = [
    "DETECTION_CLASSES",
    "INDOOR_CLASSES",
    "LEARNING_MAP",
    "OUTDOOR_CLASSES",
    "SEMANTICKITTI_CLASSES",
    "Compose",
    "RandomFlip",
    "RandomJitter",
    "RandomRotateZ",
    "RandomScale",
    "Scan",
    "SegmentationDataset",
    "collate_segmentation",
    "default_augmentation",
    "generate_scan",
    "load_kitti_bin",
    "load_nuscenes_bin",
    "load_point_file",
    "load_semantickitti",
]
