"""Heatmap peaks -> scored boxes in the LiDAR frame, then per-class NMS."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .config import DetectorConfig
from .head import CenterHead
from .losses import gather_cells
from .nms import circle_nms, rotated_nms
from .targets import decode_codes


def decode_group(out: dict[str, torch.Tensor], group: tuple[int, ...], cfg: DetectorConfig) -> list[torch.Tensor]:
    """Top-k local maxima of one head's heatmap, decoded to boxes.

    Args:
        out: head outputs (``heatmap`` [B, G, X, Y] logits and the regression maps).
        group: class ids of the head's heatmap channels.
        cfg: detector configuration (``topk``).

    Returns:
        Per scene a [K, 9] tensor (x, y, z, l, w, h, yaw, score, class), unsorted, unthresholded.
    """
    heat = torch.sigmoid(out["heatmap"].detach().float())
    b, g, nx, ny = heat.shape
    peaks = heat == F.max_pool2d(heat, 3, 1, 1)
    heat = heat * peaks
    k = min(cfg.topk, g * nx * ny)
    scores, flat = heat.reshape(b, -1).topk(k, dim=1)
    cls_local = torch.div(flat, nx * ny, rounding_mode="floor")
    cell = flat % (nx * ny)
    codes = gather_cells(CenterHead.codes(out).detach().float(), cell)  # [B, K, 10]
    cells = torch.stack([torch.div(cell, ny, rounding_mode="floor"), cell % ny], dim=-1)
    ids = torch.tensor(group, dtype=torch.int64, device=heat.device)[cls_local]
    result = []
    for s in range(b):
        boxes = decode_codes(codes[s], cells[s], cfg)
        result.append(torch.cat([boxes, scores[s, :, None], ids[s, :, None].to(boxes.dtype)], dim=1))
    return result


def postprocess(dets: torch.Tensor, cfg: DetectorConfig) -> torch.Tensor:
    """Score threshold, per-class NMS and the ``max_detections`` best of one scene's [K, 9] detections."""
    dets = dets[dets[:, 7] >= cfg.score_threshold]
    kept = []
    for c in range(len(cfg.classes)):
        d = dets[dets[:, 8] == c]
        if d.shape[0] == 0:
            continue
        if cfg.nms == "rotate":
            d = d[rotated_nms(d[:, :7], d[:, 7], cfg.nms_iou)]
        elif cfg.nms == "circle":
            d = d[circle_nms(d[:, :7], d[:, 7], cfg.circle_radius[c])]
        kept.append(d)
    if not kept:
        return dets.new_zeros(0, 9)
    out = torch.cat(kept)
    out = out[out[:, 7].argsort(descending=True)]
    return out[: cfg.max_detections]


def decode(outputs: list[dict[str, torch.Tensor]], cfg: DetectorConfig) -> list[torch.Tensor]:
    """All heads' outputs -> per scene [K, 9] detections (x, y, z, l, w, h, yaw, score, class), best first."""
    per_group = [decode_group(o, g, cfg) for o, g in zip(outputs, cfg.class_groups)]
    scenes = len(per_group[0])
    return [postprocess(torch.cat([p[s] for p in per_group]), cfg) for s in range(scenes)]
