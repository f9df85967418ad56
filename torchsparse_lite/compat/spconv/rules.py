"""spconv 2.3.8's ``indice_key`` rules, mapped onto the shared kernel-map cache.

A layer's map comes from the tensor's :class:`~torchsparse_lite.kmap.cache.KernelMapCache`
(cached by coordinates and geometry, stored and found by name with the
cache's ``key=``). Which keys a layer may use is decided, as in spconv, by the
input tensor's own ``indice_dict`` (copied from layer to layer, so sibling
branches, or two networks run on one input, do not see each other's keys).
The name under which the cache holds a key's map is therefore the spconv key
qualified by the layer's geometry and input coordinates (:func:`map_key`):
one spconv key may name different maps in different branches, as in spconv.

* a submanifold conv reuses the pairs under an existing key (same kernel,
  dilation, spatial shape and indices, else ``ValueError``), or stores its own;
* a strided/generative conv, a transposed conv and a pool always build their
  pairs; an existing key is an error (spconv: "only support reuse subm
  indices" / "indice key exists"), a new one stores them;
* an inverse conv needs the key of a strided conv or pool (``ValueError``
  otherwise) and returns that layer's input indices in their row order.
"""

from __future__ import annotations

import torch

from ...config import resolve
from ...kmap.geometry import ConvGeometry
from ...kmap.kernel_map import KernelMap
from .indices import IndiceData, from_native, pad3
from .tensor import SparseConvTensor

UNIT = (1, 1, 1)


def out_spatial_shape(x: SparseConvTensor, geometry: ConvGeometry, layer: str) -> list[int]:
    """spconv's output spatial shape of ``geometry`` on ``x``; ``ValueError`` when an axis reaches zero."""
    shape = list(geometry.out_shape[: x.ndim])  # type: ignore[index]
    if min(shape) <= 0:
        raise ValueError(
            f"{layer}: the output spatial shape {shape} reaches zero for input spatial shape {x.spatial_shape} "
            f"(kernel {list(geometry.kernel_size[: x.ndim])}, stride {list(geometry.stride[: x.ndim])}, padding "
            f"{list(geometry.padding[: x.ndim])}); the input grid is too small for this layer"
        )
    return shape


def _check_subm_reuse(x: SparseConvTensor, data: IndiceData, key: str, params: dict, layer: str) -> None:
    if not data.is_subm:
        raise ValueError(
            f"{layer}: indice_key {key!r} holds the pairs of a {data.kind} layer in this tensor; spconv reuses "
            "pairs under a key only between submanifold convs (and inverse convs): give this layer another key"
        )
    for name, ours, theirs in (
        ("kernel_size", params["ksize"], data.ksize),
        ("dilation", params["dilation"], data.dilation),
    ):
        if list(ours) != list(theirs):
            raise ValueError(
                f"{layer}: subm convs sharing indice_key {key!r} need the same {name}: {theirs}, got {list(ours)}"
            )
    if x.spatial_shape != data.spatial_shape or x.indices.shape[0] != data.indices.shape[0]:
        raise ValueError(
            f"{layer}: indice_key {key!r} was built on {data.indices.shape[0]} indices of spatial shape "
            f"{data.spatial_shape}, this input has {x.indices.shape[0]} of {x.spatial_shape}; subm convs sharing "
            "a key must see the same indices"
        )


def map_key(key: str, geometry: ConvGeometry, coords: torch.Tensor) -> str:
    """The cache name of the map stored under spconv ``key`` by a layer of ``geometry`` on ``coords``.

    The cache's maps keep their input coordinates alive, so ``id(coords)`` stays
    unique while the name is in use.
    """
    g = geometry
    return f"{key}|{g.mode}|k{g.kernel_size}s{g.stride}d{g.dilation}p{g.padding}b{g.bound}|{id(coords)}"


def forward_map(
    x: SparseConvTensor, geometry: ConvGeometry, kind: str, key: str | None, params: dict, layer: str
) -> tuple[KernelMap, list[int], dict]:
    """The map of a subm/conv/transposed/pool layer on ``x``, its output spatial shape and output ``indice_dict``.

    Args:
        geometry: the layer's geometry without a bound (the bound is ``x``'s spatial shape).
        kind: ``"subm"``, ``"conv"``, ``"transposed"`` or ``"pool"``.
        params: spconv's ``ksize``/``stride``/``padding``/``dilation``/``algo`` lists, stored with the key.
    """
    data = x.find_indice_pair(key)
    if data is not None:
        if kind != "subm":
            what = "a pool" if kind == "pool" else f"a {'transposed' if kind == 'transposed' else 'strided'} conv"
            raise ValueError(
                f"{layer}: indice_key {key!r} exists in this tensor already ({data.kind} layer); {what} always "
                "builds its own pairs and spconv reuses keys only between subm convs: give it a new indice_key"
            )
        _check_subm_reuse(x, data, key, params, layer)  # type: ignore[arg-type]
    geometry = geometry.with_bound(pad3(x.spatial_shape, 1))
    shape = out_spatial_shape(x, geometry, layer)
    builder = resolve("kmap_builder", None)
    coords = x._native_coords()
    name = None if key is None else (data.map_key if data is not None else map_key(key, geometry, coords))
    kmap = x._cache.get(coords, UNIT, geometry, builder, key=name, generative=kind == "transposed")
    indice_dict = dict(x.indice_dict)
    if key is not None and data is None:
        out_indices = x.indices if kind == "subm" else from_native(kmap.out_coords, x.ndim)
        indice_dict[key] = IndiceData(kmap, name, x.indices, out_indices, x.spatial_shape, shape, kind, params)
    return kmap, shape, indice_dict


def inverse_map(x: SparseConvTensor, key: str, ksize: list[int], layer: str) -> tuple[KernelMap, IndiceData]:
    """The swapped map of the strided conv/pool that stored ``key``, and its :class:`IndiceData`.

    Raises:
        ValueError: unknown key, a subm key, another kernel size, or an input
            that is not that layer's output.
        NotImplementedError: the key belongs to a transposed conv.
    """
    data = x.find_indice_pair(key)
    if data is None:
        raise ValueError(
            f"{layer}: indice_key {key!r} is not in this tensor's indice_dict (known keys: {sorted(x.indice_dict)}); "
            "an inverse conv needs the key of the strided conv or pool whose output it undoes"
        )
    if data.is_subm:
        raise ValueError(f"{layer}: indice_key {key!r} belongs to a subm conv; inverse convs undo strided convs/pools")
    if data.kind == "transposed":
        raise NotImplementedError(
            f"{layer}: indice_key {key!r} belongs to a SparseConvTranspose; inverting a transposed conv is not "
            "supported by torchsparse_lite"
        )
    if list(ksize) != data.ksize:
        raise ValueError(
            f"{layer}: an inverse conv needs the kernel size of the conv under {key!r}: {data.ksize}, got {list(ksize)}"
        )
    if x.spatial_shape != data.out_spatial_shape or x.indices.shape[0] != data.out_indices.shape[0]:
        raise ValueError(
            f"{layer}: the conv under {key!r} produced {data.out_indices.shape[0]} indices of spatial shape "
            f"{data.out_spatial_shape}; this input has {x.indices.shape[0]} of {x.spatial_shape}"
        )
    builder = resolve("kmap_builder", None)
    kmap = x._cache.get(x._native_coords(), UNIT, data.kmap.geometry.transposed(), builder, key=data.map_key)
    return kmap, data


def pool_features(feats: torch.Tensor, kmap: KernelMap, reduce: str) -> torch.Tensor:
    """spconv's pools over ``kmap``: ``"max"`` = max(0, max of the window's inputs), ``"avg"`` = their mean."""
    c = feats.shape[1]
    gathered = feats.index_select(0, kmap.in_idx)
    if reduce == "max":
        out = feats.new_zeros((kmap.n_out, c))
        return out.scatter_reduce(0, kmap.out_idx[:, None].expand(-1, c), gathered, "amax", include_self=True)
    sums = feats.new_zeros((kmap.n_out, c)).index_add(0, kmap.out_idx, gathered)
    counts = torch.bincount(kmap.out_idx, minlength=kmap.n_out).clamp_(min=1).to(feats.dtype)
    return sums / counts[:, None]
