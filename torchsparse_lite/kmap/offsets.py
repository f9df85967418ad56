"""Kernel offsets of the engine's default geometry (thin helpers over :class:`ConvGeometry`)."""

from __future__ import annotations

import torch

from .geometry import ConvGeometry, default_padding, triple

padding = default_padding

__all__ = ["kernel_offsets", "padding", "triple"]


def kernel_offsets(
    kernel_size: tuple[int, int, int],
    dilation: tuple[int, int, int],
    device: torch.device | str = "cpu",
    pad: tuple[int, int, int] | None = None,
) -> torch.Tensor:
    """Offsets ``k * d - pad`` of every kernel tap, x varying fastest (TorchSparse's order).

    Args:
        pad: per-axis padding; None = :func:`default_padding`.

    Returns:
        [K, 3] int64 tensor, K = kx * ky * kz. Row ``k`` pairs with weight ``W[k]``.
    """
    return ConvGeometry(triple(kernel_size, "kernel_size"), dilation=dilation, padding=pad).offsets(device)
