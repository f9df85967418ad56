"""Bird's-eye-view densification: fold the height axis of a sparse tensor into channels."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..ops.checks import checked, value_check
from ..tensor import SparseTensor


@value_check("to_bev")
def check_bev_coords(coords: torch.Tensor, batch_size: int, nx: int, ny: int, nz: int) -> None:
    """Raise ``ValueError`` when [N, 4] ``coords`` hold more samples than ``batch_size`` (-1: not given) or
    leave the (nx, ny, nz) grid; :func:`to_bev` runs it eagerly, or in its graph at run time."""
    if not coords.shape[0]:
        return
    if batch_size >= 0 and batch_size < (samples := int(coords[:, 0].max()) + 1):
        raise ValueError(f"batch_size={batch_size} is smaller than the tensor's {samples} samples")
    high = coords[:, 1:].amax(0)
    size = (nx, ny, nz)
    if any(int(high[i]) >= size[i] for i in range(3)):
        raise ValueError(f"to_bev: coordinates reach {high.tolist()}, outside spatial_range {list(size)}; enlarge it")


def to_bev(x: SparseTensor, spatial_range: Sequence[int], batch_size: int | None = None) -> torch.Tensor:
    """Scatter a sparse tensor into a dense bird's-eye-view map.

    The voxel ``(b, x, y, z)`` with features ``f`` [C] lands at
    ``out[b, c * Z + z, x, y] = f[c]`` (channel-major, height-minor: the
    layout of spconv's ``dense().view(N, C * D, H, W)`` used by SECOND and
    CenterPoint), zeros elsewhere.

    Args:
        x: sparse tensor with coordinates (batch, x, y, z) in its stride's units.
        spatial_range: grid size (X, Y, Z) in the same units; every coordinate must lie inside.
        batch_size: number of samples B (default ``x.batch_size``; pass it when trailing samples may be empty).

    Returns:
        [B, C * Z, X, Y] tensor in ``x.feats.dtype`` on ``x.device``.
    """
    if not isinstance(x, SparseTensor):
        raise TypeError(f"to_bev expects a SparseTensor, got {type(x).__name__}")
    size = tuple(int(v) for v in spatial_range)
    if len(size) != 3 or min(size) < 1:
        raise ValueError(f"spatial_range must be 3 positive ints (X, Y, Z), got {spatial_range!r}")
    wanted = -1 if batch_size is None else int(batch_size)  # -1: read off the coordinates
    if batch_size is not None and wanted < 0:
        raise ValueError(f"batch_size must be >= 0, got {batch_size}")
    b = x.batch_size if batch_size is None else wanted  # in a graph a captured scalar: nothing branches on it
    c = checked(x.coords, "to_bev", wanted, *size).to(torch.int64)  # the value checks, at run time in a graph
    nx, ny, nz = size
    ch = x.feats.shape[1]
    out = x.feats.new_zeros((b, nx, ny, nz, ch))
    out[c[:, 0], c[:, 1], c[:, 2], c[:, 3]] = x.feats
    # [B, X, Y, Z, C] -> [B, C, Z, X, Y] -> [B, C*Z, X, Y]
    return out.permute(0, 4, 3, 1, 2).reshape(b, ch * nz, nx, ny)


class ToBEV(nn.Module):
    """Sparse [N, C] on a (X, Y, Z) grid -> dense bird's-eye view [B, C * Z, X, Y].

    Args:
        spatial_range: grid size (X, Y, Z) of the input tensor in its stride's
            units; fixed, so that the channel count ``C * Z`` is known when the
            2D layers after it are built.
    """

    def __init__(self, spatial_range: Sequence[int]) -> None:
        super().__init__()
        size = tuple(int(v) for v in spatial_range)
        if len(size) != 3 or min(size) < 1:
            raise ValueError(f"spatial_range must be 3 positive ints (X, Y, Z), got {spatial_range!r}")
        self.spatial_range = size

    def out_channels(self, in_channels: int) -> int:
        """Channels of the BEV map for ``in_channels`` sparse channels: ``C * Z``."""
        return int(in_channels) * self.spatial_range[2]

    def extra_repr(self) -> str:
        return f"spatial_range={self.spatial_range}"

    def forward(self, x: SparseTensor, batch_size: int | None = None) -> torch.Tensor:
        return to_bev(x, self.spatial_range, batch_size)
