"""Which output coordinate set a layer writes to, and its kernel map — ME's rules on the native cache.

From ME 0.5.4's ``convolution_cpu.cpp``, ``convolution_transpose_cpu.cpp``
and ``coordinate_map_manager.cpp``:

* conv, not expanding: the output is ``stride(in_key, s)``, the set at key
  ``(ts * s, in_string_id)``, created as ``unique(floor(c / (ts s)) * ts s)``
  when absent and reused when present — so a stride-1 conv writes to its input
  set (submanifold) and two strided convs of one input share their output.
  The native cache's ``downsample_mode="minkowski"`` map gives exactly that set.
* conv, ``expand_coordinates=True``: a new set ``{c + offset : aligned to ts
  s}`` (ME's ``stride_region``); same key, or a fresh id when taken.
* transposed, not expanding: the set at ``(ts / s, "")`` when it exists (the
  native cache's transposed map returns it in its row order); when it does
  not, or with ``expand_coordinates=True``, a new set ``{c + offset}``
  (generative).
* an explicit ``coordinates=`` target: that set.

Row order of new sets: the input's order for inputs (first occurrences), else
sorted by (batch, x, y, z); ME's order there is its hash table's.

Maps onto a set that the cache did not produce are built by :func:`build_onto`.
"""

from __future__ import annotations

import torch

from ...config import resolve
from ...kmap.cache import same_coords
from ...kmap.geometry import ConvGeometry
from ...kmap.kernel_map import KernelMap, build_map
from ...kmap.keys import MAX_COORD, pack, unpack
from ...kmap.outputs import output_coords
from .kernel import KernelGenerator
from .manager import ORIGIN_STRIDE, SHIFT, CoordinateManager, CoordinateMapKey, check_tensor_stride


def layer_map(
    manager: CoordinateManager,
    in_key: CoordinateMapKey,
    kernel: KernelGenerator,
    *,
    transpose: bool = False,
    is_pool: bool = False,
    target: CoordinateMapKey | None = None,
) -> tuple[KernelMap, CoordinateMapKey]:
    """The kernel map of a conv/pooling layer on ``in_key``'s set and the key of its output set.

    Raises:
        ValueError: the input is a global pooling output (tensor stride 0),
            the tensor stride is not divisible by a transposed conv's stride,
            or ``target`` has the wrong tensor stride.
    """
    ts, _ = manager.native_key(in_key)
    if ts == ORIGIN_STRIDE:
        raise ValueError(
            "this SparseTensor is a global pooling output (tensor stride 0, coordinates [b, 0, 0, 0]); it has no "
            "spatial neighbourhood to convolve or pool"
        )
    s = tuple(kernel.kernel_stride)
    out_ts = _out_stride(ts, s, transpose)
    if target is not None:
        return _explicit(manager, in_key, kernel, transpose, is_pool, target, out_ts)
    if transpose:
        return _transposed(manager, in_key, kernel, is_pool, out_ts)
    if kernel.expand_coordinates:
        return _expanded(manager, in_key, kernel, is_pool, out_ts)
    return _strided(manager, in_key, kernel, is_pool, out_ts)


def _out_stride(ts: tuple[int, ...], s: tuple[int, ...], transpose: bool) -> tuple[int, ...]:
    if not transpose:
        out = tuple(t * v for t, v in zip(ts, s))
    elif any(t % v for t, v in zip(ts, s)):
        raise ValueError(
            f"a transposed layer with stride {list(s)} needs an input whose tensor_stride is divisible by it, got "
            f"tensor_stride {list(ts)}"
        )
    else:
        out = tuple(t // v for t, v in zip(ts, s))
    check_tensor_stride(out)  # type: ignore[arg-type]
    return out


def _builder() -> str:
    return resolve("kmap_builder", None)  # type: ignore[return-value]


def _memo(
    manager: CoordinateManager, in_key: CoordinateMapKey, out_key: CoordinateMapKey, geometry: ConvGeometry, make
) -> KernelMap:
    """ME's kernel-map cache: one map per (input set, output set, kernel)."""
    memo = (in_key.pair, out_key.pair, geometry)
    if memo not in manager.kernel_maps:
        manager.kernel_maps[memo] = make()
    return manager.kernel_maps[memo]


def build_onto(in_c: torch.Tensor, out_c: torch.Tensor, geometry: ConvGeometry) -> KernelMap:
    """The map of ``geometry`` from ``in_c`` onto the given output set ``out_c``."""
    return build_map(in_c, geometry, out_coords=out_c, builder=_builder())


def _checked(kmap: KernelMap | None, in_c: torch.Tensor, out_c: torch.Tensor, geometry: ConvGeometry) -> KernelMap:
    """``kmap`` when it targets ``out_c`` row for row, else the map built onto ``out_c`` explicitly."""
    if kmap is not None and same_coords(kmap.out_coords, out_c):
        return kmap
    return build_onto(in_c, out_c, geometry)


def _strided(manager, in_key, kernel, is_pool, out_ts) -> tuple[KernelMap, CoordinateMapKey]:
    """ME's ``stride()`` target: reuse the set at (ts * s, id), else the native minkowski-rule outputs."""
    ts, sid = in_key.pair
    in_c = manager.native(in_key)
    if out_ts == ts:
        geometry = kernel.geometry("submanifold", is_pool)
        kmap = _memo(manager, in_key, in_key, geometry, lambda: manager.cache.get(in_c, ts, geometry, _builder()))
        return kmap, in_key
    geometry = kernel.geometry("conv", is_pool)
    out_key = CoordinateMapKey(list(out_ts), sid)
    if not manager.exists(out_key):
        kmap = manager.cache.get(in_c, ts, geometry, _builder())
        out_key = manager.register(kmap.out_coords, out_ts, sid)
        return _memo(manager, in_key, out_key, geometry, lambda: kmap), out_key
    out_c = manager.native(out_key)
    make = lambda: _checked(manager.cache.get(in_c, ts, geometry, _builder()), in_c, out_c, geometry)  # noqa: E731
    return _memo(manager, in_key, out_key, geometry, make), out_key


def _transposed(manager, in_key, kernel, is_pool, out_ts) -> tuple[KernelMap, CoordinateMapKey]:
    """Reuse the finer set at (ts / s, "") (the cached transposed map), else generate one."""
    ts, _ = in_key.pair
    in_c = manager.native(in_key)
    geometry = kernel.geometry("transposed", is_pool)
    fine = CoordinateMapKey(list(out_ts), "")
    if manager.exists(fine) and not kernel.expand_coordinates:
        out_c = manager.native(fine)

        def make() -> KernelMap:
            try:
                cached = manager.cache.get(in_c, ts, geometry, _builder())
            except ValueError:  # no down-sampling map with these taps: build onto the finer set
                cached = None
            return _checked(cached, in_c, out_c, geometry)

        return _memo(manager, in_key, fine, geometry, make), fine
    offsets = geometry.offsets(in_c.device)
    if in_c.shape[0] and int(in_c[:, 1:].min()) * min(geometry.stride) + int(offsets.min()) < 0:
        raise ValueError(
            "the generative transposed conv would create coordinates below the supported range "
            f"(ME coordinates >= {-SHIFT}); crop the scene"
        )
    out_c = output_coords(in_c, geometry)  # every c * s + offset: ME's transposed stride_region
    out_key = manager.register(out_c, out_ts, "")
    return _memo(manager, in_key, out_key, geometry, lambda: build_onto(in_c, out_c, geometry)), out_key


def _expanded(manager, in_key, kernel, is_pool, out_ts) -> tuple[KernelMap, CoordinateMapKey]:
    """ME's non-transposed ``stride_region``: every ``c + offset`` aligned to the output stride."""
    in_c = manager.native(in_key)
    geometry = kernel.geometry("conv", is_pool)
    c = in_c.to(torch.int64)
    offsets = geometry.offsets(c.device)
    s = torch.tensor(geometry.stride, dtype=torch.int64, device=c.device)
    cand = c[:, None, 1:] + offsets[None]
    aligned = (cand % s == 0).all(dim=2)
    spatial = torch.div(cand[aligned], s, rounding_mode="floor")
    batch = c[:, :1].expand(-1, offsets.shape[0])[aligned]
    if spatial.numel() and (int(spatial.min()) < 0 or int(spatial.max()) > MAX_COORD):
        raise ValueError(
            "expand_coordinates=True would create coordinates outside the supported range (ME coordinates in "
            f"[{-SHIFT}, {MAX_COORD - SHIFT}] at tensor stride 1); crop the scene"
        )
    out_c = unpack(torch.unique(pack(torch.cat([batch[:, None], spatial], dim=1))))
    out_key = manager.register(out_c, out_ts, "")
    return _memo(manager, in_key, out_key, geometry, lambda: build_onto(in_c, out_c, geometry)), out_key


def _explicit(manager, in_key, kernel, transpose, is_pool, target, out_ts) -> tuple[KernelMap, CoordinateMapKey]:
    """The map onto a given output set (ME's ``coordinates=`` argument of a layer's forward)."""
    if not isinstance(target, CoordinateMapKey) or not manager.exists(target):
        raise ValueError(
            "coordinates must be a SparseTensor or CoordinateMapKey of the input's coordinate manager; this one "
            "is not one of its coordinate maps"
        )
    got = tuple(target.pair[0])
    if got != out_ts:
        raise ValueError(
            f"coordinates have tensor stride {list(got)} but this layer's output has tensor stride {list(out_ts)}"
        )
    mode = "transposed" if transpose else ("submanifold" if target == in_key else "conv")
    geometry = kernel.geometry(mode, is_pool)
    in_c, out_c = manager.native(in_key), manager.native(target)
    if mode == "submanifold":
        make = lambda: manager.cache.get(in_c, in_key.pair[0], geometry, _builder())  # noqa: E731
    else:
        make = lambda: build_onto(in_c, out_c, geometry)  # noqa: E731
    return _memo(manager, in_key, target, geometry, make), target
