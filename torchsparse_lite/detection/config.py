"""Detector configuration and the voxel / feature-map geometry it implies."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

DEFAULT_CLASSES = ("car", "pedestrian", "cyclist")


def strided_size(n: int, levels: int) -> int:
    """Extent of a grid axis after ``levels`` k=3 s=2 sparse convs (``n // 2 + 1`` each).

    The engine's spconv-style down-sampling keeps every output whose window
    touches an input, so the last input voxel can create one extra output.
    """
    for _ in range(levels):
        n = n // 2 + 1
    return n


@dataclass(frozen=True)
class DetectorConfig:
    """Everything that fixes a detector's shapes, targets and decoding.

    Attributes:
        classes: class names, index = class id.
        class_groups: class ids handled by each head (CenterPoint "tasks").
        point_range: (x0, y0, z0, x1, y1, z1) region of interest in metres (LiDAR frame).
        voxel_size: (vx, vy, vz) metres.
        in_channels: per-voxel input features (see :mod:`.voxelize`).
        widths: channels of the four sparse stages (strides 1, 2, 4, 8).
        blocks: residual blocks per stage.
        out_channels: channels of the z-reducing conv after the last stage.
        neck_channels: channels of the 2D neck.
        head_channels: hidden channels of each head branch.
        min_overlap, min_radius: CenterNet Gaussian radius rule (in feature cells).
        max_objects: most boxes per scene in the targets.
        loss_weights: (heatmap, regression) loss weights.
        code_weights: per-channel L1 weights of (dx, dy, z, log l, log w, log h, sin, cos, sin 2yaw, cos 2yaw).
        topk, score_threshold: decoding.
        nms: ``"rotate"`` (BEV rotated-IoU NMS), ``"circle"`` or ``"none"``.
        nms_iou: IoU threshold of rotated NMS.
        circle_radius: centre distance (m) per class for circle NMS.
        max_detections: boxes kept per scene after NMS.
    """

    classes: tuple[str, ...] = DEFAULT_CLASSES
    class_groups: tuple[tuple[int, ...], ...] = ((0,), (1, 2))
    point_range: tuple[float, ...] = (0.0, -25.6, -3.0, 51.2, 25.6, 1.0)
    voxel_size: tuple[float, ...] = (0.1, 0.1, 0.2)
    in_channels: int = 5
    widths: tuple[int, ...] = (16, 32, 64, 64)
    blocks: tuple[int, ...] = (1, 1, 1, 1)
    out_channels: int = 64
    neck_channels: int = 64
    head_channels: int = 64
    min_overlap: float = 0.1
    min_radius: int = 2
    max_objects: int = 128
    loss_weights: tuple[float, float] = (1.0, 2.0)
    code_weights: tuple[float, ...] = (1.0,) * 10
    topk: int = 100
    score_threshold: float = 0.1
    nms: str = "rotate"
    nms_iou: float = 0.1
    circle_radius: tuple[float, ...] = (2.0, 0.5, 0.75)
    max_detections: int = 100

    def __post_init__(self) -> None:
        if len(self.point_range) != 6:
            raise ValueError(f"point_range must be (x0, y0, z0, x1, y1, z1), got {self.point_range!r}")
        if any(self.point_range[i + 3] <= self.point_range[i] for i in range(3)):
            raise ValueError(f"point_range must have x1 > x0, y1 > y0, z1 > z0, got {self.point_range!r}")
        if len(self.voxel_size) != 3 or min(self.voxel_size) <= 0:
            raise ValueError(f"voxel_size must be 3 positive floats, got {self.voxel_size!r}")
        if len(self.widths) != 4 or len(self.blocks) != 4:
            raise ValueError("widths and blocks must each have 4 entries (strides 1, 2, 4, 8)")
        used = sorted(c for g in self.class_groups for c in g)
        if used != list(range(len(self.classes))):
            raise ValueError(
                f"class_groups {self.class_groups!r} must cover every class id 0..{len(self.classes) - 1} once"
            )
        if self.nms not in ("rotate", "circle", "none"):
            raise ValueError(f"nms must be 'rotate', 'circle' or 'none', got {self.nms!r}")
        if len(self.circle_radius) != len(self.classes):
            raise ValueError(f"circle_radius needs one radius per class ({len(self.classes)})")
        if len(self.code_weights) != 10:
            raise ValueError("code_weights needs 10 entries (dx, dy, z, log l, log w, log h, sin, cos, sin2, cos2)")

    # ------------------------------------------------------------ geometry
    @property
    def grid_size(self) -> tuple[int, int, int]:
        """Voxel grid (X, Y, Z) covering ``point_range``."""
        return tuple(  # type: ignore[return-value]
            int(math.ceil((self.point_range[i + 3] - self.point_range[i]) / self.voxel_size[i] - 1e-6))
            for i in range(3)
        )

    @property
    def sparse_out_range(self) -> tuple[int, int, int]:
        """Grid (X, Y, Z) of the backbone output (stride 8 in x, y; 16 in z)."""
        x, y, z = self.grid_size
        return strided_size(x, 3), strided_size(y, 3), strided_size(strided_size(z, 3), 1)

    @property
    def feature_stride(self) -> int:
        return 8

    @property
    def feature_size(self) -> tuple[int, int]:
        """BEV feature map (X, Y) cells of the heads."""
        return self.sparse_out_range[0], self.sparse_out_range[1]

    @property
    def cell_size(self) -> tuple[float, float]:
        """Metres per feature cell along x and y."""
        return self.voxel_size[0] * self.feature_stride, self.voxel_size[1] * self.feature_stride

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> DetectorConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown DetectorConfig keys {sorted(unknown)}")
        kw = {
            k: (tuple(tuple(x) if isinstance(x, list) else x for x in v) if isinstance(v, list) else v)
            for k, v in d.items()
        }
        return cls(**kw)
