"""spconv index conventions <-> the native engine's, and the checks at the API boundary.

spconv indices are ``[N, ndim + 1]`` int32 rows ``(batch, a0, .., a_{ndim-1})``
with the spatial axes in ``spatial_shape``'s order. The native engine is
3-D with coordinates ``(batch, x, y, z)``; spconv axis ``a_i`` is native axis
``i`` and the axes a 1-D or 2-D tensor lacks are singletons (coordinate 0,
size 1, kernel 1). :class:`IndiceData` is what an ``indice_key`` names in a
tensor's ``indice_dict``: spconv's fields plus the native
:class:`~torchsparse_lite.kmap.kernel_map.KernelMap`.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cached_property

import numpy as np
import torch

from ...kmap.kernel_map import KernelMap
from ...kmap.keys import MAX_BATCH, MAX_COORD
from ...ops.checks import checked, value_check
from ...tensor import check_unique

NDIMS = (1, 2, 3)


def check_ndim(ndim: int, what: str) -> None:
    """Raise ``NotImplementedError`` for a spatial rank the 3-D engine cannot serve."""
    if ndim not in NDIMS:
        raise NotImplementedError(
            f"{what} is {ndim}-D; torchsparse_lite's engine is 3-D and serves 1-D, 2-D and 3-D spconv "
            "tensors and layers (singleton axes), not 4-D ones"
        )


def expand_nd(ndim: int, value: int | Sequence[int] | np.ndarray, name: str = "value", minimum: int = 0) -> list[int]:
    """spconv's ``expand_nd``: an int or ``ndim`` ints -> a list of ``ndim`` ints ``>= minimum``."""
    if isinstance(value, bool):
        raise TypeError(f"{name} must be an int or {ndim} ints, got {value!r}")
    if isinstance(value, (int, np.integer)):
        out = [int(value)] * ndim
    else:
        try:
            out = [int(v) for v in value]
        except TypeError:
            raise TypeError(f"{name} must be an int or {ndim} ints, got {value!r}") from None
    if len(out) != ndim:
        raise ValueError(f"{name} must be an int or {ndim} ints for a {ndim}-D layer, got {value!r}")
    if min(out) < minimum:
        raise ValueError(f"{name} must be >= {minimum} on every axis, got {out}")
    return out


def pad3(values: Sequence[int], fill: int) -> tuple[int, int, int]:
    """Per-axis values of a 1-D/2-D layer on the native 3-D grid (``fill`` on the singleton axes)."""
    return tuple(list(values) + [fill] * (3 - len(values)))  # type: ignore[return-value]


def check_tensor_args(
    features: torch.Tensor, indices: torch.Tensor, spatial_shape: Sequence[int], batch_size: int
) -> tuple[torch.Tensor, list[int], int]:
    """Validate a ``SparseConvTensor``'s arguments; returns (int32 indices, spatial shape, batch size).

    Raises:
        TypeError: non-tensors, non-floating features, non-integer indices.
        ValueError: wrong ranks or row counts, devices that differ, indices
            outside ``spatial_shape`` or batch indices outside ``[0, batch_size)``,
            duplicate rows.
    """
    if not isinstance(features, torch.Tensor):
        raise TypeError(f"features must be a torch.Tensor, got {type(features).__name__}")
    if not isinstance(indices, torch.Tensor):
        raise TypeError(f"indices must be a torch.Tensor, got {type(indices).__name__}")
    if not features.dtype.is_floating_point:
        raise TypeError(f"features must be a floating-point tensor, got {features.dtype}; cast with .float()")
    if features.dim() != 2:
        raise ValueError(f"features must have shape [N, C], got {list(features.shape)}")
    if indices.dtype.is_floating_point or indices.dtype.is_complex or indices.dtype == torch.bool:
        raise TypeError(f"indices must be an integer tensor (spconv uses int32), got {indices.dtype}")
    if indices.dim() != 2 or indices.shape[1] < 2:
        raise ValueError(f"indices must have shape [N, ndim + 1] (batch first), got {list(indices.shape)}")
    shape = _check_spatial_shape(spatial_shape, indices.shape[1] - 1)
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
    if features.shape[0] != indices.shape[0]:
        raise ValueError(
            f"features has {features.shape[0]} rows but indices has {indices.shape[0]}; they must match one to one"
        )
    if features.device != indices.device:
        raise ValueError(f"features is on {features.device} but indices on {indices.device}; move both to one device")
    indices = checked(indices.to(torch.int32), "spconv_indices", int(batch_size), *shape)
    return indices, shape, int(batch_size)


@value_check("spconv_indices")
def check_indices(indices: torch.Tensor, batch_size: int, *shape: int) -> None:
    """Raise ``ValueError`` for int32 ``indices`` outside ``[0, batch_size)`` x ``shape`` or with duplicate rows
    (eagerly in :func:`check_tensor_args`, or in its graph at run time)."""
    _check_ranges(indices, list(shape), batch_size)
    check_unique(to_native(indices), "indices")


def _check_spatial_shape(spatial_shape: Sequence[int], ndim: int) -> list[int]:
    try:
        shape = [int(v) for v in spatial_shape]
    except TypeError:
        raise TypeError(f"spatial_shape must be a sequence of ints, got {spatial_shape!r}") from None
    if len(shape) != ndim:
        raise ValueError(
            f"spatial_shape {shape} has {len(shape)} axes but indices have {ndim} spatial columns "
            "(indices are [N, ndim + 1], batch first)"
        )
    check_ndim(ndim, "this SparseConvTensor")
    if min(shape) < 1 or max(shape) > MAX_COORD + 1:
        raise ValueError(f"spatial_shape must be in [1, {MAX_COORD + 1}] on every axis, got {shape}")
    return shape


def _check_ranges(indices: torch.Tensor, shape: list[int], batch_size: int) -> None:
    if not indices.shape[0]:
        return
    lo = indices.amin(0).tolist()
    hi = indices.amax(0).tolist()
    if lo[0] < 0 or hi[0] >= batch_size:
        raise ValueError(
            f"indices[:, 0] (batch index) spans [{lo[0]}, {hi[0]}] but batch_size is {batch_size}; "
            f"batch indices must lie in [0, batch_size)"
        )
    if batch_size - 1 > MAX_BATCH:
        raise ValueError(f"batch_size {batch_size} exceeds {MAX_BATCH + 1}, the most the key packing holds")
    for axis, (a, b, n) in enumerate(zip(lo[1:], hi[1:], shape)):
        if a < 0 or b >= n:
            raise ValueError(
                f"indices[:, {axis + 1}] spans [{a}, {b}] but spatial_shape[{axis}] is {n}; every index must lie "
                "in [0, spatial_shape) on its axis (crop the points or enlarge spatial_shape)"
            )


def to_native(indices: torch.Tensor) -> torch.Tensor:
    """spconv ``[N, ndim + 1]`` int32 indices -> native ``[N, 4]`` (batch, x, y, z); the same tensor in 3-D."""
    ndim = indices.shape[1] - 1
    if ndim == 3:
        return indices if indices.dtype == torch.int32 else indices.to(torch.int32)
    pad = indices.new_zeros((indices.shape[0], 3 - ndim), dtype=torch.int32)
    return torch.cat([indices.to(torch.int32), pad], dim=1)


def from_native(coords: torch.Tensor, ndim: int) -> torch.Tensor:
    """Native ``[N, 4]`` coordinates -> spconv ``[N, ndim + 1]`` indices (the same tensor in 3-D)."""
    return coords if ndim == 3 else coords[:, : ndim + 1].contiguous()


class IndiceData:
    """What spconv stores under an ``indice_key``: the pairs of one conv/pool and its grids.

    Attributes mirror spconv 2.x's ``IndiceData``: ``indices`` (the layer's
    input indices), ``out_indices``, ``spatial_shape``, ``out_spatial_shape``,
    ``is_subm``, ``algo``, ``ksize``, ``stride``, ``dilation``, ``padding``,
    ``voxel_num``; ``indice_pairs`` ``[2, K, N_in]`` (-1 padded, spconv's tap
    order) and ``indice_pair_num`` ``[K]`` are built from :attr:`kmap` on first
    access. ``kind`` is ``"subm"``, ``"conv"``, ``"pool"`` or ``"transposed"``;
    ``map_key`` is the name under which the tensors' map cache holds :attr:`kmap`.
    """

    def __init__(
        self,
        kmap: KernelMap,
        map_key: str,
        indices: torch.Tensor,
        out_indices: torch.Tensor,
        spatial_shape: list[int],
        out_spatial_shape: list[int],
        kind: str,
        params: dict,
    ) -> None:
        self.kmap = kmap
        self.map_key = map_key
        self.indices = indices
        self.out_indices = out_indices
        self.spatial_shape = list(spatial_shape)
        self.out_spatial_shape = list(out_spatial_shape)
        self.kind = kind
        self.is_subm = kind == "subm"
        self.algo = params.get("algo")
        self.ksize = list(params["ksize"])
        self.stride = list(params["stride"])
        self.dilation = list(params["dilation"])
        self.padding = list(params["padding"])
        self.voxel_num = None

    @cached_property
    def _pairs(self) -> tuple[torch.Tensor, torch.Tensor]:
        ndim = len(self.ksize)
        volume = int(np.prod(self.ksize))
        kmap = self.kmap
        pairs = torch.full((2, volume, kmap.n_in), -1, dtype=torch.int32, device=kmap.in_idx.device)
        counts = torch.zeros(volume, dtype=torch.int32, device=kmap.in_idx.device)
        native_ks = pad3(self.ksize, 1)
        bounds = kmap.bounds
        for t in range(volume):  # spconv's tap t: last axis fastest; ours: first axis fastest
            tap = pad3(list(np.unravel_index(t, self.ksize)), 0) if ndim else (0, 0, 0)
            ours = int(np.ravel_multi_index(tap, native_ks, order="F"))
            start, end = bounds[ours]
            pairs[0, t, : end - start] = kmap.in_idx[start:end].to(torch.int32)
            pairs[1, t, : end - start] = kmap.out_idx[start:end].to(torch.int32)
            counts[t] = end - start
        return pairs, counts

    @property
    def indice_pairs(self) -> torch.Tensor:
        """[2, K, N_in] int32: row 0 input rows, row 1 output rows of each tap, -1 padded."""
        return self._pairs[0]

    @property
    def indice_pair_num(self) -> torch.Tensor:
        """[K] int32 pairs per tap."""
        return self._pairs[1]

    def __repr__(self) -> str:
        return (
            f"IndiceData(kind={self.kind}, ksize={self.ksize}, stride={self.stride}, n_in={self.kmap.n_in}, "
            f"n_out={self.kmap.n_out})"
        )
