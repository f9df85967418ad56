"""CenterPoint training targets: Gaussian centre heatmaps and box regression codes.

Feature cell ``(i, j)`` of the stride-8 map sits over voxel ``(8 i, 8 j)`` (the
centre of the window the engine's k=3 s=2 convs aggregate), i.e. at
``x0 + (8 i + 0.5) vx`` metres. A box centre maps to the nearest cell; the
sub-cell offset in [-0.5, 0.5] is regressed.

Regression code per object (CODE_SIZE = 10 values):
``(dx, dy, z, log l, log w, log h, sin yaw, cos yaw, sin 2yaw, cos 2yaw)``.
The last pair is pi-periodic: it fixes the box axis even where front and back
look alike (where the sin/cos pair alone averages to ~0); the sin/cos pair then
only picks the direction along that axis, like SECOND's direction classifier.
"""

from __future__ import annotations

import math

import torch

from .config import DetectorConfig

CODE_SIZE = 10


def gaussian_radius(height: float, width: float, min_overlap: float = 0.5) -> float:
    """CenterNet's Gaussian radius (as CenterPoint implements it) for a box of ``height x width`` cells.

    The smallest of the three radii for which a corner-shifted box still has
    IoU >= ``min_overlap`` with the true one.
    """
    a1, b1 = 1.0, height + width
    c1 = width * height * (1 - min_overlap) / (1 + min_overlap)
    r1 = (b1 + math.sqrt(max(b1 * b1 - 4 * a1 * c1, 0.0))) / 2
    a2, b2 = 4.0, 2 * (height + width)
    c2 = (1 - min_overlap) * width * height
    r2 = (b2 + math.sqrt(max(b2 * b2 - 4 * a2 * c2, 0.0))) / 2
    a3, b3 = 4 * min_overlap, -2 * min_overlap * (height + width)
    c3 = (min_overlap - 1) * width * height
    r3 = (b3 + math.sqrt(max(b3 * b3 - 4 * a3 * c3, 0.0))) / 2
    return min(r1, r2, r3)


def gaussian_2d(radius: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """[2r+1, 2r+1] Gaussian with sigma = (2r+1)/6 and peak 1 at the centre."""
    sigma = (2 * radius + 1) / 6.0
    r = torch.arange(-radius, radius + 1, dtype=torch.float64)
    g = torch.exp(-(r[:, None] ** 2 + r[None, :] ** 2) / (2 * sigma * sigma))
    g[g < torch.finfo(torch.float64).eps * g.max()] = 0
    return g.to(dtype)


def draw_gaussian(heatmap: torch.Tensor, centre: tuple[int, int], radius: int) -> torch.Tensor:
    """Max-splat a Gaussian of ``radius`` cells at integer ``centre`` (i, j) into heatmap [X, Y] in place."""
    g = gaussian_2d(radius, heatmap.dtype).to(heatmap.device)
    nx, ny = heatmap.shape
    i, j = centre
    left, right = min(i, radius), min(nx - i, radius + 1)
    top, bottom = min(j, radius), min(ny - j, radius + 1)
    if left + right <= 0 or top + bottom <= 0:
        return heatmap
    window = heatmap[i - left : i + right, j - top : j + bottom]
    patch = g[radius - left : radius + right, radius - top : radius + bottom]
    torch.maximum(window, patch, out=window)
    return heatmap


def world_to_cell(xy: torch.Tensor, cfg: DetectorConfig) -> torch.Tensor:
    """Continuous feature-cell coordinates of metric (x, y): [..., 2] -> [..., 2]."""
    lo = torch.tensor(cfg.point_range[:2], dtype=xy.dtype, device=xy.device)
    vs = torch.tensor(cfg.voxel_size[:2], dtype=xy.dtype, device=xy.device)
    return ((xy - lo) / vs - 0.5) / cfg.feature_stride


def cell_to_world(ij: torch.Tensor, cfg: DetectorConfig) -> torch.Tensor:
    """Inverse of :func:`world_to_cell`: [..., 2] cell coordinates -> metres."""
    lo = torch.tensor(cfg.point_range[:2], dtype=ij.dtype, device=ij.device)
    vs = torch.tensor(cfg.voxel_size[:2], dtype=ij.dtype, device=ij.device)
    return (ij * cfg.feature_stride + 0.5) * vs + lo


def encode_boxes(boxes: torch.Tensor, cells: torch.Tensor, cfg: DetectorConfig) -> torch.Tensor:
    """Regression codes of boxes [N, 7] assigned to integer cells [N, 2] -> [N, 10]."""
    off = world_to_cell(boxes[:, :2], cfg) - cells.to(boxes.dtype)
    dims = torch.log(boxes[:, 3:6].clamp(min=1e-3))
    yaw = boxes[:, 6:7]
    rot = [torch.sin(yaw), torch.cos(yaw), torch.sin(2 * yaw), torch.cos(2 * yaw)]
    return torch.cat([off, boxes[:, 2:3], dims, *rot], dim=1)


def decode_codes(codes: torch.Tensor, cells: torch.Tensor, cfg: DetectorConfig) -> torch.Tensor:
    """Boxes [N, 7] from codes [N, 10] at cells [N, 2] (inverse of :func:`encode_boxes`).

    Yaw: the axis ``atan2(sin 2yaw, cos 2yaw) / 2``, turned by pi where the
    (sin, cos) pair points the other way.
    """
    xy = cell_to_world(cells.to(codes.dtype) + codes[:, :2], cfg)
    dims = torch.exp(codes[:, 3:6].clamp(max=5.0))
    axis = 0.5 * torch.atan2(codes[:, 8], codes[:, 9])
    forward = torch.cos(axis) * codes[:, 7] + torch.sin(axis) * codes[:, 6] >= 0
    yaw = torch.where(forward, axis, axis + math.pi)
    yaw = torch.remainder(yaw + math.pi, 2 * math.pi) - math.pi
    return torch.cat([xy, codes[:, 2:3], dims, yaw[:, None]], dim=1)


def build_targets(boxes: torch.Tensor, labels: torch.Tensor, cfg: DetectorConfig) -> list[dict[str, torch.Tensor]]:
    """Targets of one scene for every class group.

    Args:
        boxes: [B, 7] float (x, y, z, l, w, h, yaw), LiDAR frame.
        labels: [B] int64 class ids.
        cfg: detector configuration.

    Returns:
        One dict per class group: ``heatmap`` [G, X, Y], ``index`` [max_objects]
        int64 flat cell index ``i * Y + j``, ``mask`` [max_objects] bool and
        ``code`` [max_objects, 10] regression targets.
    """
    boxes = torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 7)
    labels = torch.as_tensor(labels, dtype=torch.int64).reshape(-1)
    if boxes.shape[0] != labels.shape[0]:
        raise ValueError(f"boxes has {boxes.shape[0]} rows but labels has {labels.shape[0]}")
    nx, ny = cfg.feature_size
    cell_l, cell_w = cfg.cell_size
    out = []
    cont = world_to_cell(boxes[:, :2], cfg)
    cells = torch.round(cont).to(torch.int64)
    inside = (cells[:, 0] >= 0) & (cells[:, 0] < nx) & (cells[:, 1] >= 0) & (cells[:, 1] < ny)
    codes = encode_boxes(boxes, cells, cfg)
    for group in cfg.class_groups:
        heat = torch.zeros(len(group), nx, ny)
        index = torch.zeros(cfg.max_objects, dtype=torch.int64)
        mask = torch.zeros(cfg.max_objects, dtype=torch.bool)
        code = torch.zeros(cfg.max_objects, CODE_SIZE)
        k = 0
        for n in range(boxes.shape[0]):
            if int(labels[n]) not in group or not bool(inside[n]) or k >= cfg.max_objects:
                continue
            size_l = float(boxes[n, 3]) / cell_l
            size_w = float(boxes[n, 4]) / cell_w
            radius = max(cfg.min_radius, int(gaussian_radius(size_l, size_w, cfg.min_overlap)))
            i, j = int(cells[n, 0]), int(cells[n, 1])
            draw_gaussian(heat[group.index(int(labels[n]))], (i, j), radius)
            index[k] = i * ny + j
            mask[k] = True
            code[k] = codes[n]
            k += 1
        out.append({"heatmap": heat, "index": index, "mask": mask, "code": code})
    return out


def collate_targets(per_scene: list[list[dict[str, torch.Tensor]]]) -> list[dict[str, torch.Tensor]]:
    """Stack per-scene targets into batched ones (leading dim B) per class group."""
    groups = len(per_scene[0])
    return [{k: torch.stack([t[g][k] for t in per_scene]) for k in per_scene[0][g]} for g in range(groups)]
