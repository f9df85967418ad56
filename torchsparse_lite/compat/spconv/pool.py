"""spconv 2.x's sparse pools on the native engine.

* ``SparseMaxPool*d``: outputs as a strided conv with the same kernel,
  stride (default: the kernel), padding (default 0) and dilation — even with
  stride 1 the output grows, as spconv's pairs do; each output is
  ``max(0, max of its window's active inputs)``: spconv's pools start from 0
  (checked numerically against spconv 2.3.8's CPU build; its CUDA kernels'
  source starts from 0 too).
* ``SparseAvgPool*d``: same outputs; each is the mean of its window's active
  inputs ("real point count instead of kernel size", spconv's CUDA kernel;
  spconv's CPU build cannot run it). The gradient is the true gradient of
  that mean.
* ``SparseGlobalMaxPool`` / ``SparseGlobalAvgPool``: ``[batch_size, C]`` per
  sample (spconv's CPU build cannot run these either).

A pool stores its pairs under ``indice_key`` (an inverse conv can undo it);
an existing key is an error, as in spconv.
"""

from __future__ import annotations

import numpy as np
import torch

from ...kmap.geometry import ConvGeometry
from .convolution import VOXEL_COUNT
from .indices import check_ndim, expand_nd, from_native, pad3
from .modules import SparseModule, check_algo
from .rules import forward_map, pool_features
from .tensor import SparseConvTensor

__all__ = [
    "SparseAvgPool", "SparseAvgPool1d", "SparseAvgPool2d", "SparseAvgPool3d", "SparseGlobalAvgPool",
    "SparseGlobalMaxPool", "SparseMaxPool", "SparseMaxPool1d", "SparseMaxPool2d", "SparseMaxPool3d",
    "SparseMaxPool4d",
]  # fmt: skip


class _Pool(SparseModule):
    REDUCE = "max"

    def __init__(self, ndim, kernel_size=3, stride=1, padding=0, dilation=1, indice_key=None, subm=False,
                 algo=None, record_voxel_count=False, name=None) -> None:  # fmt: skip
        super().__init__(name=name)
        check_ndim(ndim, type(self).__name__)
        if subm:
            raise NotImplementedError(
                "subm=True pooling is not supported by torchsparse_lite (spconv's CPU pairs "
                "ignore it too); use subm=False"
            )
        self.ndim = ndim
        self.kernel_size = expand_nd(ndim, kernel_size, "kernel_size", 1)
        self.stride = list(self.kernel_size) if stride is None else expand_nd(ndim, stride, "stride", 1)
        self.padding = expand_nd(ndim, padding, "padding", 0)
        self.dilation = expand_nd(ndim, dilation, "dilation", 1)
        self.indice_key, self.subm, self.algo = indice_key, False, check_algo(algo)
        self.record_voxel_count = bool(record_voxel_count)
        if self.record_voxel_count:
            self.register_buffer(VOXEL_COUNT, torch.zeros(1, dtype=torch.int32))
        self.geometry = ConvGeometry(pad3(self.kernel_size, 1), pad3(self.stride, 1), pad3(self.dilation, 1),
                                     pad3(self.padding, 0), "conv", "spconv")  # fmt: skip

    def extra_repr(self) -> str:
        s = f"kernel_size={self.kernel_size}, stride={self.stride}"
        if any(self.padding):
            s += f", padding={self.padding}"
        if self.dilation != [1] * self.ndim:
            s += f", dilation={self.dilation}"
        return s

    def get_max_num_voxels(self) -> torch.Tensor | None:
        return getattr(self, VOXEL_COUNT, None)

    def forward(self, input: SparseConvTensor) -> SparseConvTensor:
        name = type(self).__name__
        if not isinstance(input, SparseConvTensor):
            raise TypeError(f"{name} expects a SparseConvTensor, got {type(input).__name__}")
        if input.ndim != self.ndim:
            raise ValueError(f"{name} is {self.ndim}-D but the input tensor is {input.ndim}-D")
        params = {"ksize": self.kernel_size, "stride": self.stride, "padding": self.padding,
                  "dilation": self.dilation, "algo": self.algo}  # fmt: skip
        kmap, shape, indice_dict = forward_map(input, self.geometry, "pool", self.indice_key, params, name)
        voxels = getattr(self, VOXEL_COUNT, None)
        if voxels is not None:
            voxels.clamp_(min=kmap.n_out)
        feats = pool_features(input.features, kmap, self.REDUCE)
        return input._derive(feats, from_native(kmap.out_coords, input.ndim), shape, indice_dict, kmap.out_coords)


class SparseMaxPool(_Pool):
    """spconv's max pool base (``ndim`` first)."""


class SparseAvgPool(_Pool):
    """spconv's average pool base: mean over the window's active inputs."""

    REDUCE = "avg"

    def __init__(self, ndim, kernel_size=3, stride=1, padding=0, dilation=1, indice_key=None, subm=False,
                 algo=None, record_voxel_count=False, name=None) -> None:  # fmt: skip
        super().__init__(ndim, kernel_size, stride, padding, dilation, indice_key, subm, algo, record_voxel_count,
                         name)  # fmt: skip
        if int(np.prod(self.kernel_size)) > 32:
            raise ValueError(f"spconv's avg pool supports kernels of at most 32 taps, got {self.kernel_size}")


class _MaxPoolNd(SparseMaxPool):
    """``(kernel_size, stride=None (= kernel_size), padding=0, dilation=1, indice_key=None, …)`` max pool."""

    NDIM = 3

    def __init__(self, kernel_size, stride=None, padding=0, dilation=1, indice_key=None, algo=None,
                 record_voxel_count=False, name=None) -> None:  # fmt: skip
        super().__init__(self.NDIM, kernel_size, stride, padding, dilation, indice_key=indice_key, algo=algo,
                         record_voxel_count=record_voxel_count, name=name)  # fmt: skip


class _AvgPoolNd(SparseAvgPool):
    """``(kernel_size, stride=None (= kernel_size), padding=0, dilation=1, indice_key=None, …)`` mean pool."""

    NDIM = 3

    def __init__(self, kernel_size, stride=None, padding=0, dilation=1, indice_key=None, algo=None,
                 record_voxel_count=False, name=None) -> None:  # fmt: skip
        super().__init__(self.NDIM, kernel_size, stride, padding, dilation, indice_key=indice_key, algo=algo,
                         record_voxel_count=record_voxel_count, name=name)  # fmt: skip


class SparseMaxPool1d(_MaxPoolNd):
    NDIM = 1


class SparseMaxPool2d(_MaxPoolNd):
    NDIM = 2


class SparseMaxPool3d(_MaxPoolNd):
    NDIM = 3


class SparseMaxPool4d(_MaxPoolNd):
    NDIM = 4


class SparseAvgPool1d(_AvgPoolNd):
    NDIM = 1


class SparseAvgPool2d(_AvgPoolNd):
    NDIM = 2


class SparseAvgPool3d(_AvgPoolNd):
    NDIM = 3


class _GlobalPool(SparseModule):
    MEAN = False

    def forward(self, input: SparseConvTensor) -> torch.Tensor:
        """[batch_size, C]: mean or max over each sample's rows (0 for a sample without rows)."""
        if not isinstance(input, SparseConvTensor):
            raise TypeError(f"{type(self).__name__} expects a SparseConvTensor, got {type(input).__name__}")
        feats, b = input.features, input.indices[:, 0].long()
        n, c = input.batch_size, feats.shape[1]
        counts = torch.bincount(b, minlength=n)
        if self.MEAN:
            sums = feats.new_zeros((n, c)).index_add(0, b, feats)
            return sums / counts.clamp(min=1).to(feats.dtype)[:, None]
        out = feats.new_full((n, c), float("-inf")).scatter_reduce(0, b[:, None].expand(-1, c), feats, "amax")
        return torch.where(counts[:, None] > 0, out, torch.zeros_like(out))


class SparseGlobalMaxPool(_GlobalPool):
    """Per-sample max of the features -> ``[batch_size, C]``."""


class SparseGlobalAvgPool(_GlobalPool):
    """Per-sample mean of the features -> ``[batch_size, C]``."""

    MEAN = True
