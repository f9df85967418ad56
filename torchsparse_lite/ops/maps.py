"""Map building as custom ops: a conv's output coordinates, and per map builder the pairs of its kernel map.

Two kinds of ops, both registered with fake implementations so that
``torch.compile`` and ``torch.export`` see their output shapes:

* ``torchsparse_lite::output_coords(in_coords, shape, mode, rule, bound, taps) -> out_coords``
  — the active outputs of a strided, generative or generative-transposed conv
  (:func:`~torchsparse_lite.kmap.outputs.output_coords`): [n_out, 4] int32,
  ``n_out`` a new unbacked size with ``2 <= n_out <= N * fan-out`` (fan-out 1 when the
  windows tile the grid or with the Minkowski rule, else the kernel volume).
* ``torchsparse_lite::kernel_map_<builder>(in_coords, out_coords, shape, mode, rule, bound,
  taps, check_in, check_out) -> (in_idx, out_idx, counts)`` for every builder
  (``hash``, ``sort``, ``triton_hash``, ``triton_sort``) — the pair search of
  :func:`~torchsparse_lite.kmap.pairs.map_pairs`: [M] int64 pairs grouped by
  offset, ``M`` a new unbacked size with ``0 <= M <= n_out * K``, and the [K] int64
  pairs per offset (the executors read them inside the conv ops).

The geometry travels as in :mod:`.schema`. The value checks that eager
``build_map`` runs first (coordinate ranges, the spatial bound, duplicates)
run inside the ops, on the real tensors, with the same ``ValueError``\\ s.

Why ``n_out >= 2``: a size a graph cannot see must be decided wherever a
layer branches on it, and ``BatchNorm`` in training branches on "exactly one
row" (which eager rejects anyway). Compiled graphs therefore assume every
computed output set holds at least 2 voxels, and the op raises a clear
``ValueError`` when one does not (an input of one voxel, or a bound that
drops almost everything): run such inputs eagerly. A statically empty input
(size 0, which ``torch.compile`` specialises) gets empty outputs without the
``output_coords`` op, and a bound that leaves no room for a size
(``N * fan-out <= 2``, ``n_out * K == 0``) is the static size itself.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..config import KMAP_BUILDERS
from ..kmap.geometry import ConvGeometry
from ..kmap.index import resolve_builder
from ..kmap.keys import check_coords_layout, check_coords_range
from ..kmap.outputs import check_bound, output_coords
from ..kmap.pairs import map_pairs
from .schema import geometry_args, geometry_of

BUILDERS = tuple(b for b in KMAP_BUILDERS if b != "auto")
MIN_OUTPUTS = 2  # see the module doc

TracedMap = tuple[Tensor, Tensor, Tensor, Tensor, Tensor, "int | None"]
"""(in_coords, out_coords, in_idx, out_idx, counts [K] int64, identity offset or None)."""


def fan_out(geometry: ConvGeometry) -> int:
    """Most outputs one input can create: 1 when each input lies in one window, else the kernel volume."""
    if geometry.mode == "conv" and (geometry.downsample_mode == "minkowski" or geometry.tiles):
        return 1
    return geometry.volume


def _check_input(in_coords: Tensor, geometry: ConvGeometry) -> None:
    check_coords_range(in_coords, "in_coords")
    check_bound(in_coords, geometry.bound, "in_coords")


@torch.library.custom_op("torchsparse_lite::output_coords", mutates_args=())
def output_coords_op(in_coords: Tensor, shape: list[int], mode: str, rule: str, bound: list[int],
                     taps: list[int]) -> Tensor:  # fmt: skip
    """[N, 4] int32 inputs -> [n_out, 4] int32 outputs of a non-submanifold conv (validates the inputs)."""
    geometry = geometry_of(shape, mode, rule, bound, taps)
    if geometry.mode == "submanifold":
        raise ValueError("a submanifold conv's outputs are its inputs; output_coords computes those of other convs")
    _check_input(in_coords, geometry)
    out = output_coords(in_coords, geometry)
    if out.shape[0] < MIN_OUTPUTS:
        raise ValueError(
            f"this {geometry.mode} conv (kernel {geometry.kernel_size}, stride {geometry.stride}) yields "
            f"{out.shape[0]} output voxel(s) from {in_coords.shape[0]}; a compiled network assumes at least "
            f"{MIN_OUTPUTS} per strided or generative conv (see torchsparse_lite.ops.maps): run this input eagerly"
        )
    return out


def dynamic_size(lo: int, hi: int | torch.SymInt) -> int | torch.SymInt:
    """A new unbacked size in ``[lo, hi]`` (``hi`` may be symbolic); the static ``hi`` when that is all it can be."""
    if isinstance(hi, int) and hi <= lo:
        return hi
    size = torch.library.get_ctx().new_dynamic_size(min=lo)
    torch._check(size <= hi)
    return size


@output_coords_op.register_fake
def _output_coords_fake(in_coords, shape, mode, rule, bound, taps):
    geometry = geometry_of(shape, mode, rule, bound, taps)
    return in_coords.new_empty((dynamic_size(MIN_OUTPUTS, in_coords.shape[0] * fan_out(geometry)), 4))


def _pairs_fake(in_coords, out_coords, shape, mode, rule, bound, taps, check_in, check_out):
    volume = geometry_of(shape, mode, rule, bound, taps).volume
    idx = in_coords.new_empty((dynamic_size(0, out_coords.shape[0] * volume),), dtype=torch.int64)
    return idx, torch.empty_like(idx), in_coords.new_empty((volume,), dtype=torch.int64)


def _register_pairs(builder: str):
    """Register ``torchsparse_lite::kernel_map_<builder>`` (see the module doc)."""

    def pairs(in_coords: Tensor, out_coords: Tensor, shape: list[int], mode: str, rule: str, bound: list[int],
              taps: list[int], check_in: bool, check_out: bool) -> tuple[Tensor, Tensor, Tensor]:  # fmt: skip
        geometry = geometry_of(shape, mode, rule, bound, taps)
        if check_in:
            _check_input(in_coords, geometry)
        if check_out:
            check_coords_range(out_coords, "out_coords")
        in_idx, out_idx, counts, _ = map_pairs(in_coords, out_coords, geometry, builder)
        return in_idx, out_idx, torch.tensor(counts, dtype=torch.int64, device=in_coords.device)

    pairs.__doc__ = f"The pairs of a kernel map, searched with the {builder!r} index."
    op = torch.library.custom_op(f"torchsparse_lite::kernel_map_{builder}", pairs, mutates_args=())
    op.register_fake(_pairs_fake)
    return op


PAIR_OPS = {builder: _register_pairs(builder) for builder in BUILDERS}


def builder_name(builder: str, device: torch.device) -> str:
    """The registered builder ``builder`` names on ``device`` (:func:`~torchsparse_lite.kmap.index.resolve_builder`)."""
    builder = resolve_builder(builder, device)
    if builder not in BUILDERS:
        raise ValueError(f"kmap_builder must be one of {KMAP_BUILDERS}, got {builder!r}")
    return builder


def _as_coords(coords: Tensor, name: str) -> Tensor:
    check_coords_layout(coords, name)
    return coords if coords.dtype == torch.int32 else coords.to(torch.int32)


def traced_map(in_coords: Tensor, geometry: ConvGeometry, out_coords: Tensor | None, builder: str) -> TracedMap:
    """``build_map`` in a traced graph: the map's tensors, built by the ops above.

    Args:
        in_coords: [N, 4] integer coordinates (their values are checked in the ops).
        geometry: the conv.
        out_coords: [M, 4] outputs to use, or None to compute them (a
            submanifold conv's outputs are ``in_coords`` itself).
        builder: a name of ``config.KMAP_BUILDERS``.
    """
    in_coords = _as_coords(in_coords, "in_coords")
    given = out_coords is not None
    if given:
        out_coords = _as_coords(out_coords, "out_coords")
        if out_coords.device != in_coords.device:
            raise ValueError(f"out_coords is on {out_coords.device} but in_coords on {in_coords.device}")
    name = builder_name(builder, in_coords.device)
    centre = geometry.volume // 2 if geometry.symmetric else None
    args = geometry_args(geometry)
    n_in = in_coords.shape[0]
    if isinstance(n_in, int) and n_in < MIN_OUTPUTS and not given and geometry.mode != "submanifold":
        return _tiny_map(in_coords, geometry, centre)
    computed = not given and geometry.mode != "submanifold"
    if not given:
        out_coords = output_coords_op(in_coords, *args) if computed else in_coords
    in_idx, out_idx, counts = PAIR_OPS[name](in_coords, out_coords, *args, not computed, given)
    return in_coords, out_coords, in_idx, out_idx, counts, centre


def _tiny_map(in_coords: Tensor, geometry: ConvGeometry, centre: int | None) -> TracedMap:
    """The map of a conv on a statically empty input; a static single voxel cannot be traced (see the doc)."""
    if in_coords.shape[0]:
        raise ValueError(
            f"a {geometry.mode} conv on a 1-voxel input cannot be compiled: the graph assumes every computed "
            f"output set holds at least {MIN_OUTPUTS} voxels (see torchsparse_lite.ops.maps); run it eagerly"
        )
    idx = in_coords.new_zeros((0,), dtype=torch.int64)
    counts = in_coords.new_zeros((geometry.volume,), dtype=torch.int64)
    return in_coords, in_coords.new_zeros((0, 4)), idx, idx.clone(), counts, centre
