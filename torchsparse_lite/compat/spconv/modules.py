"""spconv's container and feature-wise modules: ``SparseModule``, ``SparseSequential`` and friends."""

from __future__ import annotations

import enum
from collections import OrderedDict

import torch
from torch import nn

from .tensor import SparseConvTensor

__all__ = [
    "ConvAlgo",
    "Identity",
    "RemoveGrid",
    "SparseBatchNorm",
    "SparseIdentity",
    "SparseModule",
    "SparseReLU",
    "SparseSequential",
    "SparseSyncBatchNorm",
    "ToDense",
    "assign_name_for_sparse_modules",
    "check_algo",
    "is_spconv_module",
]


class ConvAlgo(enum.Enum):
    """spconv's algorithm choice; accepted by every layer and ignored (one engine serves all)."""

    Native = 0
    MaskImplicitGemm = 1
    MaskSplitImplicitGemm = 2


def check_algo(algo: object) -> object:
    """Accept None, a :class:`ConvAlgo` or spconv's own ``ConvAlgo`` member (by name); raise otherwise."""
    if algo is None or isinstance(algo, ConvAlgo) or getattr(algo, "name", None) in ConvAlgo.__members__:
        return algo
    raise ValueError(f"algo must be None or a ConvAlgo ({', '.join(ConvAlgo.__members__)}), got {algo!r}")


class SparseModule(nn.Module):
    """Base of every module that takes a :class:`SparseConvTensor` inside a :class:`SparseSequential`."""

    def __init__(self, name: str | None = None) -> None:
        super().__init__()
        self.name = name
        self._sparse_unique_name = ""


def _features_of(module: nn.Module, x: SparseConvTensor | torch.Tensor) -> SparseConvTensor | torch.Tensor:
    if isinstance(x, SparseConvTensor):
        return x.replace_feature(module(x.features))
    return module(x)


class SparseBatchNorm(nn.BatchNorm1d):
    """``nn.BatchNorm1d`` on a SparseConvTensor's features (or on a plain tensor)."""

    def forward(self, input):
        if isinstance(input, SparseConvTensor):
            return input.replace_feature(super().forward(input.features))
        return super().forward(input)


class SparseSyncBatchNorm(nn.SyncBatchNorm):
    """``nn.SyncBatchNorm`` on a SparseConvTensor's features (or on a plain tensor)."""

    def forward(self, input):
        if isinstance(input, SparseConvTensor):
            return input.replace_feature(super().forward(input.features))
        return super().forward(input)


class SparseReLU(nn.ReLU):
    """``nn.ReLU`` on a SparseConvTensor's features (or on a plain tensor)."""

    def forward(self, input):
        if isinstance(input, SparseConvTensor):
            return input.replace_feature(super().forward(input.features))
        return super().forward(input)


class SparseIdentity(nn.Identity):
    """Identity on a SparseConvTensor (a new tensor object, as spconv returns) or a plain tensor."""

    def forward(self, input):
        if isinstance(input, SparseConvTensor):
            return input.replace_feature(input.features)
        return input


def is_spconv_module(module: nn.Module) -> bool:
    """True for modules that take the SparseConvTensor itself (not just its features)."""
    return isinstance(module, (SparseModule, SparseBatchNorm, SparseSyncBatchNorm, SparseReLU, SparseIdentity))


class SparseSequential(SparseModule):
    """spconv's sequential container.

    Built from modules, an ``OrderedDict`` of them, or keyword arguments.
    Sparse modules (:func:`is_spconv_module`) receive the SparseConvTensor;
    any other module (``nn.BatchNorm1d``, ``nn.ReLU``, …) is applied to its
    features, and skipped when the tensor has no rows, as spconv does.
    """

    def __init__(self, *args: nn.Module, **kwargs: nn.Module) -> None:
        super().__init__()
        if len(args) == 1 and isinstance(args[0], OrderedDict):
            for key, module in args[0].items():
                self.add_module(key, module)
        else:
            for idx, module in enumerate(args):
                self.add_module(str(idx), module)
        for name, module in kwargs.items():
            if name in self._modules:
                raise ValueError(f"SparseSequential: module name {name!r} exists already")
            self.add_module(name, module)

    def __getitem__(self, idx: int) -> nn.Module:
        if not (-len(self) <= idx < len(self)):
            raise IndexError(f"index {idx} is out of range for a SparseSequential of {len(self)} modules")
        return list(self._modules.values())[idx % len(self)]

    def __len__(self) -> int:
        return len(self._modules)

    def add(self, module: nn.Module, name: str | None = None) -> None:
        if name is None:
            name = str(len(self._modules))
        if name in self._modules:
            raise KeyError(f"SparseSequential: module name {name!r} exists already")
        self.add_module(name, module)

    def forward(self, input):
        for module in self._modules.values():
            if is_spconv_module(module):
                input = module(input)
            elif isinstance(input, SparseConvTensor):
                if input.indices.shape[0] != 0:
                    input = input.replace_feature(module(input.features))
            else:
                input = module(input)
        return input


class Identity(nn.Module):
    """spconv's ``Identity``: returns its input."""

    def forward(self, input):
        return input

    def input_spatial_size(self, out_size):
        return out_size


class ToDense(SparseModule):
    """SparseConvTensor -> dense ``[B, C, *spatial_shape]``."""

    def forward(self, x: SparseConvTensor) -> torch.Tensor:
        if not isinstance(x, SparseConvTensor):
            raise TypeError(f"ToDense expects a SparseConvTensor, got {type(x).__name__}")
        return x.dense()


class RemoveGrid(SparseModule):
    """Drops the tensor's pre-allocated ``grid`` buffer (in place, as spconv does)."""

    def forward(self, x: SparseConvTensor) -> SparseConvTensor:
        x.grid = None
        return x


def assign_name_for_sparse_modules(module: nn.Module) -> None:
    """Set ``_sparse_unique_name`` of every :class:`SparseModule` in ``module`` to its qualified name."""
    for name, child in module.named_modules():
        if isinstance(child, SparseModule):
            child._sparse_unique_name = name
