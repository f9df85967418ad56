"""Synthetic LiDAR scans: procedural street and room scenes ray-cast by simulated sensors.

``generate_scan(seed, kind="outdoor")`` is the embedded default data source of
torchsparse_lite: no download, deterministic from the seed.
"""

from .classes import DETECTION_CLASSES, IGNORE_INDEX, INDOOR_CLASSES, OUTDOOR_CLASSES
from .scan import Scan, generate_scan, scan_options
from .sensor import HDL64_ELEVATIONS_DEG, beam_elevations

__all__ = [
    "DETECTION_CLASSES",
    "HDL64_ELEVATIONS_DEG",
    "IGNORE_INDEX",
    "INDOOR_CLASSES",
    "OUTDOOR_CLASSES",
    "Scan",
    "beam_elevations",
    "generate_scan",
    "scan_options",
]
