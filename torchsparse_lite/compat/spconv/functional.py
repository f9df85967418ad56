"""``spconv.pytorch.functional``: the parts user code calls (``sparse_add``).

spconv's low-level pair functions (``indice_conv``, …) are not provided: the
layers build and use the engine's kernel maps themselves.
"""

from __future__ import annotations

import torch

from ...kmap.keys import pack, unpack
from .indices import from_native
from .tensor import SparseConvTensor

__all__ = ["sparse_add", "sparse_add_hash_based"]


def _check_operands(tens: tuple[SparseConvTensor, ...]) -> SparseConvTensor:
    if not tens:
        raise ValueError("sparse_add needs at least one SparseConvTensor")
    first = tens[0]
    for i, t in enumerate(tens):
        if not isinstance(t, SparseConvTensor):
            raise TypeError(f"sparse_add: operand {i} is a {type(t).__name__}, not a SparseConvTensor")
        if t.spatial_shape != first.spatial_shape or t.batch_size != first.batch_size:
            raise ValueError(
                f"sparse_add: operand {i} has spatial_shape {t.spatial_shape} and batch_size {t.batch_size}, "
                f"operand 0 {first.spatial_shape} and {first.batch_size}; they must match"
            )
        if t.features.shape[1] != first.features.shape[1]:
            raise ValueError(
                f"sparse_add: operand {i} has {t.features.shape[1]} channels, operand 0 {first.features.shape[1]}"
            )
    return first


def sparse_add(*tens: SparseConvTensor) -> SparseConvTensor:
    """Sum of sparse tensors whose indices may differ: features added on the union of the indices.

    When the union is exactly the largest operand's index set, the result keeps
    that operand's indices (row order included), ``indice_dict`` and maps, so
    inverse convs still find their keys (spconv keeps the ``indice_dict`` but
    re-sorts the rows). Otherwise the rows are sorted by (batch, a0, a1, a2)
    and the maps are dropped.

    Returns:
        SparseConvTensor with ``[M, C]`` features.
    """
    first = _check_operands(tens)
    keys = [pack(t._native_coords()) for t in tens]
    union, slot = torch.unique(torch.cat(keys), return_inverse=True)
    big = max(range(len(tens)), key=lambda i: tens[i].indices.shape[0])
    base = tens[big] if union.shape[0] == tens[big].indices.shape[0] else None
    if base is not None:  # output row of a union slot = the row of the largest operand holding that key
        start = sum(k.shape[0] for k in keys[:big])
        row_of_slot = torch.empty_like(slot[: union.shape[0]])
        row_of_slot[slot[start : start + keys[big].shape[0]]] = torch.arange(union.shape[0], device=union.device)
        slot = row_of_slot[slot]
    feats = torch.cat([t.features for t in tens])
    feats = feats.new_zeros((union.shape[0], feats.shape[1])).index_add(0, slot, feats)
    if base is not None:
        return base._derive(feats)
    out = SparseConvTensor(feats, from_native(unpack(union), first.ndim), first.spatial_shape, first.batch_size)
    out.benchmark = first.benchmark
    return out


sparse_add_hash_based = sparse_add
