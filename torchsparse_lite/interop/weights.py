"""Conversion of one convolution weight between library layouts.

Ours (= TorchSparse's): ``[K, Cin, Cout]`` with ``K = kx * ky * kz`` and the x
tap varying fastest, for coordinates laid out (batch, x, y, z).
TorchSparse stores a kernel-size-1 conv as ``[Cin, Cout]``.
spconv 2.x (``KRSC``, verified numerically against spconv 2.3.8 for
SubMConv3d, SparseConv3d and SparseInverseConv3d with indices (b, x, y, z)):
``[Cout, kx, ky, kz, Cin]``. spconv 1.x (``RSCK``): ``[kx, ky, kz, Cin, Cout]``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..kmap.offsets import triple

SPCONV_LAYOUTS = ("KRSC", "RSCK")


def _check_tensor(weight: torch.Tensor, name: str, dims: Sequence[int]) -> None:
    if not isinstance(weight, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(weight).__name__}")
    if not weight.dtype.is_floating_point:
        raise TypeError(f"{name} must be floating point, got {weight.dtype}")
    if weight.dim() not in dims:
        raise ValueError(f"{name} must have {' or '.join(map(str, dims))} dims, got shape {list(weight.shape)}")


def _check_layout(layout: str) -> None:
    if layout not in SPCONV_LAYOUTS:
        raise ValueError(f"layout must be one of {SPCONV_LAYOUTS} (spconv 2.x: 'KRSC', 1.x: 'RSCK'), got {layout!r}")


def spconv_to_weight(weight: torch.Tensor, layout: str = "KRSC") -> tuple[torch.Tensor, tuple[int, int, int]]:
    """spconv weight -> (ours ``[K, Cin, Cout]``, kernel_size ``(kx, ky, kz)``).

    Args:
        weight: ``[Cout, kx, ky, kz, Cin]`` (``"KRSC"``) or ``[kx, ky, kz, Cin, Cout]`` (``"RSCK"``).
        layout: spconv's saved weight layout.
    """
    _check_tensor(weight, "weight", (5,))
    _check_layout(layout)
    if layout == "RSCK":
        weight = weight.permute(4, 0, 1, 2, 3)  # -> [Cout, kx, ky, kz, Cin]
    cout, kx, ky, kz, cin = weight.shape
    out = weight.permute(3, 2, 1, 4, 0).reshape(kx * ky * kz, cin, cout).contiguous()
    return out, (kx, ky, kz)


def weight_to_spconv(
    weight: torch.Tensor, kernel_size: int | Sequence[int], layout: str = "KRSC"
) -> torch.Tensor:
    """Ours ``[K, Cin, Cout]`` -> spconv ``[Cout, kx, ky, kz, Cin]`` (or ``RSCK``)."""
    _check_tensor(weight, "weight", (3,))
    _check_layout(layout)
    kx, ky, kz = triple(kernel_size, "kernel_size")
    k, cin, cout = weight.shape
    if k != kx * ky * kz:
        raise ValueError(f"weight has {k} taps but kernel_size {(kx, ky, kz)} has {kx * ky * kz}; pass the layer's")
    out = weight.reshape(kz, ky, kx, cin, cout).permute(4, 2, 1, 0, 3).contiguous()
    return out.permute(1, 2, 3, 4, 0).contiguous() if layout == "RSCK" else out


def torchsparse_to_weight(weight: torch.Tensor) -> torch.Tensor:
    """TorchSparse ``kernel`` -> ours: ``[K, Cin, Cout]`` as is, ``[Cin, Cout]`` (1x1x1) -> ``[1, Cin, Cout]``."""
    _check_tensor(weight, "weight", (2, 3))
    return weight.unsqueeze(0) if weight.dim() == 2 else weight


def weight_to_torchsparse(weight: torch.Tensor) -> torch.Tensor:
    """Ours ``[K, Cin, Cout]`` -> TorchSparse ``kernel`` (``[Cin, Cout]`` when K == 1)."""
    _check_tensor(weight, "weight", (3,))
    return weight[0] if weight.shape[0] == 1 else weight
