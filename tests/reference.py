"""Dense references for sparse ops: densify, run ``F.conv3d`` / ``F.conv_transpose3d``, read back."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from torchsparse_lite import SparseTensor
from torchsparse_lite.kmap import padding


def dense_weight(weight: torch.Tensor, kernel_size: tuple[int, int, int]) -> torch.Tensor:
    """[K, Cin, Cout] (x fastest) -> F.conv3d layout [Cout, Cin, kx, ky, kz]."""
    kx, ky, kz = kernel_size
    w = weight.reshape(kz, ky, kx, weight.shape[1], weight.shape[2])
    return w.permute(4, 3, 2, 1, 0).contiguous()


def random_coords(
    n: int, extent: int, batch: int = 1, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Unique random coords in [0, extent)^3 over ``batch`` samples, at most ``n`` rows."""
    b = torch.randint(0, batch, (n, 1), generator=generator)
    xyz = torch.randint(0, extent, (n, 3), generator=generator)
    return torch.unique(torch.cat([b, xyz], 1), dim=0).to(torch.int32)


def dense_conv(
    x: SparseTensor,
    weight: torch.Tensor,
    kernel_size: tuple[int, int, int],
    stride: tuple[int, int, int],
    dilation: tuple[int, int, int],
    out_coords: torch.Tensor,
    transposed: bool = False,
    margin: int = 8,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run the dense conv on the densified input.

    Returns:
        (features read at ``out_coords`` [M, Cout], the full dense output).
    """
    ext = [int(v) + margin for v in x.coords[:, 1:].amax(0)] if len(x) else [margin] * 3
    grid = x.dense(ext)
    w = dense_weight(weight, kernel_size)
    pad = padding(kernel_size, dilation)
    if transposed:
        out = F.conv_transpose3d(grid, w.transpose(0, 1), stride=stride, padding=pad, dilation=dilation)
    else:
        out = F.conv3d(grid, w, stride=stride, padding=pad, dilation=dilation)
    c = out_coords.long()
    return out[c[:, 0], :, c[:, 1], c[:, 2], c[:, 3]], out
