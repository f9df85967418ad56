"""A kernel-map cache shared by every layer that sees the same coordinates.

Entries are keyed by the identity of the input coordinate tensor (coordinates
flow unchanged through submanifold layers, so the object is shared), the
tensor stride, the conv geometry and the mode. A transposed conv finds the map
of the down-sampling conv that produced its (coarse) coordinates and reuses it
with inputs and outputs swapped, returning the finer coordinates.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .kmap import KernelMap, build_kernel_map


@dataclass(frozen=True)
class MapKey:
    coords_id: int
    tensor_stride: tuple[int, int, int]
    kernel_size: tuple[int, int, int]
    stride: tuple[int, int, int]
    dilation: tuple[int, int, int]
    mode: str
    downsample_mode: str


class KernelMapCache:
    """Maps built for one family of coordinate sets (one batch of scans)."""

    def __init__(self) -> None:
        self._maps: dict[MapKey, KernelMap] = {}

    def __len__(self) -> int:
        return len(self._maps)

    def clear(self) -> None:
        self._maps.clear()

    def get(
        self,
        coords: torch.Tensor,
        tensor_stride: tuple[int, int, int],
        kernel_size: tuple[int, int, int],
        stride: tuple[int, int, int],
        dilation: tuple[int, int, int],
        mode: str,
        builder: str,
        downsample_mode: str = "spconv",
    ) -> KernelMap:
        """Return the cached map for this conv, building it on a miss.

        For ``mode="transposed"`` the map of the matching down-sampling conv
        (same kernel, stride, dilation; its outputs are ``coords``) is reused
        swapped; without one, a generative transposed map is built.
        """
        dmode = downsample_mode if mode == "conv" else "-"
        key = MapKey(id(coords), tensor_stride, kernel_size, stride, dilation, mode, dmode)
        hit = self._maps.get(key)
        if hit is not None and hit.in_coords is coords:
            return hit
        kmap = None
        if mode == "transposed":
            kmap = self._find_down_map(coords, kernel_size, stride, dilation)
        if kmap is None:
            kmap = build_kernel_map(
                coords, kernel_size, stride, dilation, mode=mode, builder=builder, downsample_mode=downsample_mode
            )
        self._maps[key] = kmap
        return kmap

    def _find_down_map(
        self,
        coords: torch.Tensor,
        kernel_size: tuple[int, int, int],
        stride: tuple[int, int, int],
        dilation: tuple[int, int, int],
    ) -> KernelMap | None:
        for key, kmap in self._maps.items():
            if (
                key.mode == "conv"
                and key.kernel_size == kernel_size
                and key.stride == stride
                and key.dilation == dilation
                and kmap.out_coords is coords
            ):
                return kmap.transpose()
        return None
