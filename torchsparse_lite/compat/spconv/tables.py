"""``spconv.pytorch.tables``: ``JoinTable``, ``AddTable``, ``AddTableMisaligned``, ``ConcatTable``."""

from __future__ import annotations

import torch

from .functional import sparse_add
from .modules import SparseModule
from .tensor import SparseConvTensor

__all__ = ["AddTable", "AddTableMisaligned", "ConcatTable", "JoinTable"]


def _check_aligned(tensors: list[SparseConvTensor], what: str) -> SparseConvTensor:
    if not tensors or not all(isinstance(t, SparseConvTensor) for t in tensors):
        raise TypeError(f"{what} expects a non-empty list of SparseConvTensors")
    first = tensors[0]
    for i, t in enumerate(tensors):
        if t.indices is not first.indices and not torch.equal(t.indices, first.indices):
            raise ValueError(
                f"{what}: tensor {i}'s indices differ from tensor 0's; it needs the same indices in the same "
                "order (use AddTableMisaligned / functional.sparse_add for misaligned tensors)"
            )
    return first


class JoinTable(SparseModule):
    """Concatenate the features (channels) of tensors on the same indices."""

    def forward(self, input: list[SparseConvTensor]) -> SparseConvTensor:
        first = _check_aligned(input, "JoinTable")
        return first.replace_feature(torch.cat([t.features for t in input], 1))

    def input_spatial_size(self, out_size):
        return out_size


class AddTable(SparseModule):
    """Sum the features of tensors on the same indices."""

    def forward(self, input: list[SparseConvTensor]) -> SparseConvTensor:
        first = _check_aligned(input, "AddTable")
        return first.replace_feature(sum(t.features for t in input))

    def input_spatial_size(self, out_size):
        return out_size


class AddTableMisaligned(SparseModule):
    """Sum tensors whose indices differ (:func:`~.functional.sparse_add`)."""

    def forward(self, input: list[SparseConvTensor]) -> SparseConvTensor:
        return sparse_add(*input)

    def input_spatial_size(self, out_size):
        return out_size


class ConcatTable(SparseModule):
    """Apply every child to the same input; returns the list of outputs."""

    def forward(self, input):
        return [module(input) for module in self._modules.values()]

    def add(self, module):
        self._modules[str(len(self._modules))] = module
        return self

    def input_spatial_size(self, out_size):
        return self._modules["0"].input_spatial_size(out_size)
