"""The CenterPoint-style detector: voxels -> sparse 3D backbone -> ToBEV -> 2D neck -> heads."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..nn.bev import ToBEV
from ..tensor import SparseTensor
from .backbone import SparseBackbone8x
from .config import DetectorConfig
from .decode import decode
from .head import BEVNeck, CenterHead
from .losses import focal_loss, regression_loss
from .targets import build_targets, collate_targets
from .voxelize import voxelize_batch


class CenterPointDetector(nn.Module):
    """Sparse-voxel CenterPoint detector.

    Args:
        cfg: :class:`DetectorConfig` (grid, widths, classes, decoding).

    ``forward(points_list)`` returns one dict of [B, *, X, Y] maps per class
    group; :meth:`loss` and :meth:`predict` wrap it for training and inference.
    """

    def __init__(self, cfg: DetectorConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.backbone = SparseBackbone8x(cfg.in_channels, cfg.widths, cfg.blocks, cfg.out_channels)
        self.to_bev = ToBEV(cfg.sparse_out_range)
        self.neck = BEVNeck(self.to_bev.out_channels(cfg.out_channels), cfg.neck_channels)
        self.heads = nn.ModuleList(
            [CenterHead(self.neck.out_channels, len(g), cfg.head_channels) for g in cfg.class_groups]
        )

    def voxelize(self, points_list: Sequence[torch.Tensor]) -> SparseTensor:
        """B scans [N_b, >=3] (x, y, z[, intensity]) -> voxel SparseTensor on the model's device.

        Passing the same voxel tensor to :meth:`forward` again reuses its cached kernel maps.
        """
        return voxelize_batch(points_list, self.cfg).to(next(self.parameters()).device)

    def forward(
        self, scans: Sequence[torch.Tensor] | SparseTensor, batch_size: int | None = None
    ) -> list[dict[str, torch.Tensor]]:
        """Per class group a dict of [B, *, X, Y] maps.

        Args:
            scans: B point clouds [N_b, >=3], or their :meth:`voxelize` tensor.
            batch_size: B when ``scans`` is a voxel tensor whose last scans may be empty.
        """
        if isinstance(scans, SparseTensor):
            x, batch = scans, batch_size
        else:
            x, batch = self.voxelize(scans), len(scans)
        x = self.backbone(x)
        bev = self.to_bev(x, batch_size=batch)
        feats = self.neck(bev)
        return [head(feats) for head in self.heads]

    def loss(
        self,
        scans: Sequence[torch.Tensor] | SparseTensor,
        boxes_list: Sequence[torch.Tensor],
        labels_list: Sequence[torch.Tensor],
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Training loss of a batch.

        Args:
            scans: B scans [N_b, >=3] or their voxel tensor; boxes_list: B tensors [M_b, 7];
            labels_list: B tensors [M_b] class ids.

        Returns:
            (total loss, {"heatmap": ..., "regression": ...} as floats).
        """
        outputs = self(scans, len(boxes_list))
        device = outputs[0]["heatmap"].device
        targets = collate_targets([build_targets(b, lab, self.cfg) for b, lab in zip(boxes_list, labels_list)])
        w_hm, w_reg = self.cfg.loss_weights
        code_w = torch.tensor(self.cfg.code_weights, device=device)
        hm = reg = torch.zeros((), device=device)
        for out, tgt in zip(outputs, targets):
            tgt = {k: v.to(device) for k, v in tgt.items()}
            hm = hm + focal_loss(out["heatmap"], tgt["heatmap"])
            reg = reg + regression_loss(CenterHead.codes(out), tgt["index"], tgt["mask"], tgt["code"], code_w)
        total = w_hm * hm + w_reg * reg
        return total, {"heatmap": float(hm.detach()), "regression": float(reg.detach())}

    @torch.no_grad()
    def predict(self, scans: Sequence[torch.Tensor] | SparseTensor) -> list[torch.Tensor]:
        """Detections per scan: [K, 9] (x, y, z, l, w, h, yaw, score, class) in the LiDAR frame, best first."""
        return [d.cpu() for d in decode(self(scans), self.cfg)]
