"""Packing of (batch, x, y, z) coordinates into one sortable int64 key.

Layout (most to least significant): 15 bits batch, 16 bits x, 16 bits y,
16 bits z. Keys therefore sort in (batch, x, y, z) lexicographic order and
stay non-negative, which both map builders rely on.
"""

from __future__ import annotations

import torch

COORD_BITS = 16
BATCH_BITS = 15
MAX_COORD = (1 << COORD_BITS) - 1
MAX_BATCH = (1 << BATCH_BITS) - 1
_MASK = MAX_COORD


def check_coords_layout(coords: torch.Tensor, name: str = "coords") -> None:
    """The checks of :func:`check_coords` that read no values: type, integer dtype, shape [N, 4].

    They hold for every tensor of a traced graph too (``torch.compile`` / ``torch.export``
    see dtypes and ranks); the value checks (:func:`check_coords_range`) then run inside the
    map-building ops, on the real tensors.
    """
    if not isinstance(coords, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(coords).__name__}")
    if coords.dtype.is_floating_point or coords.dtype.is_complex or coords.dtype == torch.bool:
        raise TypeError(
            f"{name} must be an integer tensor (int32 preferred), got {coords.dtype}; "
            "quantize points with sparse_quantize first"
        )
    if coords.dim() != 2 or coords.shape[1] != 4:
        raise ValueError(f"{name} must have shape [N, 4] laid out (batch, x, y, z), got {list(coords.shape)}")


def check_coords_range(coords: torch.Tensor, name: str = "coords") -> None:
    """Raise ``ValueError`` for a negative batch index or a coordinate outside ``[0, MAX_COORD]``."""
    if not coords.numel():
        return
    lo = coords.amin(0).tolist()
    hi = coords.amax(0).tolist()
    if lo[0] < 0:
        raise ValueError(f"{name} has a negative batch index ({lo[0]}); batch indices must be >= 0")
    if hi[0] > MAX_BATCH:
        raise ValueError(f"{name} has batch index {hi[0]} > {MAX_BATCH}, the most the key packing holds")
    if min(lo[1:]) < 0:
        raise ValueError(
            f"{name} has negative spatial coordinates (min {lo[1:]}); shift them to start at 0 "
            "(sparse_quantize does this)"
        )
    if max(hi[1:]) > MAX_COORD:
        raise ValueError(
            f"{name} has spatial coordinates up to {hi[1:]}, beyond {MAX_COORD}, the most the "
            "int64 key packing holds; use a larger voxel size or crop the scene"
        )


def check_coords(coords: torch.Tensor, name: str = "coords") -> torch.Tensor:
    """Validate a coordinate tensor and return it as int32.

    Args:
        coords: [N, 4] integer tensor laid out (batch, x, y, z).
        name: argument name used in error messages.

    Raises:
        TypeError: not a tensor, or not an integer dtype.
        ValueError: wrong shape, negative batch index, or a coordinate outside
            ``[0, MAX_COORD]`` (the range the int64 key packing can hold).
    """
    check_coords_layout(coords, name)
    check_coords_range(coords, name)
    return coords.to(torch.int32)


def pack(coords: torch.Tensor) -> torch.Tensor:
    """Pack [N, 4] (batch, x, y, z) coordinates (already range-checked) into [N] int64 keys."""
    c = coords.to(torch.int64)
    return pack_fields(c[:, 0], c[:, 1], c[:, 2], c[:, 3])


def pack_fields(b: torch.Tensor, x: torch.Tensor, y: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """:func:`pack` of the four [N] int64 columns (batch, x, y, z), given separately."""
    # Addition, not bitwise or: the packing is then linear, so a key plus the
    # packed form of a shift is the key of the shifted coordinate whenever the
    # shifted fields stay in range (the map builder relies on this).
    return (((b << COORD_BITS) + x << COORD_BITS) + y << COORD_BITS) + z


def shift_key(dx: int, dy: int, dz: int) -> int:
    """The key difference of a spatial shift: ``pack(c + (0, dx, dy, dz)) - pack(c)`` while the fields stay in range."""
    return (dx << (2 * COORD_BITS)) + (dy << COORD_BITS) + dz


def unpack(keys: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`pack`: [N] int64 keys to [N, 4] int32 coordinates."""
    z = keys & _MASK
    y = (keys >> COORD_BITS) & _MASK
    x = (keys >> (2 * COORD_BITS)) & _MASK
    b = keys >> (3 * COORD_BITS)
    return torch.stack([b, x, y, z], dim=1).to(torch.int32)

