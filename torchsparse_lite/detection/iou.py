"""Rotated-box overlaps in bird's-eye view and 3D, in plain PyTorch (float64).

Boxes are (x, y, z, l, w, h, yaw) in the LiDAR frame: centre, length along
the heading, width, height, heading angle about +z from +x.
"""

from __future__ import annotations

import torch

_EPS = 1e-9


def _as_boxes(boxes: torch.Tensor, name: str) -> torch.Tensor:
    b = torch.as_tensor(boxes)
    if b.dim() != 2 or b.shape[1] < 7:
        raise ValueError(f"{name} must have shape [N, >=7] (x, y, z, l, w, h, yaw), got {list(b.shape)}")
    return b[:, :7].to(torch.float64)


def bev_corners(boxes: torch.Tensor) -> torch.Tensor:
    """Counter-clockwise BEV corners of boxes [N, >=7] -> [N, 4, 2]."""
    b = _as_boxes(boxes, "boxes")
    sign = torch.tensor([[0.5, 0.5], [-0.5, 0.5], [-0.5, -0.5], [0.5, -0.5]], dtype=b.dtype, device=b.device)
    local = sign[None] * b[:, None, 3:5]
    c, s = torch.cos(b[:, 6])[:, None], torch.sin(b[:, 6])[:, None]
    x = local[..., 0] * c - local[..., 1] * s + b[:, None, 0]
    y = local[..., 0] * s + local[..., 1] * c + b[:, None, 1]
    return torch.stack([x, y], dim=-1)


def _cross(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return a[..., 0] * b[..., 1] - a[..., 1] * b[..., 0]


def _inside(points: torch.Tensor, poly: torch.Tensor) -> torch.Tensor:
    """points [P, n, 2] inside (or on) CCW convex quads poly [P, 4, 2] -> [P, n] bool."""
    edges = torch.roll(poly, -1, dims=1) - poly  # [P, 4, 2]
    rel = points[:, :, None, :] - poly[:, None, :, :]  # [P, n, 4, 2]
    scale = edges.norm(dim=-1).amax(dim=1)[:, None, None] ** 2 + 1.0
    return (_cross(edges[:, None], rel) >= -1e-9 * scale).all(dim=-1)


def quad_intersection_area(ca: torch.Tensor, cb: torch.Tensor) -> torch.Tensor:
    """Area of the intersection of pairs of CCW convex quads.

    Args:
        ca, cb: [P, 4, 2] corners (as :func:`bev_corners` gives them).

    Returns:
        [P] float64 intersection areas.

    The intersection polygon's vertices are the corners of each quad inside
    the other plus the edge-edge crossings; they are ordered by angle about
    their mean and summed with the shoelace formula.
    """
    p = ca.shape[0]
    if p == 0:
        return ca.new_zeros(0)
    a_in_b = _inside(ca, cb)
    b_in_a = _inside(cb, ca)
    ra = torch.roll(ca, -1, dims=1) - ca  # [P, 4, 2]
    rb = torch.roll(cb, -1, dims=1) - cb
    pa, pb = ca[:, :, None, :], cb[:, None, :, :]  # [P, 4, 1, 2], [P, 1, 4, 2]
    r, s = ra[:, :, None, :], rb[:, None, :, :]
    denom = _cross(r, s)  # [P, 4, 4]
    qp = pb - pa
    ok_den = denom.abs() > _EPS
    safe = torch.where(ok_den, denom, torch.ones_like(denom))
    t = _cross(qp, s) / safe
    u = _cross(qp, r) / safe
    tol = 1e-9
    hit = ok_den & (t >= -tol) & (t <= 1 + tol) & (u >= -tol) & (u <= 1 + tol)
    cross_pts = (pa + t[..., None] * r).reshape(p, 16, 2)
    pts = torch.cat([ca, cb, cross_pts], dim=1)  # [P, 24, 2]
    valid = torch.cat([a_in_b, b_in_a, hit.reshape(p, 16)], dim=1)
    n_valid = valid.sum(dim=1)
    w = valid.to(pts.dtype)[..., None]
    centre = (pts * w).sum(dim=1) / n_valid.clamp(min=1)[:, None].to(pts.dtype)
    rel = pts - centre[:, None, :]
    ang = torch.atan2(rel[..., 1], rel[..., 0])
    ang = torch.where(valid, ang, torch.full_like(ang, 10.0))
    order = ang.argsort(dim=1)
    srt = torch.gather(pts, 1, order[..., None].expand(-1, -1, 2))
    vsrt = torch.gather(valid, 1, order)
    first = srt[:, :1, :].expand_as(srt)
    srt = torch.where(vsrt[..., None], srt, first)
    nxt = torch.roll(srt, -1, dims=1)
    area = 0.5 * _cross(srt, nxt).sum(dim=1).abs()
    return torch.where(n_valid >= 3, area, torch.zeros_like(area))


def _pairs(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Index pairs (i, j) whose BEV circumscribed circles overlap (others cannot intersect)."""
    ra = 0.5 * a[:, 3:5].norm(dim=1)
    rb = 0.5 * b[:, 3:5].norm(dim=1)
    d = torch.cdist(a[:, :2], b[:, :2])
    i, j = torch.nonzero(d < ra[:, None] + rb[None, :] + 1e-9, as_tuple=True)
    return i, j


def bev_overlap(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """BEV intersection areas of every pair: boxes a [N, >=7], b [M, >=7] -> [N, M] float64."""
    a = _as_boxes(a, "a")
    b = _as_boxes(b, "b")
    out = a.new_zeros(a.shape[0], b.shape[0])
    if a.shape[0] == 0 or b.shape[0] == 0:
        return out
    i, j = _pairs(a, b)
    if i.numel():
        out[i, j] = quad_intersection_area(bev_corners(a)[i], bev_corners(b)[j])
    return out


def bev_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Rotated bird's-eye-view IoU of every pair: [N, >=7] x [M, >=7] -> [N, M] float64."""
    a = _as_boxes(a, "a")
    b = _as_boxes(b, "b")
    inter = bev_overlap(a, b)
    area_a = (a[:, 3] * a[:, 4])[:, None]
    area_b = (b[:, 3] * b[:, 4])[None, :]
    return inter / (area_a + area_b - inter).clamp(min=_EPS)


def iou_3d(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Rotated 3D IoU (yaw about z only) of every pair: [N, >=7] x [M, >=7] -> [N, M] float64."""
    a = _as_boxes(a, "a")
    b = _as_boxes(b, "b")
    inter_bev = bev_overlap(a, b)
    top = torch.minimum((a[:, 2] + a[:, 5] / 2)[:, None], (b[:, 2] + b[:, 5] / 2)[None, :])
    bottom = torch.maximum((a[:, 2] - a[:, 5] / 2)[:, None], (b[:, 2] - b[:, 5] / 2)[None, :])
    inter = inter_bev * (top - bottom).clamp(min=0)
    vol_a = (a[:, 3] * a[:, 4] * a[:, 5])[:, None]
    vol_b = (b[:, 3] * b[:, 4] * b[:, 5])[None, :]
    return inter / (vol_a + vol_b - inter).clamp(min=_EPS)


def box_iou(a: torch.Tensor, b: torch.Tensor, mode: str = "bev") -> torch.Tensor:
    """:func:`bev_iou` for ``mode="bev"``, :func:`iou_3d` for ``mode="3d"``."""
    if mode == "bev":
        return bev_iou(a, b)
    if mode == "3d":
        return iou_3d(a, b)
    raise ValueError(f"mode must be 'bev' or '3d', got {mode!r}")
