"""``spconv.pytorch.utils``: the voxel generator detection pipelines call (``PointToVoxel``).

Conventions of spconv 2.3.8's CPU generator, kept exactly (and checked against
it on a real KITTI frame):

* arguments are in x, y, z order; everything it returns or stores
  (``indices``, ``grid_size``, ``vsize``, ``coors_range``) is in **z, y, x**
  order (``indices[:, 0]`` is z);
* ``c = floor((p - range_min) / vsize)`` in the points' dtype, with the range
  and voxel size rounded to float32; a point with ``c < 0`` or
  ``c >= grid_size`` on any axis is dropped; ``grid_size = round((max - min) / vsize)``;
* voxels are numbered in the order of their first point; points of voxels past
  ``max_num_voxels`` are dropped; a voxel keeps its first
  ``max_num_points_per_voxel`` points (in point order), the rest are not
  stored but still get the voxel's id in ``pc_voxel_id`` (-1 for dropped points);
* ``voxels`` is float32 ``[M, max_num_points_per_voxel, C]``, zero-padded
  (``clear_voxels=False`` keeps the previous call's values in the padding, as
  spconv's persistent buffer does); ``empty_mean=True`` fills the padding with
  the mean of the voxel's points — spconv's CUDA generator does this; its CPU
  build accumulates the sums across voxels (it never resets them), which is
  not reproduced.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

__all__ = ["PointToVoxel", "gather_features_by_pc_voxel_id"]


def _meta(vsize_xyz: Sequence[float], range_xyz: Sequence[float]) -> tuple[list, list, list, list]:
    """(vsize, grid_size, grid_stride, coors_range), all z-first, as spconv's ``calc_point2voxel_meta_data``."""
    ndim = len(vsize_xyz)
    if ndim < 1 or len(range_xyz) != 2 * ndim:
        raise ValueError(f"coors_range_xyz must hold 2 * {ndim} values (mins then maxs), got {list(range_xyz)}")
    vsize = np.asarray(vsize_xyz, dtype=np.float32)[::-1]
    lo = np.asarray(range_xyz[:ndim], dtype=np.float32)[::-1]
    hi = np.asarray(range_xyz[ndim:], dtype=np.float32)[::-1]
    if (vsize <= 0).any() or (hi <= lo).any():
        raise ValueError(
            f"vsize_xyz must be > 0 and coors_range_xyz's maxs > its mins, got {list(vsize_xyz)}, {list(range_xyz)}"
        )
    grid = np.floor((hi - lo) / vsize + np.float32(0.5)).astype(np.int64)  # std::round: half away from zero
    stride = [int(np.prod(grid[i + 1 :])) for i in range(ndim)]
    return vsize.tolist(), grid.tolist(), stride, lo.tolist() + hi.tolist()


class PointToVoxel:
    """Points -> (voxels, zyx indices, points per voxel[, voxel id per point]), as spconv's ``PointToVoxel``.

    Args:
        vsize_xyz: voxel size per axis (x, y, z).
        coors_range_xyz: ``[x_min, y_min, z_min, x_max, y_max, z_max]``.
        num_point_features: channels of a point (the input's ``pc.shape[1]``).
        max_num_voxels, max_num_points_per_voxel: output capacity.
        device: where the buffers live (the input must be on a device of this type).
    """

    def __init__(
        self,
        vsize_xyz: Sequence[float],
        coors_range_xyz: Sequence[float],
        num_point_features: int,
        max_num_voxels: int,
        max_num_points_per_voxel: int,
        device: torch.device = torch.device("cpu:0"),  # noqa: B008 - spconv's default
    ) -> None:
        for arg, v in (("num_point_features", num_point_features), ("max_num_voxels", max_num_voxels),
                       ("max_num_points_per_voxel", max_num_points_per_voxel)):  # fmt: skip
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"{arg} must be an int >= 1, got {v!r}")
        self.ndim = len(vsize_xyz)
        self.device = torch.device(device)
        self.vsize, self.grid_size, self.grid_stride, self.coors_range = _meta(vsize_xyz, coors_range_xyz)
        self.num_point_features = int(num_point_features)
        self.max_num_voxels = int(max_num_voxels)
        self.max_num_points_per_voxel = int(max_num_points_per_voxel)
        shape = [self.max_num_voxels, self.max_num_points_per_voxel, self.num_point_features]
        self.voxels = torch.zeros(shape, dtype=torch.float32, device=self.device)
        self.indices = torch.zeros([self.max_num_voxels, self.ndim], dtype=torch.int32, device=self.device)
        self.num_per_voxel = torch.zeros([self.max_num_voxels], dtype=torch.int32, device=self.device)

    def __call__(self, pc: torch.Tensor, clear_voxels: bool = True, empty_mean: bool = False):
        """(voxels [M, P, C] float32, indices [M, ndim] int32 zyx, num_points_per_voxel [M] int32)."""
        return self.generate_voxel_with_id(pc, clear_voxels, empty_mean)[:3]

    def _check(self, pc: torch.Tensor) -> None:
        if not isinstance(pc, torch.Tensor):
            raise TypeError(f"pc must be a torch.Tensor, got {type(pc).__name__}")
        if pc.dtype not in (torch.float32, torch.float64):
            raise TypeError(f"pc must be float32 or float64, got {pc.dtype}")
        if pc.dim() != 2 or pc.shape[1] != self.num_point_features:
            raise ValueError(f"pc must have shape [N, {self.num_point_features}] (num_point_features), "
                             f"got {list(pc.shape)}")  # fmt: skip
        if pc.device.type != self.device.type:
            raise ValueError(f"pc is on {pc.device} but this PointToVoxel was built for {self.device}")

    def _voxel_coords(self, pc: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """[N, ndim] int64 zyx voxel coordinates of every point and the [N] in-range mask."""
        cols = []
        for j in range(self.ndim):
            lo = torch.tensor(self.coors_range[j], dtype=torch.float32).to(pc.dtype)
            vs = torch.tensor(self.vsize[j], dtype=torch.float32).to(pc.dtype)
            cols.append(torch.floor((pc[:, self.ndim - 1 - j] - lo) / vs))
        c = torch.stack(cols, dim=1)
        grid = torch.tensor(self.grid_size, dtype=c.dtype, device=c.device)
        valid = ((c >= 0) & (c < grid)).all(dim=1)
        return torch.where(valid[:, None], c, torch.zeros_like(c)).to(torch.int64), valid

    def generate_voxel_with_id(self, pc: torch.Tensor, clear_voxels: bool = True, empty_mean: bool = False):
        """As :meth:`__call__`, plus ``pc_voxel_id`` [N] int64: each point's voxel, -1 when dropped."""
        self._check(pc)
        with torch.no_grad():
            coords, valid = self._voxel_coords(pc)
            stride = torch.tensor(self.grid_stride, dtype=torch.int64, device=pc.device)
            rows = valid.nonzero().squeeze(1)
            uniq, slot = torch.unique((coords[rows] * stride).sum(1), return_inverse=True)
            first = torch.full((uniq.shape[0],), pc.shape[0], dtype=torch.int64, device=pc.device)
            first = first.scatter_reduce(0, slot, rows, "amin")
            order = torch.argsort(first)  # voxel id -> unique slot, by first point
            rank = torch.empty_like(order)
            rank[order] = torch.arange(order.shape[0], device=pc.device)
            vid = rank[slot]
            keep = vid < self.max_num_voxels
            rows, vid = rows[keep], vid[keep]
            pc_voxel_id = torch.full((pc.shape[0],), -1, dtype=torch.int64, device=pc.device)
            pc_voxel_id[rows] = vid
            m = min(uniq.shape[0], self.max_num_voxels)
            self._fill(pc, rows, vid, m, coords[first[order[:m]]], clear_voxels, empty_mean)
        return (self.voxels[:m].clone(), self.indices[:m].clone(), self.num_per_voxel[:m].clone(), pc_voxel_id)

    def _fill(self, pc, rows, vid, m, voxel_coords, clear_voxels: bool, empty_mean: bool) -> None:
        """Write the first points of each voxel into the persistent buffers (spconv's layout)."""
        if clear_voxels:
            self.voxels.zero_()
        self.num_per_voxel.zero_()
        perm = torch.argsort(vid, stable=True)
        counts = torch.bincount(vid, minlength=m)
        starts = torch.cumsum(counts, 0) - counts
        slot = torch.empty_like(vid)
        slot[perm] = torch.arange(vid.shape[0], device=vid.device) - starts[vid[perm]]
        put = slot < self.max_num_points_per_voxel
        self.voxels[vid[put], slot[put]] = pc[rows[put]].to(torch.float32)
        self.num_per_voxel[:m] = counts.clamp(max=self.max_num_points_per_voxel).to(torch.int32)
        self.indices[:m] = voxel_coords.to(torch.int32)
        if empty_mean and m:
            num = self.num_per_voxel[:m].to(torch.float32)
            held = torch.arange(self.max_num_points_per_voxel, device=pc.device)[None] < num[:, None]
            voxels = self.voxels[:m]
            mean = (voxels * held[..., None]).sum(1) / num.clamp(min=1)[:, None]
            self.voxels[:m] = torch.where(held[..., None], voxels, mean[:, None, :])


def gather_features_by_pc_voxel_id(
    seg_res_features: torch.Tensor, pc_voxel_id: torch.Tensor, invalid_value: int | float = 0
) -> torch.Tensor:
    """Per-point features ``[N, ...]`` from per-voxel ones ``[M, ...]``; ``invalid_value`` where the id is -1."""
    pc_voxel_id = pc_voxel_id.to(seg_res_features.device)
    shape = (pc_voxel_id.shape[0], *seg_res_features.shape[1:])
    out = seg_res_features.new_full(shape, invalid_value)
    ok = pc_voxel_id != -1
    out[ok] = seg_res_features[pc_voxel_id[ok]]
    return out
