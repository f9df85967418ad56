"""Class names of the synthetic scenes and of the detection boxes."""

from __future__ import annotations

OUTDOOR_CLASSES: tuple[str, ...] = (
    "road",
    "sidewalk",
    "building",
    "terrain",
    "vegetation",
    "pole",
    "car",
    "person",
    "cyclist",
)
"""Semantic classes of :func:`generate_scan` with ``kind="outdoor"`` (ids 0..8)."""

INDOOR_CLASSES: tuple[str, ...] = (
    "floor",
    "wall",
    "ceiling",
    "table",
    "chair",
    "sofa",
    "bed",
    "cabinet",
    "lamp",
    "person",
)
"""Semantic classes of :func:`generate_scan` with ``kind="indoor"`` (ids 0..9)."""

DETECTION_CLASSES: tuple[str, ...] = ("car", "pedestrian", "cyclist")
"""Box classes: ``Scan.box_labels`` indexes this tuple."""

IGNORE_INDEX = 255
"""Label of points without a class (none in synthetic scans; used by the real loaders)."""


def class_id(names: tuple[str, ...], name: str) -> int:
    """Index of ``name`` in ``names`` (ValueError naming the valid names otherwise)."""
    try:
        return names.index(name)
    except ValueError:
        raise ValueError(f"unknown class {name!r}; valid names are {names}") from None
