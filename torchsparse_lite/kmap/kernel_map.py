"""Kernel maps: which input row meets which output row through which weight.

A :class:`KernelMap` stores, for every kernel offset ``k``, the pairs
``(in_idx, out_idx)`` such that ``in_coord = out_coord * stride + offset_k``
(a transposed map swaps the roles). The pairs of all offsets live in two
concatenated arrays, grouped by offset, with ``counts[k]`` pairs for offset
``k``. This is the single interface between map building and compute; the
conv it belongs to is described by its :class:`ConvGeometry`.

Under ``torch.compile`` / ``torch.export`` :func:`build_map` builds the map
with the registered custom ops of :mod:`torchsparse_lite.ops.maps` instead:
the pair and output counts are data-dependent sizes there, so a traced map
holds ``counts`` as a [K] int64 tensor. :class:`MapPairs` is the part of a
map the executors read, without coordinates (what a conv op rebuilds from
its tensor arguments).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from functools import cached_property

import torch

from ..ops.maps import traced_map
from .candidates import enumerated_map, enumerates
from .geometry import MODES, ConvGeometry, triple
from .index import resolve_builder
from .keys import check_coords
from .outputs import check_bound, output_coords
from .pairs import map_pairs

__all__ = ["MODES", "KernelMap", "MapPairs", "build_kernel_map", "build_map", "offset_bounds"]


def offset_bounds(counts: tuple[int, ...] | torch.Tensor) -> list[tuple[int, int]]:
    """[(start, end)] of each offset's pairs in the concatenated ``in_idx``/``out_idx`` (eager code only)."""
    if isinstance(counts, torch.Tensor):  # a map a traced graph built, read outside the graph
        counts = tuple(counts.tolist())
    out, start = [], 0
    for c in counts:
        out.append((start, start + c))
        start += c
    return out


class _OffsetRuns:
    """``volume`` and ``bounds`` of a map whose pairs are grouped by offset with ``counts[k]`` each."""

    counts: tuple[int, ...] | torch.Tensor

    @property
    def volume(self) -> int:
        return len(self.counts)

    @cached_property
    def bounds(self) -> list[tuple[int, int]]:
        """[(start, end)] of each offset's pairs in ``in_idx``/``out_idx`` (computed once, read per tap)."""
        return offset_bounds(self.counts)


@dataclass(frozen=True, eq=False)
class KernelMap(_OffsetRuns):
    """Compact map of one convolution.

    Attributes:
        in_idx: [M] int64 input rows, grouped by offset.
        out_idx: [M] int64 output rows, aligned with ``in_idx``.
        counts: pairs per offset, ``len(counts) == K``: a tuple of ints, or
            a [K] int64 tensor on a map built in a traced graph (its values
            are data there; :attr:`bounds` and the planners need the tuple).
        in_coords: [n_in, 4] int32 input coordinates.
        out_coords: [n_out, 4] int32 output coordinates.
        geometry: the conv's :class:`ConvGeometry` (mode swapped on a
            transposed view).
        identity_offset: offset whose map is ``in_idx == out_idx == arange``
            (the centre tap of a submanifold conv), or None.
        symmetric: True when offset ``k``'s pairs are offset ``K-1-k``'s
            pairs swapped (submanifold conv with odd, centred kernel).
        in_shape, out_shape: spatial grid shapes when the conv is bounded.
        plans: what executors derive from this map and keep with it, by key:
            execution plans and their launch data (group indices, segment
            blocks, Triton descriptors, neighbour tables). A copy made by :meth:`to` or
            :meth:`transpose` starts empty.
    """

    in_idx: torch.Tensor
    out_idx: torch.Tensor
    counts: tuple[int, ...] | torch.Tensor
    in_coords: torch.Tensor
    out_coords: torch.Tensor
    geometry: ConvGeometry
    identity_offset: int | None = None
    symmetric: bool = False
    in_shape: tuple[int, int, int] | None = None
    out_shape: tuple[int, int, int] | None = None
    plans: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    kernel_size = property(lambda self: self.geometry.kernel_size)
    stride = property(lambda self: self.geometry.stride)
    dilation = property(lambda self: self.geometry.dilation)
    padding = property(lambda self: self.geometry.padding)
    mode = property(lambda self: self.geometry.mode)

    @property
    def n_in(self) -> int:
        return self.in_coords.shape[0]  # no int(): a symbolic size in a traced graph stays symbolic

    @property
    def n_out(self) -> int:
        return self.out_coords.shape[0]

    def transpose(self) -> KernelMap:
        """The map with inputs and outputs swapped (used by transposed convs and backward)."""
        return replace(
            self,
            in_idx=self.out_idx,
            out_idx=self.in_idx,
            in_coords=self.out_coords,
            out_coords=self.in_coords,
            geometry=self.geometry.transposed(),
            in_shape=self.out_shape,
            out_shape=self.in_shape,
        )

    def to(self, device: torch.device | str) -> KernelMap:
        return replace(
            self,
            in_idx=self.in_idx.to(device),
            out_idx=self.out_idx.to(device),
            in_coords=self.in_coords.to(device),
            out_coords=self.out_coords.to(device),
        )


@dataclass(frozen=True, eq=False)
class MapPairs(_OffsetRuns):
    """What the executors read of a map: its pairs, counts and row counts (no coordinates, no geometry).

    A conv op of :mod:`torchsparse_lite.ops.conv` receives a map as tensors
    and ints and rebuilds this view of it; :class:`KernelMap` has the same
    attributes, so the executors take either.
    """

    in_idx: torch.Tensor
    out_idx: torch.Tensor
    counts: tuple[int, ...]
    n_in: int
    n_out: int
    identity_offset: int | None = None
    symmetric: bool = False
    plans: dict = field(default_factory=dict, init=False, repr=False, compare=False)


def _kernel_map(
    geometry: ConvGeometry,
    in_coords: torch.Tensor,
    out_coords: torch.Tensor,
    in_idx: torch.Tensor,
    out_idx: torch.Tensor,
    counts: tuple[int, ...] | torch.Tensor,
    centre: int | None,
) -> KernelMap:
    return KernelMap(in_idx, out_idx, counts, in_coords, out_coords, geometry, centre, centre is not None,
                     geometry.bound, geometry.out_shape)  # fmt: skip


def _sorts(builder: str, coords: torch.Tensor) -> bool:
    """True when ``builder`` resolves to the PyTorch sort builder for ``coords`` (not the Triton one)."""
    return not coords.is_cuda and resolve_builder(builder, coords.device) == "sort"


def build_map(
    in_coords: torch.Tensor,
    geometry: ConvGeometry,
    *,
    out_coords: torch.Tensor | None = None,
    builder: str = "auto",
) -> KernelMap:
    """Build the kernel map of the conv described by ``geometry`` over ``in_coords``.

    Stages: validate, compute the output coordinates (unless given), index the
    input keys, derive per-output base keys, look every offset up
    (:func:`~torchsparse_lite.kmap.pairs.map_pairs`). In a traced graph the
    same stages run inside custom ops (:func:`~torchsparse_lite.ops.maps.traced_map`),
    which also check the coordinate values, on the real tensors. A strided or
    generative conv whose outputs are computed here skips the index and the
    search on the CPU sort builder: its pairs are its inputs' candidates
    (:mod:`.candidates`).

    Args:
        in_coords: [N, 4] integer (batch, x, y, z), unique, in [0, MAX_COORD]
            (and inside ``geometry.bound`` when it is set).
        geometry: kernel, stride, dilation, padding, mode, output rule, bound.
        out_coords: [M, 4] output coordinates to use instead of computing them.
        builder: ``"hash"``, ``"sort"`` or ``"auto"``; all give the identical map.

    Returns:
        The :class:`KernelMap`; pairs of each offset are sorted by output row.
    """
    if not isinstance(geometry, ConvGeometry):
        raise TypeError(f"geometry must be a ConvGeometry, got {type(geometry).__name__}")
    if torch.compiler.is_compiling():
        return _kernel_map(geometry, *traced_map(in_coords, geometry, out_coords, builder))
    in_coords = check_coords(in_coords, "in_coords")
    check_bound(in_coords, geometry.bound, "in_coords")
    if out_coords is not None:
        out_coords = check_coords(out_coords, "out_coords")
        if out_coords.device != in_coords.device:
            raise ValueError(f"out_coords is on {out_coords.device} but in_coords on {in_coords.device}")
        if geometry.mode == "submanifold" and not (out_coords.shape == in_coords.shape
                                                   and torch.equal(out_coords, in_coords)):  # fmt: skip
            raise ValueError(
                "out_coords: a submanifold map's outputs are its inputs, row for row; to map onto other "
                "coordinates use mode='conv' with stride 1 (and the same kernel and padding)"
            )
    if out_coords is None and enumerates(geometry) and _sorts(builder, in_coords):
        # The candidates are the pairs: no search. The hash builder keeps the search (a second opinion on
        # the pairs; its output coordinates come from the same candidates, checked by a brute-force test).
        out_coords, in_idx, out_idx, counts = enumerated_map(in_coords, geometry)
        return _kernel_map(geometry, in_coords, out_coords, in_idx, out_idx, counts, None)
    if out_coords is None:
        out_coords = output_coords(in_coords, geometry)
    return _kernel_map(geometry, in_coords, out_coords, *map_pairs(in_coords, out_coords, geometry, builder))


def build_kernel_map(
    in_coords: torch.Tensor,
    kernel_size: int | tuple[int, int, int],
    stride: int | tuple[int, int, int] = (1, 1, 1),
    dilation: int | tuple[int, int, int] = (1, 1, 1),
    *,
    mode: str = "submanifold",
    padding: int | tuple[int, int, int] | None = None,
    bound: int | tuple[int, int, int] | None = None,
    out_coords: torch.Tensor | None = None,
    builder: str = "auto",
    downsample_mode: str = "spconv",
) -> KernelMap:
    """Build the kernel map of one convolution (keyword form of :func:`build_map`).

    Args:
        in_coords: [N, 4] integer (batch, x, y, z), unique, in [0, MAX_COORD].
        kernel_size, stride, dilation: ints or 3-tuples of positive ints.
        mode: ``"submanifold"`` (stride must be 1), ``"conv"`` or ``"transposed"``.
        padding: per-axis padding of the equivalent dense conv (taps at
            ``k * dilation - padding``); None = ``d * (k // 2)`` for odd k, 0 for even k.
        bound: spatial shape of the input grid; outputs outside the dense conv's
            output shape are dropped (None: unbounded).
        out_coords: [M, 4] output coordinates to use instead of computing
            them (e.g. the finer coordinates of a transposed conv).
        builder: ``"hash"``, ``"sort"`` or ``"auto"``; all give the identical map.
        downsample_mode: ``"spconv"`` or ``"minkowski"`` (strided conv outputs).
    """
    geometry = ConvGeometry(
        triple(kernel_size, "kernel_size"), triple(stride, "stride"), triple(dilation, "dilation"),
        padding, mode, downsample_mode, bound,
    )  # fmt: skip
    return build_map(in_coords, geometry, out_coords=out_coords, builder=builder)
