"""Kernel-map building: coordinate keys, hash/sort indexes, maps and their cache."""

from .cache import KernelMapCache
from .index import HashIndex, SortIndex, make_index
from .kernel_map import KernelMap, build_kernel_map, output_coords
from .keys import MAX_BATCH, MAX_COORD, check_coords, pack, unpack
from .offsets import kernel_offsets, padding, triple

__all__ = [
    "MAX_BATCH",
    "MAX_COORD",
    "HashIndex",
    "KernelMap",
    "KernelMapCache",
    "SortIndex",
    "build_kernel_map",
    "check_coords",
    "kernel_offsets",
    "make_index",
    "output_coords",
    "pack",
    "padding",
    "triple",
    "unpack",
]
