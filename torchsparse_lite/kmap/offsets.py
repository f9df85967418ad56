"""Kernel offsets and the conv geometry they imply."""

from __future__ import annotations

from collections.abc import Sequence

import torch


def triple(value: int | Sequence[int], name: str) -> tuple[int, int, int]:
    """Normalise an int or a 3-sequence of positive ints to a 3-tuple."""
    if isinstance(value, bool):
        raise TypeError(f"{name} must be an int or 3 ints, got {value!r}")
    if isinstance(value, int):
        out = (value, value, value)
    else:
        out = tuple(int(v) for v in value)
        if len(out) != 3:
            raise ValueError(f"{name} must be an int or 3 ints, got {value!r}")
    if min(out) < 1:
        raise ValueError(f"{name} must be >= 1 on every axis, got {out}")
    return out  # type: ignore[return-value]


def padding(kernel_size: tuple[int, int, int], dilation: tuple[int, int, int]) -> tuple[int, int, int]:
    """Padding of the equivalent dense conv: ``d * (k // 2)`` for odd k, 0 for even k."""
    return tuple(d * (k // 2) if k % 2 else 0 for k, d in zip(kernel_size, dilation))  # type: ignore[return-value]


def kernel_offsets(
    kernel_size: tuple[int, int, int],
    dilation: tuple[int, int, int],
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """Offsets ``k * d - pad`` of every kernel tap, x varying fastest (TorchSparse's order).

    Returns:
        [K, 3] int64 tensor, K = kx * ky * kz. Row ``k`` pairs with weight ``W[k]``.
    """
    pad = padding(kernel_size, dilation)
    axes = [torch.arange(k, dtype=torch.int64) * d - p for k, d, p in zip(kernel_size, dilation, pad)]
    gz, gy, gx = torch.meshgrid(axes[2], axes[1], axes[0], indexing="ij")
    return torch.stack([gx.reshape(-1), gy.reshape(-1), gz.reshape(-1)], dim=1).to(device)


def is_symmetric(kernel_size: tuple[int, int, int]) -> bool:
    """True when the offset set is point-symmetric (every axis odd), so offset k mirrors K-1-k."""
    return all(k % 2 == 1 for k in kernel_size)
