"""Output coordinates of a sparse conv: which sites of the dense conv's output are active.

* submanifold: the inputs themselves.
* conv, ``"spconv"`` rule: every output site ``o`` (inside the output shape
  when the geometry is bounded, else ``o >= 0``) with an input at
  ``o * stride + offset`` for some tap — a dense ``conv3d`` with the
  geometry's padding, restricted to its active outputs.
* conv, ``"minkowski"`` rule: unique ``c // stride``.
* transposed (generative; no cached down-sampling map): every
  ``c * stride + offset`` inside the output grid.
"""

from __future__ import annotations

import torch

from .geometry import ConvGeometry
from .keys import MAX_COORD, pack, unpack


def check_bound(coords: torch.Tensor, bound: tuple[int, int, int] | None, name: str) -> None:
    """Raise ``ValueError`` when range-checked [N, 4] ``coords`` reach outside the spatial ``bound``."""
    if bound is None or not coords.shape[0]:
        return
    hi = coords[:, 1:].amax(0).tolist()
    if any(h >= b for h, b in zip(hi, bound)):
        raise ValueError(
            f"{name} reach {hi} on the spatial axes, outside the grid of spatial shape {list(bound)}; "
            "every coordinate must be < the spatial shape on its axis (enlarge spatial_shape or crop the points)"
        )


def _unique_coords(
    batch: torch.Tensor, spatial: torch.Tensor, out_shape: tuple[int, int, int] | None
) -> torch.Tensor:
    """Unique (batch, spatial) rows inside the output grid, sorted by packed key.

    Sites below 0 (or at/after ``out_shape``) lie outside the dense conv's
    output grid and are dropped; sites beyond ``MAX_COORD`` cannot be packed
    and raise.
    """
    keep = (spatial >= 0).all(dim=1)
    if out_shape is not None:
        keep &= (spatial < torch.tensor(out_shape, dtype=spatial.dtype, device=spatial.device)).all(dim=1)
    batch, spatial = batch[keep], spatial[keep]
    if spatial.numel() and int(spatial.max()) > MAX_COORD:
        raise ValueError(
            f"the input coords would give output coordinates up to {spatial.amax(0).tolist()}, beyond "
            f"{MAX_COORD}, the most the key packing holds; crop the scene or use a larger voxel size"
        )
    return unpack(torch.unique(pack(torch.cat([batch[:, None], spatial], dim=1))))


def output_coords(in_coords: torch.Tensor, geometry: ConvGeometry, offsets: torch.Tensor | None = None) -> torch.Tensor:
    """Output coordinates of the conv ``geometry`` over ``in_coords`` (see the module doc).

    Args:
        in_coords: [N, 4] int32 (batch, x, y, z), range-checked.
        geometry: the conv.
        offsets: ``geometry.offsets()`` when already at hand.

    Returns:
        [n_out, 4] int32, sorted by (batch, x, y, z) except for submanifold.
    """
    if geometry.mode == "submanifold":
        return in_coords
    if offsets is None:
        offsets = geometry.offsets(in_coords.device)
    c = in_coords.to(torch.int64)
    b, xyz = c[:, 0], c[:, 1:]
    s = torch.tensor(geometry.stride, dtype=torch.int64, device=c.device)
    out_shape = geometry.out_shape
    if geometry.mode == "conv" and (geometry.downsample_mode == "minkowski" or geometry.tiles):
        # Minkowski's rule; also the spconv rule whenever the windows tile the
        # grid (kernel == stride, no padding or dilation, as in MinkUNet's
        # down-sampling): each input then lies in exactly one window.
        return _unique_coords(b, torch.div(xyz, s, rounding_mode="floor"), out_shape)
    if geometry.mode == "conv":
        return _strided_outputs(b, xyz, offsets, geometry.stride, out_shape)
    k = offsets.shape[0]
    shifted = (xyz[None] * s + offsets[:, None]).reshape(-1, 3)
    return _unique_coords(b.repeat(k), shifted, out_shape)


def _axis_candidates(
    coord: torch.Tensor, axis_offsets: list[int], s: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per input, the outputs ``(c - d) / s`` on one axis over the offsets ``d ≡ c (mod s)``, and their mask."""
    by_residue = [[d for d in axis_offsets if d % s == r] for r in range(s)]
    width = max(len(v) for v in by_residue)
    table = torch.tensor([v + [0] * (width - len(v)) for v in by_residue], dtype=torch.int64, device=coord.device)
    valid = torch.tensor([[i < len(v) for i in range(width)] for v in by_residue], device=coord.device)
    r = coord % s
    cand = torch.div(coord[:, None] - table[r], s, rounding_mode="floor")
    return cand, valid[r] & (cand >= 0)


def _strided_outputs(
    batch: torch.Tensor,
    xyz: torch.Tensor,
    offsets: torch.Tensor,
    stride: tuple[int, int, int],
    out_shape: tuple[int, int, int] | None,
) -> torch.Tensor:
    """Outputs ``o = (c - d) / s`` over offsets ``d`` where the division is exact.

    The offsets form a grid (or a subset of one), so the candidates are a
    product of per-axis choices: on each axis only the offsets congruent to
    ``c`` modulo ``s`` qualify (at most ``ceil(k / s)`` of them), which yields
    a few candidates per input instead of one per kernel tap. A tap subset is
    handled exactly by the box of its per-axis offsets followed by a check
    that the candidate's tap is kept.
    """
    per_axis, masks = [], []
    for a in range(3):
        cand, mask = _axis_candidates(xyz[:, a], torch.unique(offsets[:, a]).tolist(), stride[a])
        per_axis.append(cand)
        masks.append(mask)
    n = xyz.shape[0]
    mx, my, mz = (t.shape[1] for t in per_axis)
    shape = (n, mx, my, mz)
    grid = torch.stack(
        [
            per_axis[0][:, :, None, None].expand(shape),
            per_axis[1][:, None, :, None].expand(shape),
            per_axis[2][:, None, None, :].expand(shape),
        ],
        dim=-1,
    ).reshape(-1, 3)
    keep = (masks[0][:, :, None, None] & masks[1][:, None, :, None] & masks[2][:, None, None, :]).reshape(-1)
    bb = batch[:, None].expand(n, mx * my * mz).reshape(-1)
    src = xyz[:, None, :].expand(n, mx * my * mz, 3).reshape(-1, 3)
    grid, bb, src = grid[keep], bb[keep], src[keep]
    if offsets.shape[0] != len(torch.unique(offsets[:, 0])) * len(torch.unique(offsets[:, 1])) * len(
        torch.unique(offsets[:, 2])
    ):
        grid, bb = _keep_kept_taps(grid, bb, src, offsets, stride)
    return _unique_coords(bb, grid, out_shape)


def _keep_kept_taps(
    grid: torch.Tensor, batch: torch.Tensor, src: torch.Tensor, offsets: torch.Tensor, stride: tuple[int, int, int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Drop candidates ``o`` whose offset ``c - o * s`` is not one of the (subset) ``offsets``."""
    s = torch.tensor(stride, dtype=torch.int64, device=grid.device)
    d = src - grid * s
    lo = offsets.amin(0)
    span = offsets.amax(0) - lo + 1
    code = lambda v: ((v[:, 0] - lo[0]) * span[1] + (v[:, 1] - lo[1])) * span[2] + (v[:, 2] - lo[2])  # noqa: E731
    kept = torch.isin(code(d), code(offsets))
    return grid[kept], batch[kept]
